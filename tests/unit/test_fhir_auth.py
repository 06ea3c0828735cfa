"""Auth: bearer and SMART Backend Services against a loopback token endpoint and a real SEKMET."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse

from wardround.fhir.auth import BearerAuth, SmartBackendAuth, auth_from_settings
from wardround.fhir.client import FhirAuthError, FhirClient
from wardround.settings import Settings
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sample_charts import handmade_chart
from wardround.testing.sekmet_inprocess import BASE_URL, asgi_client, load_chart, sekmet_app

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIENT_ID = "wardround-test"
STATIC_TOKEN = "static-secret-token"


def pem_private(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> Any:
    return ec.generate_private_key(ec.SECP384R1())


@dataclass
class AuthServer:
    """A token endpoint that verifies client assertions, and a protected FHIR read."""

    public_pem: bytes
    alg: str
    lifetime: int = 3600
    url: str = ""
    issued: list[str] = field(default_factory=list)
    assertions: list[dict] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/fhir/.well-known/smart-configuration")
        def smart_configuration() -> dict:
            return {"token_endpoint": f"{self.url}/oauth/token"}

        @app.post("/oauth/token")
        def token(
            grant_type: str = Form(),
            client_assertion_type: str = Form(),
            client_assertion: str = Form(),
            scope: str = Form(),
        ) -> JSONResponse:
            if grant_type != "client_credentials" or not client_assertion_type.endswith(
                "jwt-bearer"
            ):
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            try:
                claims = jwt.decode(
                    client_assertion,
                    self.public_pem,
                    algorithms=[self.alg],
                    audience=f"{self.url}/oauth/token",
                    options={"require": ["exp", "iss", "sub", "aud", "jti"]},
                )
            except jwt.PyJWTError as exc:
                return JSONResponse(
                    {"error": "invalid_client", "error_description": str(exc)}, status_code=401
                )
            header = jwt.get_unverified_header(client_assertion)
            self.assertions.append({**claims, "_kid": header.get("kid"), "_scope": scope})
            token = f"token-{next(self.counter)}"
            self.issued.append(token)
            return JSONResponse(
                {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime}
            )

        @app.get("/fhir/Patient/{pid}")
        def read(pid: str, request: Request) -> JSONResponse:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            valid = token == STATIC_TOKEN or (token in self.issued and token not in self.revoked)
            if scheme != "Bearer" or not valid:
                return JSONResponse({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "login", "diagnostics": "bad token"}]}, status_code=401)  # fmt: skip
            return JSONResponse({"resourceType": "Patient", "id": pid})

        return app


@pytest.fixture
def rsa_server(rsa_key: Any) -> Iterator[AuthServer]:
    server = AuthServer(public_pem=pem_public(rsa_key), alg="RS384")
    with LoopbackServer(server.app()) as running:
        server.url = running.url
        yield server


def smart_client(server: AuthServer, key: Any, **kwargs: Any) -> FhirClient:
    kwargs.setdefault("token_url", f"{server.url}/oauth/token")
    auth = SmartBackendAuth(
        client_id=CLIENT_ID,
        private_key=pem_private(key),
        key_id="key-1",
        scope="system/*.read",
        **kwargs,
    )
    return FhirClient(f"{server.url}/fhir", auth=auth, backoff_s=0, retries=0)


async def test_smart_token_is_signed_requested_once_and_reused(
    rsa_server: AuthServer, rsa_key: Any
) -> None:
    async with smart_client(rsa_server, rsa_key) as client:
        for pid in ("a", "b", "c"):
            assert (await client.read(f"Patient/{pid}"))["id"] == pid
        assert client._auth.token_requests == 1  # type: ignore[union-attr]
    assert len(rsa_server.assertions) == 1
    claims = rsa_server.assertions[0]
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == f"{rsa_server.url}/oauth/token"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["_kid"] == "key-1"
    assert claims["_scope"] == "system/*.read"


async def test_smart_token_is_renewed_when_it_expires(rsa_key: Any) -> None:
    server = AuthServer(public_pem=pem_public(rsa_key), alg="RS384", lifetime=20)
    with LoopbackServer(server.app()) as running:
        server.url = running.url
        async with smart_client(server, rsa_key) as client:
            for pid in ("a", "b", "c"):
                await client.read(f"Patient/{pid}")
    # A 20 s token is inside the 30 s safety margin, so every request needs a fresh one.
    assert len(server.issued) == 3
    assert len({a["jti"] for a in server.assertions}) == 3


async def test_revoked_token_is_replaced_once_on_401(rsa_server: AuthServer, rsa_key: Any) -> None:
    async with smart_client(rsa_server, rsa_key) as client:
        await client.read("Patient/a")
        rsa_server.revoked.update(rsa_server.issued)
        assert (await client.read("Patient/b"))["id"] == "b"
    assert len(rsa_server.issued) == 2


async def test_wrong_key_is_refused_by_the_token_endpoint(rsa_server: AuthServer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with smart_client(rsa_server, stranger) as client:
        with pytest.raises(FhirAuthError, match="oauth/token failed: HTTP 401"):
            await client.read("Patient/a")
    assert rsa_server.issued == []


async def test_token_endpoint_is_discovered_from_smart_configuration(
    rsa_server: AuthServer, rsa_key: Any
) -> None:
    async with smart_client(
        rsa_server, rsa_key, token_url=None, fhir_base_url=f"{rsa_server.url}/fhir"
    ) as client:
        assert (await client.read("Patient/a"))["id"] == "a"
        assert client._auth.token_url == f"{rsa_server.url}/oauth/token"  # type: ignore[union-attr]


async def test_es384_keys_work(ec_key: Any) -> None:
    server = AuthServer(public_pem=pem_public(ec_key), alg="ES384")
    with LoopbackServer(server.app()) as running:
        server.url = running.url
        async with smart_client(server, ec_key, alg="ES384") as client:
            assert (await client.read("Patient/a"))["id"] == "a"
    assert len(server.issued) == 1


async def test_bearer_token_is_sent_and_a_wrong_one_refused(rsa_server: AuthServer) -> None:
    async with FhirClient(f"{rsa_server.url}/fhir", auth=BearerAuth(STATIC_TOKEN)) as client:
        assert (await client.read("Patient/a"))["id"] == "a"
    async with FhirClient(f"{rsa_server.url}/fhir", auth=BearerAuth("nope"), retries=0) as client:
        with pytest.raises(FhirAuthError) as caught:
            await client.read("Patient/a")
    assert caught.value.status == 401


async def test_smart_backend_services_against_sekmet(tmp_path: Path, rsa_key: Any) -> None:
    public = tmp_path / "client.pub.pem"
    public.write_bytes(pem_public(rsa_key))
    server_auth = {
        "types": ["smart"],
        "smart_clients": [
            {"client_id": CLIENT_ID, "public_key_path": str(public), "scopes": "system/*.*"}
        ],
    }
    app = sekmet_app(tmp_path / "db", server_auth=server_auth)
    transport = httpx.ASGITransport(app=app)
    auth = SmartBackendAuth(
        client_id=CLIENT_ID,
        private_key=pem_private(rsa_key),
        fhir_base_url=BASE_URL,  # token endpoint discovered from SEKMET's smart-configuration
        scope="system/*.cruds",
        transport=transport,
    )
    async with FhirClient(BASE_URL, auth=auth, transport=transport, backoff_s=0) as client:
        pid = await load_chart(client, handmade_chart())
        assert len(await client.search("Observation", {"patient": pid})) == 4
    async with asgi_client(app) as anonymous:
        with pytest.raises(FhirAuthError):
            await anonymous.read(f"Patient/{pid}")


async def test_auth_from_settings(tmp_path: Path, rsa_key: Any) -> None:
    assert auth_from_settings(Settings(fhir_auth="none")) is None
    assert isinstance(auth_from_settings(Settings(fhir_auth="bearer", fhir_token="t")), BearerAuth)
    with pytest.raises(ValueError, match="WARDROUND_FHIR_TOKEN"):
        auth_from_settings(Settings(fhir_auth="bearer"))
    with pytest.raises(ValueError, match="WARDROUND_SMART_PRIVATE_KEY_PATH"):
        auth_from_settings(Settings(fhir_auth="smart", smart_client_id="c"))
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem_private(rsa_key))
    settings = Settings(
        fhir_auth="smart",
        smart_client_id="c",
        smart_private_key_path=key_file,
        smart_token_url="https://auth.example/token",
        smart_alg="RS256",
        smart_key_id="k9",
    )
    auth = auth_from_settings(settings)
    assert isinstance(auth, SmartBackendAuth)
    assertion = auth.client_assertion("https://auth.example/token")
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "kid": "k9", "typ": "JWT"}
    claims = jwt.decode(
        assertion, pem_public(rsa_key), algorithms=["RS256"], audience="https://auth.example/token"
    )
    assert claims["iss"] == "c"
    await auth.aclose()
