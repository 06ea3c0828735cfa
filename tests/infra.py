"""Real infrastructure for the team-deployment tests: SEKMET on a
loopback port with small charts, the load bench's API under uvicorn (`stack/api_process.py`), and a
server-sent-event client that records which worker answered. (A Chroma server is
`wardround.testing.chroma_server`, a Postgres cluster `wardround.testing.postgres`.)

Everything here is started by the test and stopped by pid at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wardround.runtime.procs import free_port
from wardround.testing.api_inprocess import parse_sse
from wardround.testing.api_process import WORKER_HEADER, ApiProcess
from wardround.testing.api_process import running_api as stack_running_api
from wardround.testing.chat_simulator import message_text
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sample_charts import carebundle_charts
from wardround.testing.sekmet_inprocess import asgi_client, load_chart, sekmet_app

ORDER_TEXT = "Please order an HbA1c."


# ------------------------------------------------------------------ API processes

# The load bench's API: settings from the environment, its scripted model (replies follow
# from the conversation, so any worker can take any request), the worker in a header.
WORKER_APP = "bench.api_load:bench_app"


@contextmanager
def running_api(home: Path, env: dict[str, str], *, workers: int = 1) -> Iterator[ApiProcess]:
    with stack_running_api(WORKER_APP, home, env, workers=workers) as api:
        yield api


# ------------------------------------------------------------------ clients


@dataclass
class Reply:
    status: int
    worker: str
    events: list[dict[str, Any]] = field(default_factory=list)
    body: Any = None

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def first(self, kind: str) -> dict[str, Any]:
        return next(e["data"] for e in self.events if e["event"] == kind)


@asynccontextmanager
async def fresh_connections(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that opens a new TCP connection per request, as requests through a load
    balancer would arrive: each may be accepted by any worker."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        yield client


async def call(client: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> Reply:
    """POST (with a body) or GET; SSE bodies are parsed into events."""
    if body is None:
        response = await client.get(path)
    else:
        response = await client.post(path, json=body)
    reply = Reply(response.status_code, response.headers.get(WORKER_HEADER, ""))
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        reply.events = parse_sse(response.text)
    else:
        with suppress(json.JSONDecodeError):
            reply.body = response.json()
    return reply


async def wait_until(check: Any, timeout: float = 20.0) -> Any:
    """Poll an async `check()` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------ FHIR


@dataclass
class LoopbackFhir:
    url: str  # the FHIR base URL, http://127.0.0.1:PORT/fhir
    patients: list[str]

    async def orders(self, patient_id: str) -> list[dict[str, Any]]:
        """ServiceRequests the copilot wrote for a patient (read back from the server)."""
        from wardround.fhir.client import FhirClient
        from wardround.graphs.copilot.orders import ORDER_SYSTEM

        client = FhirClient(self.url)
        try:
            found = await client.search("ServiceRequest", [("patient", patient_id)], limit=100)
        finally:
            await client.aclose()
        return [
            r
            for r in found
            if any(i.get("system") == ORDER_SYSTEM for i in r.get("identifier") or [])
        ]


@asynccontextmanager
async def sekmet_on_loopback(folder: Path) -> AsyncIterator[LoopbackFhir]:
    """SEKMET with the carebundle charts, served on a free loopback port in this process."""
    port = free_port()
    app = sekmet_app(folder, base_url=f"http://127.0.0.1:{port}/fhir")
    client = asgi_client(app)
    ids = [await load_chart(client, chart) for chart in carebundle_charts().values()]
    await client.aclose()
    with LoopbackServer(app, port=port) as server:
        yield LoopbackFhir(f"{server.url}/fhir", ids)


# ------------------------------------------------------------------ model server


def scripted_reply(messages: list[dict[str, Any]]) -> str:
    """Replies of an OpenAI-compatible stand-in (`wardround.testing.chat_simulator`) that follow from the
    conversation: the EHR QA planner's plan (the patient's age, which code computes),
    and the copilot's turns as the load bench's model makes them."""
    from langchain_core.messages import HumanMessage

    from bench.api_load import bench_reply

    last = message_text(messages[-1].get("content")) if messages else ""
    if last.startswith("Options:"):
        options = [line[2:] for line in last.splitlines() if line.startswith("- ")]
        return json.dumps({"kind": "age", "about": options[0]})
    return bench_reply([HumanMessage(last)])
