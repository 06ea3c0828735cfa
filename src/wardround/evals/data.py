"""Public benchmark files: found in a configured folder or downloaded once, always sha256-checked.

The files are third-party (MIT-licensed) and are never copied into this repository. They
are read from `settings.benchmark_data_dir` when set (CI points it at a read-only copy),
otherwise from `settings.cache_dir / "benchmarks"`, where a missing file is downloaded
from its public address. A file whose digest differs from the table below is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from wardround.settings import Settings


@dataclass(frozen=True)
class BenchmarkFile:
    name: str  # relative path under the data dir, e.g. "medagentbench/funcs_v1.json"
    url: str
    sha256: str
    source: str
    license: str


_MAB = "https://raw.githubusercontent.com/stanfordmlgroup/MedAgentBench/main/data/medagentbench"
FILES: dict[str, BenchmarkFile] = {
    f.name: f
    for f in [
        BenchmarkFile(
            "agentclinic/agentclinic_medqa.jsonl",
            "https://raw.githubusercontent.com/SamuelSchmidgall/AgentClinic/main/"
            "agentclinic_medqa.jsonl",
            "d91038a2984f21bb1d43edd88c7958d090ef42ba80f5be487b22b903bf3a35ea",
            "SamuelSchmidgall/AgentClinic @ b6570ed",
            "MIT, (c) 2024 Samuel Schmidgall",
        ),
        BenchmarkFile(
            "medagentbench/test_data_v2.json",
            f"{_MAB}/test_data_v2.json",
            "b6e89b2ef82f1bef27c5778a644a8a66c7b25738bbd6a48d03ab3e5182df6ca8",
            "stanfordmlgroup/MedAgentBench @ 9926011",
            "MIT, (c) 2025 Stanford Machine Learning Group",
        ),
        BenchmarkFile(
            "medagentbench/funcs_v1.json",
            f"{_MAB}/funcs_v1.json",
            "c977266db5eca75182c0d12cac1962b33ae6b5a54b9029ceb104e1a93b4c38c1",
            "stanfordmlgroup/MedAgentBench @ 9926011",
            "MIT, (c) 2025 Stanford Machine Learning Group",
        ),
    ]
}


class BenchmarkDataError(RuntimeError):
    """A benchmark file is missing, unreachable or not the expected bytes."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, spec: BenchmarkFile) -> Path:
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise BenchmarkDataError(
            f"{path} has sha256 {actual}, expected {spec.sha256} ({spec.source}); "
            "delete it or point WARDROUND_BENCHMARK_DATA_DIR at a correct copy"
        )
    return path


def download(spec: BenchmarkFile, dest: Path, *, timeout_s: float = 60.0) -> Path:
    """Fetch to a temporary file, check the digest, then move into place (never half a file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        response = httpx.get(spec.url, timeout=timeout_s, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise BenchmarkDataError(
            f"could not download {spec.name} from {spec.url}: {err}; set "
            "WARDROUND_BENCHMARK_DATA_DIR to a folder holding the file instead"
        ) from err
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(response.content)
        verify(Path(tmp), spec)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def benchmark_path(name: str, settings: Settings, *, allow_download: bool = True) -> Path:
    """The checked local path of a benchmark file (see module docstring for where it looks)."""
    try:
        spec = FILES[name]
    except KeyError:
        raise BenchmarkDataError(
            f"unknown benchmark file {name!r}; known: {sorted(FILES)}"
        ) from None
    if settings.benchmark_data_dir is not None:
        path = Path(settings.benchmark_data_dir) / name
        if not path.is_file():
            raise BenchmarkDataError(f"{path} not found (WARDROUND_BENCHMARK_DATA_DIR)")
        return verify(path, spec)
    path = settings.cache_dir / "benchmarks" / name
    if path.is_file():
        return verify(path, spec)
    if not allow_download:
        raise BenchmarkDataError(f"{name} is not in the cache ({path}) and downloads are off")
    return download(spec, path)


def load_json(name: str, settings: Settings) -> Any:
    return json.loads(benchmark_path(name, settings).read_text(encoding="utf-8"))


def load_jsonl(name: str, settings: Settings) -> list[dict[str, Any]]:
    lines = benchmark_path(name, settings).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
