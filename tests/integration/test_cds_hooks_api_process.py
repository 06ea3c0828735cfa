"""CDS Hooks against the API as production runs it: `uvicorn --factory wardround.server.asgi:app`
in its own OS process (the app `wardround serve api` serves, with /cds-services mounted), and
this test as the EHR.

The EHR here is real enough to be believed: an EC P-384 key, its JWK Set served over HTTP on
loopback (the URL the service is configured to trust for our `iss`), each call signed
ES384 with `aud` = the URL called and a fresh `jti`. The FHIR server is SEKMET on loopback
holding Ann and Bob (`testing/sample_charts.py`). The hooks replayed: discovery, patient-view
without prefetch (the service reads SEKMET with `fhirServer` and `fhirAuthorization`) and with
prefetch (filled by this EHR from the discovery templates, with one of Bob's records slipped
in), order-sign with a draft statin, feedback on its card. Cards come from code, not from the
model: the API's model endpoint is a port nobody listens on and is never called.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from wardround.fhir.client import FhirClient
from wardround.fhir.compartment import belongs_to
from wardround.runtime.procs import free_port
from wardround.server.cds_hooks.cards import CITATIONS
from wardround.server.cds_hooks.models import CdsResponse, Discovery
from wardround.testing.api_process import ApiProcess, running_api
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sample_charts import load_ann_and_bob
from wardround.testing.sekmet_inprocess import sekmet_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FACTORY = "wardround.server.asgi:app"
ISSUER = "https://ehr.integration.example"
KID = "ehr-signing-key-1"
ALG = "ES384"
FHIR_TOKEN = "opaque-fhir-access-token-for-the-hook"
PATIENT_VIEW = "wardround-patient-view"
ORDER_SIGN = "wardround-order-sign"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

EHR_KEY = ec.generate_private_key(ec.SECP384R1())


# ------------------------------------------------------------------ the EHR's key and JWKS


def jwk_set() -> dict[str, Any]:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EHR_KEY.public_key()))
    return {"keys": [{**public, "kid": KID, "use": "sig", "alg": ALG}]}


def sign(aud: str, **claims: Any) -> str:
    """A CDS Client JWT as CDS Hooks 2.0 asks: iss, aud (the URL called), exp, iat, jti."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    return jwt.encode({**body, **claims}, EHR_KEY, ALG, {"kid": KID, "typ": "JWT"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    async def serve(_: Any) -> JSONResponse:
        return JSONResponse(jwk_set())

    app = Starlette(routes=[Route("/.well-known/jwks.json", serve)])
    with LoopbackServer(app) as server:
        yield f"{server.url}/.well-known/jwks.json"


# ------------------------------------------------------------------ FHIR server and API


class Recording:
    """An ASGI wrapper noting each request's path, query and Authorization header."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization", b"").decode()
            self.seen.append((scope["path"], scope["query_string"].decode(), auth))
        await self.app(scope, receive, send)


@dataclass
class Fhir:
    url: str
    ann: str
    bob: str
    seen: list[tuple[str, str, str]]  # every request the FHIR server received

    def by_the_service(self, since: int) -> list[tuple[str, str, str]]:
        """Requests since `since` that carried a token (this EHR's own reads carry none)."""
        return [r for r in self.seen[since:] if r[2]]

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fhir]:
    """SEKMET on a loopback port with Ann and Bob loaded over HTTP."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/fhir"
    app = Recording(sekmet_app(tmp_path_factory.mktemp("sekmet"), base_url=url))
    with LoopbackServer(app, port=port):

        async def load() -> dict[str, str]:
            async with FhirClient(url) as client:
                return await load_ann_and_bob(client)

        ids = asyncio.run(load())
        yield Fhir(url, ids["ann"], ids["bob"], app.seen)


@pytest.fixture(scope="module")
def api(
    fhir: Fhir, jwks_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    home = tmp_path_factory.mktemp("cds-api-home")
    env = {
        "WARDROUND_FHIR_BASE_URL": fhir.url,
        "WARDROUND_CDS_TRUSTED_ISSUERS": json.dumps({ISSUER: jwks_url}),
        "WARDROUND_CDS_REQUIRE_JWT": "true",
        # The copilot's model client is built at start-up but not used by CDS Hooks: an
        # explicit endpoint keeps the embedded model server from being started.
        "WARDROUND_MODEL_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "WARDROUND_MODEL_NAME": "never-called",
        "WARDROUND_SMART_APP_CLIENT_ID": "",
    }
    with running_api(FACTORY, home, env) as process:
        yield process


@pytest.fixture
def audit(api: ApiProcess) -> Path:
    return Path(api.log).parent / "audit.jsonl"  # the API's home (start_api logs there)


def audit_entries(path: Path, action: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if e["action"] == action]


# ------------------------------------------------------------------ the EHR's requests


def service_url(api: ApiProcess, service: str = "") -> str:
    return f"{api.url}/cds-services" + (f"/{service}" if service else "")


def call(
    api: ApiProcess, service: str, body: dict[str, Any], token: str | None = None
) -> httpx.Response:
    url = service_url(api, service)
    headers = bearer(token or sign(url))
    return httpx.post(url, json=body, headers=headers, timeout=60)


def hook(hook_name: str, patient: str, fhir: Fhir | None, **context: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": hook_name,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/ehr-clinician", "patientId": patient, **context},
    }
    if fhir is not None:
        body["fhirServer"] = fhir.url
        body["fhirAuthorization"] = {
            "access_token": FHIR_TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Patient.read patient/Observation.read patient/Condition.read "
            "patient/MedicationRequest.read patient/AllergyIntolerance.read",
            "subject": "wardround-cds",
            "patient": patient,
        }
    return body


def discovered(api: ApiProcess) -> Discovery:
    url = service_url(api)
    response = httpx.get(url, headers=bearer(sign(url)), timeout=30)
    assert response.status_code == 200, response.text
    return Discovery.model_validate(response.json())


def fill_prefetch(templates: dict[str, str], fhir: Fhir, patient: str) -> dict[str, Any]:
    """What an EHR does with the discovery's prefetch templates: fill in the context, read."""
    out = {}
    for key, template in templates.items():
        path, _, query = template.replace("{{context.patientId}}", patient).partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        out[key] = fhir.get(path, **params)
    return out


def check_cards(response: httpx.Response) -> list[dict[str, Any]]:
    """The cards of a 200 answer, each checked against CDS Hooks 2.0's card rules."""
    assert response.status_code == 200, response.text
    body = response.json()
    CdsResponse.model_validate(body)
    no_empty_values(body)
    cards = body["cards"]
    for card in cards:
        assert isinstance(card["summary"], str) and 0 < len(card["summary"]) <= 140, card
        assert card["indicator"] in {"info", "warning", "critical"}, card
        assert isinstance(card["source"]["label"], str) and card["source"]["label"].strip()
        assert UUID.match(card["uuid"]), card["uuid"]
        if card.get("suggestions"):
            assert card["selectionBehavior"] in {"at-most-one", "any"}
            assert all(UUID.match(s["uuid"]) and s["label"] for s in card["suggestions"])
        for link in card.get("links", []):
            assert link["label"] and link["url"] and link["type"] in {"absolute", "smart"}
    assert len({c["uuid"] for c in cards}) == len(cards), "card uuids are unique"
    return cards


def no_empty_values(value: Any, where: str = "response") -> None:
    """The specification forbids null and empty values (cds-r-2) anywhere in a response."""
    assert value is not None and value != "" and value != [] and value != {}, where
    if isinstance(value, dict):
        for k, v in value.items():
            no_empty_values(v, f"{where}.{k}")
    elif isinstance(value, list):
        for n, v in enumerate(value):
            no_empty_values(v, f"{where}[{n}]")


def cited(cards: list[dict[str, Any]]) -> list[str]:
    return [r for c in cards for r in c["extension"][CITATIONS]["records"]]


def assert_only_ann(cards: list[dict[str, Any]], fhir: Fhir) -> None:
    """Every record a card cites is read back from FHIR and is Ann's; Bob is not named."""
    refs = cited(cards)
    assert refs, "the cards cite records"
    for ref in set(refs):
        assert belongs_to(fhir.get(ref), fhir.ann), f"{ref} is not Ann's"
    assert fhir.bob not in json.dumps(cards)
    for card in cards:
        for suggestion in card.get("suggestions", []):
            for action in suggestion.get("actions", []):
                if "resource" in action:
                    assert action["resource"]["subject"] == {"reference": f"Patient/{fhir.ann}"}


# ------------------------------------------------------------------ the replay


def test_discovery_needs_the_ehrs_jwt(api: ApiProcess) -> None:
    found = discovered(api)
    assert {s.id: s.hook for s in found.services} == {
        PATIENT_VIEW: "patient-view",
        "wardround-order-select": "order-select",
        ORDER_SIGN: "order-sign",
    }
    assert all(
        s.prefetch and "{{context.patientId}}" in s.prefetch["patient"] for s in found.services
    )
    unsigned = httpx.get(service_url(api), timeout=30)
    assert unsigned.status_code == 401
    assert unsigned.headers["www-authenticate"].startswith("Bearer")


def test_patient_view_without_prefetch_reads_fhir_with_the_hooks_token(
    api: ApiProcess, fhir: Fhir, audit: Path
) -> None:
    since = len(fhir.seen)
    cards = check_cards(call(api, PATIENT_VIEW, hook("patient-view", fhir.ann, fhir)))
    # The service read the chart itself, with the hook's token, and asked only for Ann's.
    reads = [r for r in fhir.seen[since:] if not r[0].endswith("/metadata")]
    assert len(reads) >= 5, reads
    assert all(auth == f"Bearer {FHIR_TOKEN}" for _, _, auth in reads), reads
    assert all(
        path.endswith(f"/Patient/{fhir.ann}") or f"patient={fhir.ann}" in query
        for path, query, _ in reads
    ), reads
    by_rule = {c["source"]["topic"]["code"]: c for c in cards}
    # Ann: diabetic, last HbA1c 2023-06 (long overdue now), no UACR, latest potassium 3.2.
    assert {"hba1c-overdue", "uacr-overdue", "abnormal-result-low"} <= set(by_rule), by_rule
    low_k = by_rule["abnormal-result-low"]
    assert "Potassium" in low_k["summary"] and "3.2" in low_k["summary"]
    hba1c = by_rule["hba1c-overdue"]
    assert hba1c["extension"][CITATIONS]["guideline"].startswith("guideline:hba1c-targets#")
    assert hba1c["suggestions"][0]["actions"][0]["resource"]["status"] == "draft"
    assert hba1c["links"] == [
        {
            "label": "Open in the wardround copilot",
            "url": f"{api.url}/?patient={fhir.ann}",
            "type": "absolute",
        }
    ]
    assert_only_ann(cards, fhir)
    entry = audit_entries(audit, "cds_hook")[-1]
    assert entry["patient"] == fhir.ann and entry["service"] == PATIENT_VIEW
    assert entry["client"] == ISSUER and entry["user"] == "Practitioner/ehr-clinician"
    assert set(entry["fetched"]) == {
        "patient",
        "observations",
        "conditions",
        "medications",
        "allergies",
    }
    assert entry["cards"] == [c["uuid"] for c in cards]


def test_patient_view_with_prefetch_gives_the_same_cards_and_drops_others(
    api: ApiProcess, fhir: Fhir, audit: Path
) -> None:
    service = next(s for s in discovered(api).services if s.id == PATIENT_VIEW)
    assert service.prefetch is not None
    prefetch = fill_prefetch(service.prefetch, fhir, fhir.ann)
    # One of Bob's results slipped into Ann's observations: the service must drop it.
    bobs = fhir.get("Observation", patient=fhir.bob, _count=1)["entry"][0]
    prefetch["observations"]["entry"].append(bobs)
    body = hook("patient-view", fhir.ann, None)
    body["prefetch"] = prefetch
    since = len(fhir.seen)
    cards = check_cards(call(api, PATIENT_VIEW, body))
    assert fhir.by_the_service(since) == [], "everything was prefetched: no FHIR read"
    assert_only_ann(cards, fhir)
    entry = audit_entries(audit, "cds_hook")[-1]
    assert entry["hook_instance"] == body["hookInstance"]
    assert "fetched" not in entry  # everything came prefetched
    assert entry["dropped"] == [f"Observation/{bobs['resource']['id']}"]
    # The same chart read by the service itself gives the same findings.
    read = check_cards(call(api, PATIENT_VIEW, hook("patient-view", fhir.ann, fhir)))
    summaries = sorted(c["summary"] for c in cards)
    assert summaries == sorted(c["summary"] for c in read)


def test_order_sign_checks_a_draft_statin_and_feedback_is_audited(
    api: ApiProcess, fhir: Fhir, audit: Path
) -> None:
    draft = {
        "resourceType": "MedicationRequest",
        "id": "draft-atorvastatin",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "617310",
                    "display": "Atorvastatin 20 MG Oral Tablet",
                }
            ],
            "text": "Atorvastatin 20 MG Oral Tablet",
        },
        "subject": {"reference": f"Patient/{fhir.ann}"},
    }
    orders = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}
    body = hook("order-sign", fhir.ann, fhir, draftOrders=orders)
    cards = check_cards(call(api, ORDER_SIGN, body))
    assert [c["source"]["topic"]["code"] for c in cards] == ["order-statin-lipids"], cards
    card = cards[0]
    assert card["indicator"] == "info" and "Atorvastatin" in card["summary"]
    assert card["extension"][CITATIONS]["guideline"].startswith(
        "guideline:statin-intensity-and-lipid-monitoring#"
    )
    proposed = card["suggestions"][0]["actions"][0]["resource"]
    assert proposed["resourceType"] == "ServiceRequest" and proposed["status"] == "draft"
    assert proposed["subject"] == {"reference": f"Patient/{fhir.ann}"}

    url = service_url(api, f"{ORDER_SIGN}/feedback")
    suggestion = card["suggestions"][0]["uuid"]
    override = card["overrideReasons"][0]
    feedback = {"feedback": [
        {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
         "outcomeTimestamp": "2026-01-05T10:05:31Z"},
        {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-01-05T10:06:00Z",
         "overrideReason": {"reason": override, "userComment": "Lipids drawn this morning."}},
    ]}  # fmt: skip
    assert httpx.post(url, json=feedback, timeout=30).status_code == 401  # unsigned
    response = httpx.post(url, json=feedback, headers=bearer(sign(url)), timeout=30)
    assert response.status_code == 200 and response.json() == {"recorded": 2}, response.text
    accepted, overridden = audit_entries(audit, "cds_feedback")[-2:]
    for entry in (accepted, overridden):
        assert entry["patient"] == fhir.ann and entry["service"] == ORDER_SIGN
        assert entry["card"] == card["uuid"] and entry["known_card"] is True
        assert entry["user"] == ISSUER and entry["summary"] == card["summary"]
    assert accepted["outcome"] == "accepted" and accepted["accepted_suggestions"] == [suggestion]
    assert overridden["override_reason"] == override["code"]
    assert overridden["user_comment"] == "Lipids drawn this morning."


def test_a_replayed_jti_and_a_wrong_audience_get_401(api: ApiProcess, fhir: Fhir) -> None:
    url = service_url(api, PATIENT_VIEW)
    token = sign(url)
    first = call(api, PATIENT_VIEW, hook("patient-view", fhir.ann, fhir), token)
    assert first.status_code == 200, first.text
    replayed = call(api, PATIENT_VIEW, hook("patient-view", fhir.ann, fhir), token)
    assert replayed.status_code == 401 and "replay" in replayed.json()["detail"]
    assert replayed.headers["www-authenticate"].startswith("Bearer")
    for aud in (
        service_url(api, ORDER_SIGN),
        f"https://cds.elsewhere.example/cds-services/{PATIENT_VIEW}",
    ):
        wrong = call(api, PATIENT_VIEW, hook("patient-view", fhir.ann, fhir), sign(aud))
        assert wrong.status_code == 401, aud
        assert f"aud must be {url}" in wrong.json()["detail"], wrong.json()
    expired = sign(url, exp=int(time.time()) - 600, iat=int(time.time()) - 900)
    late = call(api, PATIENT_VIEW, hook("patient-view", fhir.ann, fhir), expired)
    assert late.status_code == 401 and "expired" in late.json()["detail"]
