"""The copilot HTTP API inside this process: no socket, a real SQLite thread store, and a
client that reads the server-sent events of a turn into a list.

For benches and tests that drive whole conversations (open a thread, say something, approve
an order) without starting `wardround api`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from wardround.fhir.client import FhirClient
from wardround.graphs.copilot.audit import AuditLog
from wardround.graphs.copilot.checkpoint import open_checkpointer
from wardround.graphs.copilot.routing import ChartMode
from wardround.settings import Settings

Event = dict[str, Any]


def parse_sse(text: str) -> list[Event]:
    """Events of an SSE body: [{"event": name, "data": parsed JSON}], keep-alives dropped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append({"event": name, "data": json.loads("\n".join(data))})
    return events


def kinds(events: list[Event]) -> list[str]:
    """The event names, in order."""
    return [e["event"] for e in events]


def first(events: list[Event], kind: str) -> dict[str, Any]:
    """The data of the first event named `kind` (StopIteration if none)."""
    return next(e["data"] for e in events if e["event"] == kind)


def _expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url.path}: {response.status_code} {response.text}")
    return response


@dataclass
class ApiHarness:
    """An in-process API and an HTTP client for it; `settings.home` holds its files."""

    client: httpx.AsyncClient
    app: Any
    settings: Settings
    audit: AuditLog

    async def thread(self, patient_id: str, **headers: str) -> str:
        """Open a thread about a patient; returns its id."""
        response = await self.client.post(
            "/api/threads", json={"patient_id": patient_id}, headers=headers
        )
        return str(_expect(response, 201).json()["thread_id"])

    async def say(self, thread_id: str, text: str, **headers: str) -> list[Event]:
        """One clinician message; returns the turn's events."""
        response = await self.client.post(
            f"/api/threads/{thread_id}/messages", json={"content": text}, headers=headers
        )
        return parse_sse(_expect(response, 200).text)

    async def decide(self, thread_id: str, call_id: str, **body: Any) -> httpx.Response:
        """Approve or reject a proposed write (`decision="approve"` and so on)."""
        return await self.client.post(f"/api/threads/{thread_id}/approvals/{call_id}", json=body)


@asynccontextmanager
async def api_harness(
    home: Path,
    fhir: FhirClient | Any,
    model: BaseChatModel,
    *,
    token: str | None = None,
    max_steps: int = 8,
    raise_app_exceptions: bool = True,
    chart: ChartMode | None = None,
) -> AsyncIterator[ApiHarness]:
    """The API app in process over a SQLite thread store in `home`, its lifespan run here.

    `fhir` is the FHIR client the API uses; `token` the bearer token it requires;
    `raise_app_exceptions=False` turns unhandled errors into 500 responses, as a server would;
    `chart` the copilot's chart mode (None: WARDROUND_COPILOT_CHART, else the default).
    """
    from wardround.server.app import create_app

    chosen: dict[str, Any] = {"copilot_chart": chart} if chart else {}
    secret = SecretStr(token) if token is not None else None
    settings = Settings(home=home, api_token=secret, **chosen)
    audit = AuditLog(home / "audit.jsonl")
    async with open_checkpointer(settings) as saver:
        app = create_app(
            settings,
            model=model,
            fhir=fhir,
            checkpointer=saver,
            extra_tools=[],
            audit=audit,
            max_steps=max_steps,
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://copilot.test", timeout=60
            ) as client:
                yield ApiHarness(client, app, settings, audit)
            await asyncio.sleep(0)  # let the transport's last callbacks run before closing
