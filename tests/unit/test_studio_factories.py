"""The graph factories LangGraph's server calls (langgraph.json) never block its event loop.

`langgraph dev` raises on blocking calls made on the loop (blockbuster); building the parts
reads settings and index folders and may start the embedded model server. The factories
build in a worker thread; the same build done on the loop trips the detector.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wardround.graphs import studio

blockbuster = pytest.importorskip("blockbuster")


@pytest.fixture
def explicit_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDROUND_HOME", str(tmp_path))
    monkeypatch.setenv("WARDROUND_MODEL_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("WARDROUND_MODEL_NAME", "stand-in")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(studio, "_BUILT", {})


async def test_building_on_the_loop_is_caught(explicit_model: None) -> None:
    with blockbuster.blockbuster_ctx(), pytest.raises(blockbuster.BlockingError):
        studio._parts()


async def test_copilot_factory_builds_off_the_loop(explicit_model: None) -> None:
    with blockbuster.blockbuster_ctx():
        graph = await studio.make_copilot()
        again = await studio.make_copilot()
    assert again is graph  # built once per process
    assert {"agent", "review", "act", "finish"} <= set(graph.get_graph().nodes)
