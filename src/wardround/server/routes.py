"""The API's endpoints under /api: patients, threads, messages, approvals, records."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from wardround.server.auth import current_user, require_token
from wardround.server.schemas import (
    CODE_TOKEN_PATTERN,
    FHIR_ID_PATTERN,
    SSE_RESPONSE,
    THREAD_ID_PATTERN,
    Approval,
    ChartSummary,
    Decision,
    NewMessage,
    NewThread,
    PatientItem,
    RecordView,
    ThreadInfo,
    ThreadView,
    Trend,
)
from wardround.server.service import CopilotService, events_of, message_json

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

User = Annotated[str, Depends(current_user)]
ThreadId = Annotated[str, Path(pattern=THREAD_ID_PATTERN, description="A thread id")]
PatientId = Annotated[str, Path(pattern=FHIR_ID_PATTERN, description="A FHIR Patient id")]
ResourceType = Annotated[str, Path(pattern=r"^[A-Z][A-Za-z]{1,63}$")]
ResourceId = Annotated[str, Path(pattern=FHIR_ID_PATTERN)]
Stream = Annotated[
    bool, Query(description="Server-sent events (default), or one JSON object at the end")
]


async def service(request: Request) -> CopilotService:
    # Dependencies are async so FastAPI runs them in the event loop, not a worker thread.
    return request.app.state.copilot


Service = Annotated[CopilotService, Depends(service)]


async def respond(thread_id: str, queue: asyncio.Queue, stream: bool) -> Any:
    if stream:

        async def sse() -> Any:
            async for item in events_of(queue):
                yield {"event": item["event"], "data": json.dumps(item["data"])}

        return EventSourceResponse(sse(), ping=15)
    return JSONResponse({"thread_id": thread_id, "events": [e async for e in events_of(queue)]})


@router.get("/patients", response_model=list[PatientItem], summary="Patients on the FHIR server")
async def list_patients(
    copilot: Service,
    user: User,
    name: Annotated[str | None, Query(max_length=100, description="Part of a name")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[PatientItem]:
    return [PatientItem(**p) for p in await copilot.patients(name, limit, user)]


@router.post("/threads", status_code=201, response_model=ThreadInfo, summary="Start a conversation")
async def create_thread(body: NewThread, copilot: Service, user: User) -> ThreadInfo:
    return ThreadInfo(**await copilot.create_thread(body.patient_id, user))


@router.get("/threads/{thread_id}", response_model=ThreadView, summary="A thread and its history")
async def get_thread(thread_id: ThreadId, copilot: Service, user: User) -> ThreadView:
    state = await copilot.snapshot(thread_id, user)
    values = state.values
    return ThreadView(
        thread_id=thread_id,
        patient_id=values["patient_id"],
        patient=values.get("patient", ""),
        status=copilot.status(state),
        messages=[message_json(m) for m in values.get("messages", [])],
        pending=[Approval(**p) for p in copilot.pending(state)],
    )


@router.post(
    "/threads/{thread_id}/messages",
    summary="Send a message; the reply streams back",
    responses=SSE_RESPONSE,
    response_model=None,
)
async def post_message(
    thread_id: ThreadId, body: NewMessage, copilot: Service, user: User, stream: Stream = True
) -> Any:
    queue = await copilot.post_message(thread_id, body.content, user)
    return await respond(thread_id, queue, stream)


@router.get(
    "/threads/{thread_id}/approvals",
    response_model=list[Approval],
    summary="Orders waiting for a decision",
)
async def list_approvals(thread_id: ThreadId, copilot: Service, user: User) -> list[Approval]:
    state = await copilot.snapshot(thread_id, user)
    return [Approval(**p) for p in copilot.pending(state)]


@router.get(
    "/threads/{thread_id}/approvals/{call_id}/resource",
    summary="The FHIR resource a pending order would write (timestamps set when written)",
)
async def approval_resource(
    thread_id: ThreadId,
    call_id: Annotated[str, Path(max_length=128, description="The order's call_id")],
    copilot: Service,
    user: User,
) -> dict[str, Any]:
    return await copilot.order_preview(thread_id, call_id, user)


@router.post(
    "/threads/{thread_id}/approvals/{call_id}",
    summary="Approve, edit or reject a proposed order; the rest of the run streams back",
    responses=SSE_RESPONSE,
    response_model=None,
)
async def decide(
    thread_id: ThreadId,
    call_id: Annotated[str, Path(max_length=128, description="The order's call_id")],
    body: Decision,
    copilot: Service,
    user: User,
    stream: Stream = True,
) -> Any:
    queue = await copilot.decide(thread_id, call_id, body, user)
    return await respond(thread_id, queue, stream)


@router.post(
    "/threads/{thread_id}/resume",
    summary="Finish a run that stopped part-way (server restart, model error)",
    responses=SSE_RESPONSE,
    response_model=None,
)
async def resume(thread_id: ThreadId, copilot: Service, user: User, stream: Stream = True) -> Any:
    queue = await copilot.resume(thread_id, user)
    return await respond(thread_id, queue, stream)


@router.post(
    "/threads/{thread_id}/stop",
    summary="Stop the answer being written (not a run writing an approved order)",
)
async def stop(thread_id: ThreadId, copilot: Service, user: User) -> dict[str, str]:
    return await copilot.stop(thread_id, user)


@router.get(
    "/threads/{thread_id}/records/{resource_type}/{resource_id}",
    response_model=RecordView,
    summary="One record of the thread's patient (what a citation points at)",
)
async def get_record(
    thread_id: ThreadId,
    resource_type: ResourceType,
    resource_id: ResourceId,
    copilot: Service,
    user: User,
) -> RecordView:
    return RecordView(**await copilot.record(thread_id, f"{resource_type}/{resource_id}", user))


@router.get(
    "/threads/{thread_id}/evidence",
    response_model=RecordView,
    summary="A guideline passage or image the thread retrieved (non-FHIR citations)",
)
async def get_evidence(
    thread_id: ThreadId,
    ref: Annotated[str, Query(min_length=3, max_length=300, pattern=r"^(guideline|image):")],
    copilot: Service,
    user: User,
) -> RecordView:
    return RecordView(**await copilot.evidence(thread_id, ref, user))


@router.get(
    "/patients/{patient_id}/chart",
    response_model=ChartSummary,
    summary="The chart at a glance: header, problems, medications, allergies, vitals, labs",
)
async def get_chart(patient_id: PatientId, copilot: Service, user: User) -> ChartSummary:
    return await copilot.chart(patient_id, user)


@router.get(
    "/patients/{patient_id}/trend",
    response_model=Trend,
    summary="Every result of one Observation code, oldest first, as plottable series",
)
async def get_trend(
    patient_id: PatientId,
    copilot: Service,
    user: User,
    code: Annotated[
        str,
        Query(pattern=CODE_TOKEN_PATTERN, description="system|code, e.g. http://loinc.org|4548-4"),
    ],
) -> Trend:
    return await copilot.trend(patient_id, code, user)


@router.get(
    "/patients/{patient_id}/records/{resource_type}/{resource_id}",
    response_model=RecordView,
    summary="One record of a patient (what a chart item points at)",
)
async def get_patient_record(
    patient_id: PatientId,
    resource_type: ResourceType,
    resource_id: ResourceId,
    copilot: Service,
    user: User,
) -> RecordView:
    reference = f"{resource_type}/{resource_id}"
    return RecordView(**await copilot.patient_record(patient_id, reference, user))
