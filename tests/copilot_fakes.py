"""Test helpers for the copilot and its API: scripted json-protocol replies, a gated model, a
failing FHIR client. The in-process API itself is `wardround.testing.api_inprocess`."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from fakes import ScriptedChatModel
from wardround.fhir.client import FhirClient


def call(tool: str, **args: Any) -> str:
    """A scripted json-protocol reply calling `tool`."""
    return json.dumps({"action": tool, "args": args})


def final(answer: str, citations: list[str] | None = None) -> str:
    """A scripted json-protocol final answer."""
    body: dict[str, Any] = {"action": "final_answer", "answer": answer}
    if citations is not None:
        body["citations"] = citations
    return json.dumps(body)


def hba1c_answer_model(answer: str, citations: list[str], **search: Any) -> ScriptedChatModel:
    """Searches the HbA1c results (`search`: further arguments), then answers; streamed in
    4-character chunks so token events can be counted."""
    return ScriptedChatModel(
        chunk_chars=4,
        replies=[
            call("search_records", resource_type="Observation", code="4548-4", **search),
            final(answer, citations),
        ],
    )


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
