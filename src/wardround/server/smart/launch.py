"""SMART App Launch (authorization code with PKCE) for the copilot page.

- EHR launch: the EHR opens `/smart/launch?iss=<FHIR base>&launch=<opaque>`; `iss` must be a
  FHIR server this deployment trusts (else anyone could send users through their own
  authorization server), and `launch` goes back to the EHR's authorization server.
- Standalone launch: `/smart/launch` with no parameters starts at this deployment's own FHIR
  server and asks for `launch/patient`, so the authorization server has the user pick one.

Both read `{iss}/.well-known/smart-configuration` for the endpoints, send an S256 code
challenge, and the callback trades the code (with its verifier) for a token whose `patient`
binds the session. The page is then opened on a thread about that patient.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse

from wardround.server.smart.sessions import (
    COOKIE,
    PendingLaunch,
    SessionStore,
    SmartSession,
    pkce_pair,
)
from wardround.settings import Settings

__all__ = ["SmartApp", "smart_router"]


@dataclass
class SmartApp:
    """The copilot as a SMART app: its registration, sessions, and the HTTP client it uses
    for discovery and the token endpoint (tests pass one with their own transport)."""

    client_id: str
    client_secret: str | None
    scope: str
    issuers: list[str]
    redirect_url: str | None
    sessions: SessionStore
    http: httpx.AsyncClient

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient | None = None) -> SmartApp:
        secret = settings.smart_app_client_secret
        return cls(
            client_id=str(settings.smart_app_client_id),
            client_secret=secret.get_secret_value() if secret else None,
            scope=settings.smart_app_scope,
            issuers=[i.rstrip("/") for i in settings.smart_app_issuers]
            or [settings.fhir_base_url.rstrip("/")],
            redirect_url=settings.smart_app_redirect_url,
            sessions=SessionStore(settings.smart_app_session_ttl_s),
            http=http or httpx.AsyncClient(timeout=10),
        )

    async def endpoints(self, iss: str) -> tuple[str, str]:
        """(authorization_endpoint, token_endpoint) from the server's SMART configuration."""
        try:
            response = await self.http.get(f"{iss}/.well-known/smart-configuration")
            response.raise_for_status()
            found = response.json()
            return str(found["authorization_endpoint"]), str(found["token_endpoint"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise HTTPException(502, f"no SMART configuration at {iss}: {exc}") from None

    async def token(self, launch: PendingLaunch, code: str) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": launch.redirect_uri, "code_verifier": launch.code_verifier,
                "client_id": self.client_id}  # fmt: skip
        # A confidential client authenticates with HTTP Basic; a public one by PKCE alone.
        basic: dict[str, Any] = {}
        if self.client_secret:
            basic["auth"] = httpx.BasicAuth(self.client_id, self.client_secret)
        try:
            response = await self.http.post(launch.token_url, data=form, **basic)
        except httpx.HTTPError as exc:
            raise HTTPException(502, f"the token endpoint failed: {exc}") from None
        if response.status_code != 200:
            raise HTTPException(
                403, f"the authorization server refused the code: {response.text[:300]}"
            )
        return response.json()


def _smart(request: Request) -> SmartApp:
    return request.app.state.smart


def _redirect_uri(request: Request, app: SmartApp) -> str:
    return app.redirect_url or str(request.url_for("smart_callback"))


async def _open_page(request: Request, session: SmartSession) -> str:
    """Where the browser goes after the launch: a new thread about the launched patient."""
    copilot = getattr(request.app.state, "copilot", None)
    if copilot is None:
        return "/"
    thread = await copilot.create_thread(session.patient, session.fhir_user or "smart-user")
    return f"/#thread={thread['thread_id']}"


def smart_router() -> APIRouter:
    router = APIRouter(prefix="/smart", tags=["smart"])

    @router.get("/launch", summary="Start a SMART launch (EHR: iss + launch; standalone: none)")
    async def launch(request: Request, iss: str | None = None, launch: str | None = None) -> Any:
        app = _smart(request)
        if launch and not iss:
            raise HTTPException(400, "an EHR launch needs iss (the FHIR server) with launch")
        issuer = (iss or app.issuers[0]).rstrip("/")
        if issuer not in app.issuers:
            raise HTTPException(400, f"iss {issuer!r} is not a FHIR server this copilot trusts")
        authorize, token_url = await app.endpoints(issuer)
        verifier, challenge = pkce_pair()
        redirect_uri = _redirect_uri(request, app)
        state = app.sessions.begin(PendingLaunch(issuer, token_url, redirect_uri, verifier))
        scope = f"launch {app.scope}" if launch else app.scope
        query = {"response_type": "code", "client_id": app.client_id, "redirect_uri": redirect_uri,
                 "scope": scope, "state": state, "aud": issuer, "code_challenge": challenge,
                 "code_challenge_method": "S256", **({"launch": launch} if launch else {})}  # fmt: skip
        return RedirectResponse(f"{authorize}?{urlencode(query)}", status_code=302)

    @router.get("/callback", name="smart_callback", summary="The authorization server's redirect")
    async def callback(
        request: Request, state: str = "", code: str | None = None, error: str | None = None
    ) -> Any:
        app = _smart(request)
        pending = app.sessions.finish(state)
        if pending is None:
            raise HTTPException(400, "unknown or expired launch state; launch again from the EHR")
        if error or not code:
            raise HTTPException(403, f"the authorization was not granted: {error or 'no code'}")
        granted = await app.token(pending, code)
        patient = granted.get("patient")
        if not isinstance(patient, str) or not patient:
            raise HTTPException(403, "the authorization named no patient (launch/patient)")
        session = SmartSession(
            patient=patient,
            iss=pending.iss,
            scope=str(granted.get("scope", "")),
            fhir_user=granted.get("fhirUser"),
            access_token=str(granted.get("access_token", "")),
            expires_at=time.time()
            + min(float(granted.get("expires_in", 3600)), app.sessions.ttl_s),
        )
        target = await _open_page(request, session)
        response = RedirectResponse(target, status_code=302)
        response.set_cookie(COOKIE, app.sessions.open(session), httponly=True, samesite="lax",
                            secure=request.url.scheme == "https", max_age=int(app.sessions.ttl_s))  # fmt: skip
        return response

    @router.get("/session", summary="The launched session: its patient and user")
    async def current(request: Request) -> JSONResponse:
        session = _smart(request).sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise HTTPException(401, "no SMART session; launch the copilot from the EHR")
        return JSONResponse(session.public())

    return router
