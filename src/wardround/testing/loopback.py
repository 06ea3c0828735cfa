"""Serve an ASGI app with uvicorn on 127.0.0.1 from a background thread of this process.

For servers that live as long as a block of code: an in-process FHIR server a client must
reach over the network, a fault-injecting proxy, an OpenAI-compatible simulator.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from wardround.runtime.procs import free_port


class LoopbackServer:
    """`with LoopbackServer(app) as server:` serves `app` at `server.url` until the block ends.

    `config` is passed on to `uvicorn.Config` (e.g. `backlog`, `limit_concurrency`).
    """

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        settings = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", **config
        )
        self._server = uvicorn.Server(settings)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the loopback server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
