"""Test helpers for the copilot and its API: scripted replies, a streaming and a gated model,
an in-process API client, and a server-sent-event parser."""

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
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from wardround.graphs.copilot.audit import AuditLog
from wardround.graphs.copilot.checkpoint import open_checkpointer
from wardround.settings import Settings
from wardround.tests.fakes import ScriptedChatModel
from wardround.tools.fhir.client import FhirClient


def call(tool: str, **args: Any) -> str:
    """A scripted json-protocol reply calling `tool`."""
    return json.dumps({"action": tool, "args": args})


def final(answer: str, citations: list[str] | None = None) -> str:
    """A scripted json-protocol final answer."""
    body: dict[str, Any] = {"action": "final_answer", "answer": answer}
    if citations is not None:
        body["citations"] = citations
    return json.dumps(body)


HBA1C_ORDER = {
    "code": "4548-4",
    "system": "http://loinc.org",
    "display": "Hemoglobin A1c",
    "priority": "routine",
    "reason": "diabetes follow-up",
}


class GatedModel(ScriptedChatModel):
    """Waits for `gate` before each reply, so a test can hold a run in the middle."""

    gate: Any = None  # asyncio.Event
    entered: Any = None  # asyncio.Event, set when a reply is being waited for

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        self.entered.set()
        await self.gate.wait()
        return self._generate(messages, *args, **kwargs)


class FailingFhir:
    """A FHIR client whose every call raises the given exception (for error-path tests)."""

    def __init__(self, real: FhirClient, error: Exception) -> None:
        self._real = real
        self._error = error

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        async def fail(*_: Any, **__: Any) -> Any:
            raise self._error

        return fail


def parse_sse(text: str) -> list[dict[str, Any]]:
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


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def first(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(e["data"] for e in events if e["event"] == kind)


@dataclass
class ApiHarness:
    client: httpx.AsyncClient
    app: Any
    settings: Settings
    audit: AuditLog

    async def thread(self, patient_id: str, **headers: str) -> str:
        response = await self.client.post(
            "/api/threads", json={"patient_id": patient_id}, headers=headers
        )
        assert response.status_code == 201, response.text
        return str(response.json()["thread_id"])

    async def say(self, thread_id: str, text: str, **headers: str) -> list[dict[str, Any]]:
        response = await self.client.post(
            f"/api/threads/{thread_id}/messages", json={"content": text}, headers=headers
        )
        assert response.status_code == 200, response.text
        return parse_sse(response.text)

    async def decide(self, thread_id: str, call_id: str, **body: Any) -> httpx.Response:
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
) -> AsyncIterator[ApiHarness]:
    """The API app in process (lifespan run by hand), over a real SQLite thread store."""
    from wardround.server.app import create_app

    settings = Settings(home=home, api_token=token)  # type: ignore[call-arg]
    if token is not None and getattr(settings, "api_token", None) is None:
        object.__setattr__(settings, "api_token", token)  # before Settings has the field
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
            await asyncio.sleep(0)
