"""How the FHIR client proves who it is: nothing, a static bearer token, or SMART Backend Services.

SMART Backend Services (client-credentials grant, RFC 7523 client assertion): the client
signs a short-lived JWT with its private key (RS384 by default), posts it to the token
endpoint and receives an access token, which is cached until shortly before it expires.
A 401 from the FHIR server drops the cached token and retries the request once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt

from wardround.fhir.errors import FhirAuthError, FhirUnavailable

if TYPE_CHECKING:
    from wardround.settings import Settings

__all__ = ["BearerAuth", "SmartBackendAuth", "auth_from_settings"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART caps the assertion lifetime at five minutes.
ASSERTION_LIFETIME_S = 300
# Refresh this long before the token's stated expiry, so a request never carries a stale one.
EXPIRY_LEEWAY_S = 30.0
DEFAULT_TOKEN_LIFETIME_S = 300.0


class BearerAuth(httpx.Auth):
    """A fixed `Authorization: Bearer <token>` header."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("bearer auth needs a token")
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services: a signed-JWT client-credentials grant, token cached until expiry.

    Args:
        client_id: the id registered with the authorisation server (JWT `iss` and `sub`).
        private_key: PEM text of the signing key (RSA for RS384/RS256, EC P-384 for ES384).
        token_url: the token endpoint; if None it is read from
            `{fhir_base_url}/.well-known/smart-configuration`.
        fhir_base_url: needed only for that discovery.
        key_id: the `kid` header naming the key in the client's registered JWKS.
        scope: the scopes asked for, e.g. `system/*.read`.
        alg: JWS algorithm, RS384 (default), ES384 or RS256.
        transport: httpx transport for the token endpoint (tests).
        timeout: seconds per token request.
    """

    def __init__(
        self,
        *,
        client_id: str,
        private_key: str | bytes,
        token_url: str | None = None,
        fhir_base_url: str | None = None,
        key_id: str | None = None,
        scope: str = "system/*.read",
        alg: str = "RS384",
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ):
        if not client_id:
            raise ValueError("SMART auth needs a client id")
        if token_url is None and fhir_base_url is None:
            raise ValueError("SMART auth needs a token URL or a FHIR base URL to discover it from")
        self.client_id = client_id
        self.token_url = token_url
        self.fhir_base_url = fhir_base_url.rstrip("/") if fhir_base_url else None
        self.key_id = key_id
        self.scope = scope
        self.alg = alg
        self._key = private_key
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.token_requests = 0  # how many times the token endpoint was called

    @classmethod
    def from_key_file(cls, path: Path | str, **kwargs: Any) -> SmartBackendAuth:
        """Same as the constructor, reading the PEM private key from a file."""
        return cls(private_key=Path(path).read_bytes(), **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("SmartBackendAuth works with httpx.AsyncClient only")
        yield request  # pragma: no cover - makes this a generator

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # Revoked or expired early: get a fresh token and try once more.
            self.invalidate(token)
            request.headers["Authorization"] = f"Bearer {await self.token()}"
            yield request

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still `token`, when given)."""
        if token is None or token == self._token:
            self._token = None
            self._expires_at = 0.0

    async def token(self) -> str:
        """A valid access token, from the cache or freshly granted."""
        async with self._lock:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            token_url = self.token_url or await self._discover()
            self.token_url = token_url
            form = {
                "grant_type": "client_credentials",
                "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.client_assertion(token_url),
            }
            self.token_requests += 1
            try:
                response = await self._http.post(
                    token_url, data=form, headers={"Accept": "application/json"}
                )
            except httpx.TransportError as exc:
                raise FhirUnavailable(
                    f"SMART token endpoint {token_url} is unreachable ({type(exc).__name__})",
                    url=token_url,
                ) from exc
            body = _json(response)
            if response.status_code != 200 or not body.get("access_token"):
                detail = body.get("error_description") or body.get("error") or response.text[:200]
                raise FhirAuthError(
                    f"SMART token request to {token_url} failed: HTTP {response.status_code}: {detail}",
                    status=response.status_code,
                    url=token_url,
                )
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME_S)
            self._token = str(body["access_token"])
            self._expires_at = time.monotonic() + max(0.0, lifetime - EXPIRY_LEEWAY_S)
            return self._token

    def client_assertion(self, token_url: str) -> str:
        """The signed JWT proving our identity to `token_url` (aud), valid five minutes."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "exp": now + ASSERTION_LIFETIME_S,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        headers = {"typ": "JWT"}
        if self.key_id:
            headers["kid"] = self.key_id
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)

    async def _discover(self) -> str:
        url = f"{self.fhir_base_url}/.well-known/smart-configuration"
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise FhirUnavailable(f"cannot reach {url} ({type(exc).__name__})", url=url) from exc
        endpoint = _json(response).get("token_endpoint")
        if response.status_code != 200 or not endpoint:
            raise FhirAuthError(
                f"no token_endpoint at {url} (HTTP {response.status_code}); set the token URL",
                status=response.status_code,
                url=url,
            )
        return str(endpoint)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def auth_from_settings(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.Auth | None:
    """The auth `settings.fhir_auth` asks for; raises ValueError naming a missing setting."""
    if settings.fhir_auth == "none":
        return None
    if settings.fhir_auth == "bearer":
        if settings.fhir_token is None:
            raise ValueError("fhir_auth=bearer needs WARDROUND_FHIR_TOKEN")
        return BearerAuth(settings.fhir_token.get_secret_value())
    client_id, key_path = settings.smart_client_id, settings.smart_private_key_path
    if not client_id or not key_path:
        raise ValueError(
            "fhir_auth=smart needs WARDROUND_SMART_CLIENT_ID and WARDROUND_SMART_PRIVATE_KEY_PATH"
        )
    return SmartBackendAuth.from_key_file(
        key_path,
        client_id=client_id,
        token_url=settings.smart_token_url,
        fhir_base_url=settings.fhir_base_url,
        key_id=settings.smart_key_id,
        scope=settings.smart_scope,
        alg=settings.smart_alg,
        transport=transport,
        timeout=settings.fhir_timeout_s,
    )
