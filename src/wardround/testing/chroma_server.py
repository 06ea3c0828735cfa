"""A Chroma server (`chroma run`, the binary in the chromadb package) on a free loopback port,
for trying the indexes' server mode (WARDROUND_CHROMA_URL) without a deployment."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from wardround.runtime.procs import free_port, stop_child


def _wait_for_heartbeat(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited: {log.read_text()[-2000:]}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("chroma run did not answer in 60 s")
        time.sleep(0.2)


@contextmanager
def chroma_server(folder: Path) -> Iterator[str]:
    """Start `chroma run` with its data in `folder/data` and its log in `folder/chroma.log`;
    yield its URL; stop it (by its own pid) when the block ends."""
    chroma = Path(sys.executable).parent / "chroma"
    port = free_port()
    argv = [str(chroma), "run", "--path", str(folder / "data"), "--host", "127.0.0.1"]
    log = folder / "chroma.log"
    folder.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen([*argv, "--port", str(port)], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_heartbeat(process, url, log)
        yield url
    finally:
        stop_child(process)
