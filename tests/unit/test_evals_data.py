"""Benchmark files: read from the configured folder or the cache, always sha256-checked."""

from __future__ import annotations

import hashlib
import shutil

import httpx
import pytest

from eval_fixtures import BENCHMARK_DATA
from wardround.evals import data
from wardround.settings import Settings

SHARED = BENCHMARK_DATA


def test_files_in_the_data_dir_match_their_digests(tmp_path):
    settings = Settings(home=tmp_path, benchmark_data_dir=SHARED)
    for name in data.FILES:
        assert data.benchmark_path(name, settings).is_file()
    assert len(data.load_jsonl("agentclinic/agentclinic_medqa.jsonl", settings)) == 107
    assert len(data.load_json("medagentbench/test_data_v2.json", settings)) == 300
    assert len(data.load_json("medagentbench/funcs_v1.json", settings)) == 9


def test_a_modified_file_is_refused(tmp_path):
    folder = tmp_path / "data" / "medagentbench"
    folder.mkdir(parents=True)
    (folder / "funcs_v1.json").write_text("[]")
    settings = Settings(home=tmp_path, benchmark_data_dir=tmp_path / "data")
    with pytest.raises(data.BenchmarkDataError, match="sha256"):
        data.benchmark_path("medagentbench/funcs_v1.json", settings)
    with pytest.raises(data.BenchmarkDataError, match="not found"):
        data.benchmark_path("medagentbench/test_data_v2.json", settings)
    with pytest.raises(data.BenchmarkDataError, match="unknown"):
        data.benchmark_path("nope.json", settings)


def test_download_to_cache_checks_the_digest(tmp_path, monkeypatch):
    name = "medagentbench/funcs_v1.json"
    good = b'[{"name": "x"}]'
    spec = data.BenchmarkFile(
        name, "https://example.invalid/f.json", hashlib.sha256(good).hexdigest(), "test", "test"
    )
    monkeypatch.setitem(data.FILES, name, spec)
    served: list[bytes] = [b"tampered", good]

    def fake_get(url: str, **kwargs: object) -> httpx.Response:
        return httpx.Response(200, content=served.pop(0), request=httpx.Request("GET", url))

    monkeypatch.setattr(data.httpx, "get", fake_get)
    settings = Settings(home=tmp_path, benchmark_data_dir=None)
    with pytest.raises(data.BenchmarkDataError, match="sha256"):
        data.benchmark_path(name, settings)
    cached = settings.cache_dir / "benchmarks" / name
    assert not cached.exists() and not list(cached.parent.glob(".*"))  # no half file left
    assert data.benchmark_path(name, settings).read_bytes() == good
    assert data.benchmark_path(name, settings, allow_download=False) == cached  # from cache now


def test_cache_copy_is_verified_each_time(tmp_path):
    settings = Settings(home=tmp_path, benchmark_data_dir=None)
    name = "medagentbench/funcs_v1.json"
    cached = settings.cache_dir / "benchmarks" / name
    cached.parent.mkdir(parents=True)
    shutil.copy(SHARED / name, cached)
    assert data.benchmark_path(name, settings, allow_download=False) == cached
    cached.write_bytes(cached.read_bytes() + b" ")
    with pytest.raises(data.BenchmarkDataError):
        data.benchmark_path(name, settings, allow_download=False)


def test_unreachable_download_says_what_to_do(tmp_path, monkeypatch):
    def refuse(url: str, **kwargs: object) -> httpx.Response:
        raise httpx.ConnectError("no route", request=httpx.Request("GET", url))

    monkeypatch.setattr(data.httpx, "get", refuse)
    with pytest.raises(data.BenchmarkDataError, match="WARDROUND_BENCHMARK_DATA_DIR"):
        data.benchmark_path(
            "agentclinic/agentclinic_medqa.jsonl", Settings(home=tmp_path, benchmark_data_dir=None)
        )
