"""What the browser tests share: Debian's Chromium under Playwright, an app served by uvicorn
in a thread, and screenshots kept where a reviewer finds them."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from wardround.runtime.procs import free_port

CHROMIUM = "/usr/bin/chromium"
# Playwright's launch() gives each browser a fresh temporary --user-data-dir itself (it
# refuses one in `args`).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
WIDE = {"width": 1280, "height": 800}
REVIEW_COPY = Path("/tmp/wardround-shots")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API), closed on exit."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Run `app` (with its lifespan) under uvicorn on a loopback port, in a thread."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def artifacts_dir(test: str) -> Path:
    """`$WARDROUND_ARTIFACTS/<test>` (default under /tmp), made if missing."""
    folder = Path(os.environ.get("WARDROUND_ARTIFACTS", "/tmp/wardround-artifacts")) / test
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: Any, test: str, name: str) -> Path:
    """A PNG of the page in the test's artifacts folder, copied to REVIEW_COPY."""
    path = artifacts_dir(test) / f"{name}.png"
    page.screenshot(path=str(path))
    REVIEW_COPY.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, REVIEW_COPY / path.name)
    return path
