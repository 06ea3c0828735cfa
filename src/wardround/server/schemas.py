"""Request and response bodies of the HTTP API (they make its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from wardround.graphs.copilot.orders import Decision
from wardround.server.chart import ChartSummary, Trend

FHIR_ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
THREAD_ID_PATTERN = r"^[A-Za-z0-9\-_]{1,64}$"

# A `system|code` (or bare code) token: no whitespace, commas or query syntax.
CODE_TOKEN_PATTERN = r"^[^\s,&?#$\\]{1,300}$"

__all__ = ["ChartSummary", "Decision", "Trend"]


class NewThread(BaseModel):
    patient_id: str = Field(pattern=FHIR_ID_PATTERN, description="The FHIR Patient id")


class ThreadInfo(BaseModel):
    thread_id: str
    patient_id: str
    patient: str = Field(description="The patient's compact line")


class NewMessage(BaseModel):
    content: str = Field(min_length=1, max_length=4000, description="The clinician's message")


class PatientItem(BaseModel):
    id: str
    line: str


class Approval(BaseModel):
    interrupt_id: str
    call_id: str
    tool: str
    resource_type: str
    patient_id: str
    args: dict[str, Any]
    summary: str
    error: str | None = Field(None, description="Why the previous answer to it was refused")


ThreadStatus = Literal["idle", "awaiting_approval", "unfinished"]


class ThreadView(BaseModel):
    thread_id: str
    patient_id: str
    patient: str
    status: ThreadStatus
    messages: list[dict[str, Any]]
    pending: list[Approval]


class RecordView(BaseModel):
    ref: str
    line: str = Field(description="The record as the model reads it")
    resource: dict[str, Any] | None = Field(None, description="The FHIR resource, for FHIR records")
    source: str | None = Field(None, description="For other evidence: the tool that found it")


class EventList(BaseModel):
    """A run's events, when `stream=false` is asked for instead of server-sent events."""

    thread_id: str
    events: list[dict[str, Any]]


SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "token, tool_call, ..., done"},
        "data": {"type": "string", "description": "A JSON object, as text"},
    },
    "required": ["data"],
}

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Server-sent events: token, tool_call, tool_result, approval_required, answer, "
            "error, done (each `data` is a JSON object). With `stream=false`: one JSON object "
            "listing the same events."
        ),
        "content": {
            # One server-sent event (OpenAPI 3.2 reads this per event, as `itemSchema`).
            "text/event-stream": {"schema": SSE_EVENT, "itemSchema": SSE_EVENT},
            "application/json": {"schema": EventList.model_json_schema()},
        },
    }
}
