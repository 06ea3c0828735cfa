"""The API load bench end to end, small: SEKMET as its own process, the API under uvicorn
(one process on SQLite, or two workers sharing a private Postgres), the scripted model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wardround.testing.postgres import postgres_bin

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> dict:
    argv = [sys.executable, "-m", "bench.api_load", "run", "--conversations", "4", "--json", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def check(report: dict, processes: set[str]) -> None:
    everything = report["by_kind"]["all"]
    assert (everything["requests"], everything["errors"]) == (16, 0), report["errors"]
    # Each conversation: the patient read, a search, the order's approval and its write.
    assert report["audit_lines"] == 16
    assert set(report["cpu_ms_per_request"]) == processes
    # Clock ticks are 10 ms: a few requests may round a quiet process down to 0.
    assert report["cpu_ms_per_request"]["api"] > 0
    assert all(ms >= 0 for ms in report["cpu_ms_per_request"].values())
    assert 0 < everything["p50_s"] <= everything["max_s"]


def test_one_api_process_on_sqlite() -> None:
    report = run_bench()
    assert (report["workers"], report["store"]) == (1, "sqlite")
    check(report, {"api", "fhir", "client"})
    assert report["thread_store_mb"] is not None  # the SQLite file was written


@pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed")
def test_two_workers_share_postgres() -> None:
    report = run_bench("--workers", "2")
    assert (report["workers"], report["store"]) == (2, "postgres")
    check(report, {"api", "fhir", "postgres", "client"})
    assert report["thread_store_mb"] is None  # no SQLite file was written


def test_several_workers_on_sqlite_are_refused() -> None:
    argv = [sys.executable, "-m", "bench.api_load", "run", "--workers", "2", "--store", "sqlite"]
    env = {**os.environ, "COLUMNS": "200"}  # the message on one line
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 2
    assert "--store postgres" in done.stderr and "Traceback" not in done.stderr
