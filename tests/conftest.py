"""Fixtures shared by the unit and integration tests: SEKMET in this process with small
synthetic charts loaded (module-scoped: a test file gets its own server), a fresh
WARDROUND_HOME, and recorded FHIR backoff pauses.

Helper modules beside this file (fakes.py, copilot_fakes.py, ...) are imported by their
bare names: pytest puts this folder on sys.path (`pythonpath` in pyproject.toml), and the
tests are not part of the installed package.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from eval_fixtures import EvalFhir
from fhir_fixtures import FhirFixture
from wardround.fhir import client as fhir_client
from wardround.testing.sample_charts import (
    carebundle_charts,
    handmade_chart,
    load_ann_and_bob,
    synthea_chart,
)
from wardround.testing.sekmet_inprocess import asgi_client, load_chart, sekmet_app

# The suite's scripted models call the raw FHIR reads, the copilot's free-loop mode; the
# planner route (the default) is tested by test_copilot_chart.py, which asks for it. Child
# processes (API workers, `langgraph dev`) inherit the setting.
os.environ.setdefault("WARDROUND_COPILOT_CHART", "tools")


@asynccontextmanager
async def _sekmet(folder: Path, charts: dict[str, dict]) -> AsyncIterator[FhirFixture]:
    """SEKMET in-process at `folder` with `charts` loaded; each is loaded from a copy, so
    `bundles` keeps them as given."""
    app = sekmet_app(folder)
    client = asgi_client(app)
    fixture = FhirFixture(app=app, client=client)
    try:
        for label, bundle in charts.items():
            fixture.bundles[label] = bundle
            fixture.patients[label] = await load_chart(client, json.loads(json.dumps(bundle)))
        yield fixture
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
async def fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FhirFixture]:
    """SEKMET in-process with the carebundle charts and the hand-made chart loaded."""
    charts = {**carebundle_charts(), "handmade": handmade_chart()}
    async with _sekmet(tmp_path_factory.mktemp("sekmet"), charts) as fixture:
        yield fixture


@pytest.fixture(scope="module")
async def synthea_fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FhirFixture]:
    """SEKMET in-process with one PySynthea patient (whole-life record) loaded."""
    charts = {"synthea": json.loads(synthea_chart())}
    async with _sekmet(tmp_path_factory.mktemp("sekmet-synthea"), charts) as fixture:
        yield fixture


@pytest.fixture(scope="module")
async def eval_fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EvalFhir]:
    """SEKMET in-process holding Ann's and Bob's charts (known answers)."""
    app = sekmet_app(tmp_path_factory.mktemp("sekmet-evals"))
    client = asgi_client(app)
    ids = await load_ann_and_bob(client)
    yield EvalFhir(app=app, client=client, ids=ids)
    await client.aclose()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh WARDROUND_HOME under `tmp_path` (returned), with no Chroma path set outside it."""
    monkeypatch.setenv("WARDROUND_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WARDROUND_CHROMA_PATH", raising=False)
    return tmp_path


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the FHIR client's backoff pauses instead of waiting them out."""
    recorded: list[float] = []

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(fhir_client.asyncio, "sleep", fake_sleep)
    return recorded
