"""A small SMART on FHIR authorization server for tests: Authlib's authorization code grant
with PKCE (S256), in front of a FHIR server.

It serves `{base}/fhir/.well-known/smart-configuration`, `/authorize` (the user is already
signed in and consents: an EHR launch's `launch` names the patient, a standalone launch gets
`standalone_patient`, as if picked) and `/token`, whose response carries `patient` and
`fhirUser`. Any other path goes to the FHIR app given, so `{base}/fhir` is a real FHIR base
(`iss`). Needs the dev extra (authlib); plain http is allowed here, for loopback tests only.
"""

from __future__ import annotations

import os
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # loopback http, tests only

__all__ = ["SmartAuthServer"]


@dataclass(frozen=True)
class Client:
    """A public client (no secret): PKCE is what protects its code."""

    client_id: str
    redirect_uris: tuple[str, ...]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    user: str
    patient: str

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Incoming:
    """A Starlette request read ahead (Authlib's grants are synchronous)."""

    method: str
    url: str
    headers: dict[str, str]
    args: dict[str, str]
    form: dict[str, str]
    user: str | None = None
    patient: str | None = None


class _Payload(OAuth2Payload):
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    @property
    def data(self) -> dict[str, str]:
        return self._values

    @property
    def datalist(self) -> defaultdict[str, list]:
        return defaultdict(list, {k: [v] for k, v in self._values.items()})


class _Request(OAuth2Request):
    payload: _Payload

    def __init__(self, incoming: Incoming) -> None:
        super().__init__(incoming.method, incoming.url, headers=incoming.headers)
        self.incoming = incoming
        self.payload = _Payload({**incoming.args, **incoming.form})

    @property
    def args(self) -> dict[str, str | None]:
        return dict(self.incoming.args)

    @property
    def form(self) -> dict[str, str]:
        return self.incoming.form


def _ours(request: OAuth2Request) -> _Request:
    """The request as this server built it (`_Server.create_oauth2_request`)."""
    if not isinstance(request, _Request):
        raise TypeError(f"not a request of this server: {type(request).__name__}")
    return request


@dataclass
class _Store:
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)


class _CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012 - Authlib's class attribute

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        ours = _ours(request)
        if ours.client is None:
            raise RuntimeError("an authorization code for an unauthenticated client")
        data = ours.payload.data
        self.server.store.codes[code] = Code(
            code=code,
            client_id=ours.client.get_client_id(),
            redirect_uri=data.get("redirect_uri", ""),
            scope=data.get("scope", ""),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            user=str(ours.incoming.user),
            patient=str(ours.incoming.patient),
        )

    def query_authorization_code(self, code: str, client: ClientMixin) -> Code | None:
        found = self.server.store.codes.get(code)
        return found if found and found.client_id == client.get_client_id() else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.store.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> str:
        return authorization_code.user


class _Server(AuthorizationServer):
    def __init__(self, store: _Store) -> None:
        super().__init__()
        self.store = store

    # types-Authlib says ClientMixin; Authlib takes None for an unknown client (its callers check).
    def query_client(self, client_id: str) -> Client | None:  # type: ignore[override]
        return self.store.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        code = request.authorization_code
        if not isinstance(code, Code):
            raise RuntimeError("a token without an authorization code")
        token.update(patient=code.patient, fhirUser=code.user)  # SMART launch context
        self.store.tokens[token["access_token"]] = dict(token)

    def create_oauth2_request(self, request: Incoming) -> _Request:
        return _Request(request)

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers=dict(headers))
        return Response(body, status_code=status, headers=dict(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class SmartAuthServer:
    """The ASGI app (`app`) of a SMART authorization server for one registered client.

    Args:
        base_url: where the app is served (e.g. a LoopbackServer's url); `iss` is `{base}/fhir`.
        client_id, redirect_uris: the registered public client.
        launches: EHR launch ids -> the patient each one opens.
        standalone_patient: the patient "picked" in a standalone launch.
        fhir_app: the FHIR server's ASGI app, served for every other path.
        user: the signed-in user's FHIR reference (`fhirUser`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str,
        redirect_uris: list[str],
        launches: dict[str, str],
        standalone_patient: str,
        fhir_app: Any = None,
        user: str = "Practitioner/test-clinician",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.iss = f"{self.base_url}/fhir"
        self.launches = launches
        self.standalone_patient = standalone_patient
        self.user = user
        self.store = _Store(clients={client_id: Client(client_id, tuple(redirect_uris))})
        self.server = _Server(self.store)
        self.server.register_grant(_CodeGrant, [CodeChallenge(required=True)])
        self.server.register_token_generator(
            "default", BearerTokenGenerator(lambda *_, **__: secrets.token_urlsafe(32))
        )
        routes: list[Any] = [
            Route("/fhir/.well-known/smart-configuration", self.configuration),
            Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"]),
        ]
        if fhir_app is not None:
            routes.append(Mount("/", app=fhir_app))
        self.app = Starlette(routes=routes)

    async def configuration(self, request: Request) -> JSONResponse:
        return JSONResponse({
            "issuer": self.base_url,
            "authorization_endpoint": f"{self.base_url}/authorize",
            "token_endpoint": f"{self.base_url}/token",
            "token_endpoint_auth_methods_supported": ["none"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "patient/*.read"],
            "capabilities": ["launch-ehr", "launch-standalone", "client-public",
                             "context-ehr-patient", "context-standalone-patient", "permission-patient"],
        })  # fmt: skip

    async def authorize(self, request: Request) -> Response:
        args = dict(request.query_params)
        if args.get("aud", "").rstrip("/") != self.iss:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "aud is not this FHIR server"},
                400,
            )
        if args.get("code_challenge_method") != "S256":
            return JSONResponse(
                {"error": "invalid_request", "error_description": "S256 PKCE required"}, 400
            )
        launch = args.get("launch")
        if launch is not None and launch not in self.launches:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "unknown launch"}, 400
            )
        patient = self.launches[launch] if launch else self.standalone_patient
        incoming = Incoming(
            "GET", str(request.url), dict(request.headers), args, {}, self.user, patient
        )
        try:
            oauth = self.server.create_oauth2_request(incoming)
            grant = self.server.get_authorization_grant(oauth)
            # cast: types-Authlib types the response as `object`; ours is handle_response's.
            response = self.server.create_authorization_response(oauth, self.user, grant)
            return cast(Response, response)
        except OAuth2Error as exc:
            return JSONResponse(dict(exc.get_body()), exc.status_code)

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        incoming = Incoming("POST", str(request.url), dict(request.headers), {}, form)
        # cast: types-Authlib types it as Authlib's (status, body, headers) tuple; our
        # handle_response makes it a Starlette Response.
        return cast(Response, self.server.create_token_response(incoming))

    @staticmethod
    def new_launch() -> str:
        return secrets.token_urlsafe(12)

    def __repr__(self) -> str:
        return f"SmartAuthServer({self.iss!r})"
