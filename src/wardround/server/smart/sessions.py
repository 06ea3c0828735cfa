"""SMART launches under way (by OAuth `state`) and launched sessions (by cookie), in memory.

One API process holds its own sessions: a deployment with several workers needs sticky
sessions or a shared store in their place.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

COOKIE = "wardround_smart"
PENDING_TTL_S = 600.0  # a user who leaves the login page for ten minutes starts again


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class PendingLaunch:
    iss: str
    token_url: str
    redirect_uri: str
    code_verifier: str
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class SmartSession:
    """What a launch granted: the patient the session is bound to, the user, the token."""

    patient: str
    iss: str
    scope: str
    fhir_user: str | None
    access_token: str
    expires_at: float

    def public(self) -> dict[str, Any]:
        return {"patient": self.patient, "iss": self.iss, "scope": self.scope,
                "fhirUser": self.fhir_user}  # fmt: skip


class SessionStore:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._pending: dict[str, PendingLaunch] = {}
        self._sessions: dict[str, SmartSession] = {}
        self._lock = threading.Lock()

    def begin(self, launch: PendingLaunch) -> str:
        """Remember a launch; returns the `state` that the callback must bring back."""
        state = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._pending = {k: p for k, p in self._pending.items() if now - p.at < PENDING_TTL_S}
            self._pending[state] = launch
        return state

    def finish(self, state: str) -> PendingLaunch | None:
        """The launch of this `state`, once (a replayed callback finds nothing)."""
        with self._lock:
            launch = self._pending.pop(state, None)
        if launch is None or time.monotonic() - launch.at >= PENDING_TTL_S:
            return None
        return launch

    def open(self, session: SmartSession) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = session
        return sid

    def get(self, sid: str | None) -> SmartSession | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and time.time() >= session.expires_at:
                del self._sessions[sid]
                return None
        return session
