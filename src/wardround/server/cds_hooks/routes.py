"""The CDS Hooks HTTP endpoints: discovery, one POST per service, feedback.

Every call is authenticated with the CDS Client's JWT (security.py) whose `aud` must be the
URL called, built from `cds_base_url` when set (a service behind a proxy), else from the
request itself.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from wardround.server.cds_hooks.feedback import record_feedback
from wardround.server.cds_hooks.models import FeedbackRequest, HookRequest, dump
from wardround.server.cds_hooks.security import CdsAuthError, ClientVerifier
from wardround.server.cds_hooks.services import CdsHooks, HookRefused

__all__ = ["cds_router"]

ServiceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


def _base(request: Request) -> str:
    configured = request.app.state.cds_base_url
    return (configured or str(request.base_url)).rstrip("/")


def _audiences(request: Request) -> list[str]:
    """The `aud` values accepted: the URL called; for feedback, also its service's URL."""
    path = request.url.path.rstrip("/")
    start = path.find("/cds-services")
    called = _base(request) + path[start:]
    return [called, called.removesuffix("/feedback")] if called.endswith("/feedback") else [called]


async def cds_client(request: Request) -> str:
    """The verified CDS Client (its `iss`), or a 401 that says what was wrong."""
    verifier: ClientVerifier | None = request.app.state.cds_verifier
    if verifier is None:
        return "unauthenticated"  # cds_require_jwt is off: local development only
    try:
        claims = await verifier.verify(request.headers.get("authorization"), _audiences(request))
    except CdsAuthError as exc:
        raise HTTPException(
            status_code=401,
            detail=f"CDS client not authenticated: {exc}",
            headers={
                "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc}"'
            },
        ) from None
    return str(claims["iss"])


def _hooks(request: Request) -> CdsHooks:
    return request.app.state.cds_hooks


Client = Annotated[str, Depends(cds_client)]
Hooks = Annotated[CdsHooks, Depends(_hooks)]


def cds_router() -> APIRouter:
    """The CDS Hooks routes; `install_cds_hooks` puts what they read on `app.state`."""
    router = APIRouter(prefix="/cds-services", tags=["cds-hooks"])

    @router.get("", summary="CDS Hooks discovery")
    async def discovery(hooks: Hooks, client: Client) -> dict[str, Any]:
        hooks.start_warming()
        return dump(hooks.discovery())

    @router.post("/{service_id}", summary="Call a CDS service (answers cards)")
    async def call(
        service_id: ServiceId, body: HookRequest, request: Request, hooks: Hooks, client: Client
    ) -> dict[str, Any]:
        try:
            return dump(await hooks.answer(service_id, body, client, _base(request)))
        except HookRefused as exc:
            raise HTTPException(status_code=exc.status, detail=exc.message) from None

    @router.post("/{service_id}/feedback", summary="Card outcomes, recorded in the audit log")
    async def feedback(
        service_id: ServiceId, body: FeedbackRequest, hooks: Hooks, client: Client
    ) -> dict[str, Any]:
        if service_id not in {s.id for s in hooks.discovery().services}:
            raise HTTPException(status_code=404, detail=f"no CDS service {service_id!r}")
        return {"recorded": record_feedback(hooks.audit, hooks.issued, service_id, body, client)}

    return router
