"""Bearer-token auth (when a token is configured) and who is asking, for the audit log."""

from __future__ import annotations

import re
import secrets

from fastapi import HTTPException, Request

from wardround.graphs.copilot.audit import ANONYMOUS

USER_HEADER = "X-Wardround-User"
_USER = re.compile(r"[\w .@\-]{1,100}")


async def require_token(request: Request) -> None:
    """401 unless the request carries `Authorization: Bearer <api_token>` (if one is set)."""
    expected: str | None = request.app.state.api_token
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token (send Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def current_user(request: Request) -> str:
    """Who the audit log names: the `X-Wardround-User` header (the API's clients set it to the
    clinician signed in to them), else "token" for an authenticated call, else anonymous."""
    named = request.headers.get(USER_HEADER, "").strip()
    if named:
        if not _USER.fullmatch(named):
            raise HTTPException(
                status_code=400,
                detail=f"{USER_HEADER} may hold letters, digits, spaces and . @ - _ (100 at most)",
            )
        return named
    return "token" if request.app.state.api_token is not None else ANONYMOUS
