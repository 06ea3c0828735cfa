"""Chunked GGUF wheels: joined in part order, checked against the pinned sha256, refused otherwise."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from wardround.agents.embedded import server_argv
from wardround.agents.gguf import CHUNKED, ChunkedGguf, ModelFileError, assemble, chunk_files
from wardround.agents.models import make_chat_model
from wardround.agents.presets import PRESETS
from wardround.settings import DEFAULT_MODEL, Settings


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Three importable packages `wrchunk_part1..3`, each holding data/partNN.bin."""
    chunks = [b"GGUF" + bytes(range(50)), b"middle" * 9, b"tail"]
    for n, data in enumerate(chunks, start=1):
        folder = tmp_path / f"wrchunk_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"part{n:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path))
    for n in range(1, 4):
        sys.modules.pop(f"wrchunk_part{n}", None)
    return chunks


def source(sha: str, parts: int = 3) -> ChunkedGguf:
    return ChunkedGguf("wrchunk-part", parts, "1.0", 0, sha, "test-extra")


def test_parts_join_in_order_when_the_hash_matches(parts: list[bytes], tmp_path: Path) -> None:
    joined = b"".join(parts)
    out = assemble(source(hashlib.sha256(joined).hexdigest()), tmp_path / "m" / "model.gguf")
    assert out.read_bytes() == joined
    assert [p.name for p in chunk_files(source("x"))] == ["part01.bin", "part02.bin", "part03.bin"]


def test_a_different_file_is_refused_and_not_left_behind(
    parts: list[bytes], tmp_path: Path
) -> None:
    target = tmp_path / "model.gguf"
    with pytest.raises(ModelFileError, match="refusing"):
        assemble(source("0" * 64), target)
    assert not target.exists() and not target.with_suffix(".partial").exists()


def test_a_missing_part_names_the_pip_command(parts: list[bytes]) -> None:
    with pytest.raises(
        ModelFileError, match=r"wrchunk-part4 is not installed.*wardround\[test-extra\]"
    ):
        chunk_files(source("x", parts=4))


def test_pinned_sources_match_the_published_files() -> None:
    big = CHUNKED["qwen2.5-coder-1.5b"]
    assert (big.parts, big.size) == (22, 1_117_320_768)
    assert big.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    small = CHUNKED["qwen2.5-coder-0.5b"]
    assert (small.parts, small.size) == (6, 491_400_064)


def test_base_url_is_honoured_for_an_embedded_preset(tmp_path: Path) -> None:
    """A user's own server for the preset: no embedded server starts, the URL is used."""
    url = "http://127.0.0.1:9/v1"
    model = make_chat_model(Settings(home=tmp_path, model="qwen2.5-coder-1.5b", model_base_url=url))
    assert model.openai_api_base == url  # type: ignore[attr-defined]
    assert model.metadata and model.metadata["dialect"] == "llamacpp"
    assert not (tmp_path / "run" / "model.json").exists()


def test_streams_wait_as_long_as_requests(tmp_path: Path) -> None:
    """A long prompt's first streamed chunk comes after the whole prompt is read."""
    settings = Settings(
        home=tmp_path, model_base_url="http://127.0.0.1:9/v1", request_timeout_s=777
    )
    model = make_chat_model(settings)
    assert model.stream_chunk_timeout == 777  # type: ignore[attr-defined]


def test_the_model_factory_starts_nothing(tmp_path: Path) -> None:
    """An embedded preset without its server: a clear error naming the remedy, no process,
    no 1 GB join (ensure_model_server, called by the entry points, does that)."""
    from wardround.agents.protocol import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="stack up"):
        make_chat_model(Settings(home=tmp_path, model="qwen2.5-coder-1.5b"))
    assert not (tmp_path / "run" / "model.json").exists()
    assert not list(tmp_path.rglob("*.gguf"))


def test_the_server_keeps_prompt_states_only_when_asked(tmp_path: Path) -> None:
    preset = PRESETS[DEFAULT_MODEL]
    cached = server_argv(preset, tmp_path / "m.gguf", 9000, 4096, 2, cache_mib=64)
    at = cached.index("--cache")
    assert cached[at + 1] == "true" and cached[cached.index("--cache_size") + 1] == str(64 << 20)
    assert "--cache" not in server_argv(preset, tmp_path / "m.gguf", 9000, 4096, 2, cache_mib=0)
