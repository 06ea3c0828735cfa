"""The API as uvicorn runs it in production, for tests and benches: a child process (one, or a
master and its workers) on a free loopback port, started from an app factory and stopped by
its pid.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from wardround.runtime.procs import free_port, stop_child

# Response header naming the worker process that answered (set by the factory's app), so a
# caller can tell requests to several workers apart.
WORKER_HEADER = "X-Wardround-Worker"


@dataclass
class ApiProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        stop_child(self.process, timeout_s=30)


def start_api(factory: str, home: Path, env: dict[str, str], *, workers: int = 1) -> ApiProcess:
    """`uvicorn --factory <factory>` on a free port with WARDROUND_HOME=`home` and `env`;
    returns once every worker has answered the health check (or 30 s after the first did)."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--log-level", "warning"]  # fmt: skip
    log = home / f"api-{port}.log"
    full_env = {**os.environ, "WARDROUND_HOME": str(home), **env}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_import_root(factory), full_env.get("PYTHONPATH")) if p
    )
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=full_env, cwd=home, stdout=out, stderr=out)
    api = ApiProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_for_workers(api, workers)
    except BaseException:
        api.stop()
        raise
    return api


def _import_root(factory: str) -> str:
    """The folder the factory's top-level package is imported from here, so the child imports
    it the same way (`bench.api_load` lives beside the installed package, not inside it)."""
    spec = importlib.util.find_spec(factory.split(".", 1)[0])
    locations = spec.submodule_search_locations if spec else None
    return str(Path(next(iter(locations))).parent) if locations else ""


def _wait_for_workers(api: ApiProcess, workers: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise RuntimeError(f"the API exited: {api.log.read_text()[-2000:]}")
        with suppress(httpx.HTTPError):
            # A fresh connection each time, so each worker gets asked eventually.
            response = httpx.get(f"{api.url}/api/health", timeout=2)
            if response.json().get("status") == "ok":
                seen.add(response.headers.get(WORKER_HEADER, ""))
                if len(seen) >= workers or time.monotonic() > deadline - 60:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"the API did not come up: {api.log.read_text()[-2000:]}")


@contextmanager
def running_api(
    factory: str, home: Path, env: dict[str, str], *, workers: int = 1
) -> Iterator[ApiProcess]:
    api = start_api(factory, home, env, workers=workers)
    try:
        yield api
    finally:
        api.stop()
