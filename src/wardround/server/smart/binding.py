"""The launched patient binds the session: the API refuses every other patient.

`bind_to_launched_patient` is a FastAPI dependency for the /api router (server/app.py
installs it when SMART is configured). It finds the patient a request is about (a
`patient_id` in the path or the body, or the patient of the thread in the path) and answers
401 without a SMART session, 403 for another patient, and 403 for the patient list (a
launched session has one patient, not a list to choose from).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from wardround.server.smart.sessions import COOKIE, SmartSession

__all__ = ["bind_to_launched_patient", "launched_session"]


async def launched_session(request: Request) -> SmartSession:
    session = request.app.state.smart.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise HTTPException(401, "no SMART session: open the copilot from the EHR (SMART launch)")
    return session


async def _body_patient(request: Request) -> str | None:
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    try:
        body = json.loads(await request.body() or b"null")  # Starlette keeps the body for FastAPI
    except ValueError:
        return None
    found = body.get("patient_id") if isinstance(body, dict) else None
    return str(found) if found is not None else None


async def _thread_patient(request: Request, thread_id: str, user: str) -> str | None:
    copilot: Any = getattr(request.app.state, "copilot", None)
    if copilot is None:
        return None
    try:
        state = await copilot.snapshot(thread_id, user)
    except Exception:  # an unknown thread is the route's 404 to give
        return None
    return state.values.get("patient_id")


async def bind_to_launched_patient(
    request: Request, session: Annotated[SmartSession, Depends(launched_session)]
) -> SmartSession:
    if request.url.path.rstrip("/") == "/api/patients":
        raise HTTPException(403, f"this session is bound to Patient/{session.patient}")
    asked = [request.path_params.get("patient_id"), await _body_patient(request)]
    thread_id = request.path_params.get("thread_id")
    if thread_id:
        asked.append(await _thread_patient(request, thread_id, session.fhir_user or "smart-user"))
    for patient in asked:
        if patient is not None and patient != session.patient:
            raise HTTPException(
                403, f"this session is bound to Patient/{session.patient}, not Patient/{patient}"
            )
    return session
