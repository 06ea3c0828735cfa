"""The CDS Hooks service: requests shaped as the specification's examples (checked with the
spec's models), EHR JWTs signed with a test RSA key whose JWK Set a real loopback server
serves, prefetch sent and not sent (then the in-process SEKMET server is read with the
hook's token), replayed jti refused, feedback in the audit log.

HealthChain's sandbox client was not used: healthchain 0.16.1 pins fastapi<0.138,
fhir-resources<8.2 and httpx<0.28, below this project's locked versions.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from eval_fixtures import EvalFhir
from fhir_fixtures import RecordingTransport
from wardround.fhir.auth import BearerAuth
from wardround.fhir.client import FhirClient
from wardround.graphs.copilot.audit import AuditLog
from wardround.server.cds_hooks import create_cds_app
from wardround.server.cds_hooks.cards import CITATIONS
from wardround.server.cds_hooks.models import CdsResponse, Discovery, HookRequest
from wardround.server.cds_hooks.passages import IndexPassages
from wardround.settings import Settings
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sekmet_inprocess import BASE_URL
from wardround.tools.guidelines.index import GuidelineIndex, index_files
from wardround.tools.guidelines.ingest import corpus_dir

ISSUER = "https://ehr.example.org"
KID = "test-ehr-key"
CDS = "http://cds.test"
TODAY = date(2024, 6, 1)
SOURCES = ["hba1c-targets", "diabetes-complication-screening", "potassium-repletion",
           "hyperkalaemia", "diabetes-pharmacotherapy", "statin-intensity-and-lipid-monitoring",
           "ckd-staging", "hyponatraemia", "magnesium-repletion"]  # fmt: skip


# ------------------------------------------------------------------ keys and the JWKS server


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


EHR_KEY = _rsa()
OTHER_KEY = _rsa()


def _jwks() -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(EHR_KEY.public_key()))
    return {"keys": [{**public, "kid": KID, "use": "sig", "alg": "RS384"}]}


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    async def serve(_: Any) -> JSONResponse:
        return JSONResponse(_jwks())

    app = Starlette(routes=[Route("/.well-known/jwks.json", serve)])
    with LoopbackServer(app) as server:
        yield f"{server.url}/.well-known/jwks.json"


def sign(aud: str, *, key: Any = EHR_KEY, alg: str = "RS384", **overrides: Any) -> str:
    """A CDS Client JWT as the specification's example has it (RS384 here)."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    headers = {"kid": KID, "typ": "JWT", **overrides.pop("headers", {})}
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, alg, headers)


def bearer(aud: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign(aud, **kw)}"}


# ------------------------------------------------------------------ the service


@pytest.fixture(scope="module")
def passages(tmp_path_factory: pytest.TempPathFactory) -> IndexPassages:
    """The real guideline index (MiniLM + BM25) over the sources the rules cite."""
    index = GuidelineIndex(tmp_path_factory.mktemp("chroma"))
    index_files(index, [corpus_dir() / f"{s}.md" for s in SOURCES])
    return IndexPassages(index)


class Cds:
    def __init__(self, client: httpx.AsyncClient, audit: AuditLog, fhir_requests: list) -> None:
        self.client = client
        self.audit = audit
        self.fhir_requests = fhir_requests

    async def call(self, service: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        url = f"{CDS}/cds-services/{service}"
        return await self.client.post(url, json=body, headers=bearer(url, **kw))


@pytest.fixture
async def cds(
    eval_fhir: EvalFhir, jwks_url: str, passages: IndexPassages, tmp_path: Path
) -> AsyncIterator[Cds]:
    settings = Settings(home=tmp_path, cds_trusted_issuers={ISSUER: jwks_url})
    audit = AuditLog(tmp_path / "audit.jsonl")
    recorded: list[httpx.Request] = []

    def fhir(base_url: str, token: str | None) -> FhirClient:
        transport = RecordingTransport(httpx.ASGITransport(app=eval_fhir.app))
        transport.requests = recorded
        return FhirClient(base_url, auth=BearerAuth(token) if token else None, transport=transport)

    app = create_cds_app(settings, audit=audit, passages=passages, fhir=fhir, today=lambda: TODAY)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=CDS) as client:
        yield Cds(client, audit, recorded)


# ------------------------------------------------------------------ requests from the spec


def patient_view(patient_id: str, prefetch: dict[str, Any] | None = None) -> dict[str, Any]:
    """The specification's patient-view example, pointed at the test FHIR server."""
    body: dict[str, Any] = {
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": BASE_URL,
        "hook": "patient-view",
        "fhirAuthorization": {
            "access_token": "some-opaque-fhir-access-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read user/Observation.read",
            "subject": "cds-service4",
        },
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    HookRequest.model_validate(body)
    return body


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def _cc(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def lab(pid: str, rid: str, code: str, display: str, when: str, value: float, unit: str) -> dict:
    return {
        "resourceType": "Observation", "id": rid, "status": "final",
        "code": _cc("http://loinc.org", code, display), "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": unit},
    }  # fmt: skip


def sent_chart(pid: str) -> dict[str, Any]:
    """A prefetch for patient `pid`: penicillin allergy, high potassium, low eGFR, one
    record of another patient slipped in."""
    allergy = {
        "resourceType": "AllergyIntolerance", "id": "pen",
        "clinicalStatus": _cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"),
        "code": _cc("http://snomed.info/sct", "91936005", "Allergy to penicillin"),
        "patient": {"reference": f"Patient/{pid}"},
    }  # fmt: skip
    return {
        "patient": {
            "resourceType": "Patient",
            "id": pid,
            "gender": "male",
            "birthDate": "1950-12-23",
        },
        "observations": searchset(
            lab(pid, "k1", "6298-4", "Potassium", "2024-05-30", 6.1, "mmol/L"),
            lab(pid, "egfr1", "33914-3", "eGFR", "2024-05-30", 25, "mL/min/1.73m2"),
            lab("someone-else", "k-other", "6298-4", "Potassium", "2024-05-31", 3.0, "mmol/L"),
        ),
        "conditions": searchset(),
        "medications": searchset(),
        "allergies": searchset(allergy),
    }


def draft(pid: str, rid: str, rxnorm: str, name: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
        "medicationCodeableConcept": _cc("http://www.nlm.nih.gov/research/umls/rxnorm", rxnorm, name),
        "subject": {"reference": f"Patient/{pid}"},
    }  # fmt: skip


def order_sign(pid: str, orders: list[dict[str, Any]], prefetch: dict[str, Any]) -> dict[str, Any]:
    """The order-sign hook as the CDS Hooks library's example shapes it (no fhirServer)."""
    body = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "PractitionerRole/A2340113",
            "patientId": pid,
            "encounterId": "89284",
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]},
        },
        "prefetch": prefetch,
    }
    HookRequest.model_validate(body)
    return body


def cards_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    CdsResponse.model_validate(response.json())  # the spec's response shape
    return response.json()["cards"]


# ------------------------------------------------------------------ discovery and JWTs


async def test_discovery_lists_the_services_and_their_prefetch(cds: Cds) -> None:
    url = f"{CDS}/cds-services"
    response = await cds.client.get(url, headers=bearer(url))
    assert response.status_code == 200, response.text
    found = Discovery.model_validate(response.json())
    assert {s.hook for s in found.services} == {"patient-view", "order-select", "order-sign"}
    assert all(
        s.prefetch and "{{context.patientId}}" in s.prefetch["patient"] for s in found.services
    )


@pytest.mark.parametrize(
    ("why", "make", "expected"),
    [
        ("no header", lambda url: {}, "Authorization: Bearer"),
        ("wrong aud", lambda url: bearer(f"{CDS}/cds-services/other"), "aud must be"),
        ("expired", lambda url: bearer(url, exp=int(time.time()) - 600), "expired"),
        ("other key", lambda url: bearer(url, key=OTHER_KEY), "signature does not verify"),
        ("untrusted iss", lambda url: bearer(url, iss="https://evil.example"), "not trusted"),
        ("no jti", lambda url: bearer(url, jti=None), "'jti'"),
        (
            "HMAC",
            lambda url: bearer(url, key="a-shared-secret-of-enough-length!", alg="HS256"),
            "asymmetric",
        ),
        (
            "foreign jku",
            lambda url: bearer(url, headers={"jku": "https://evil.example/jwks"}),
            "jku",
        ),
        ("unknown kid", lambda url: bearer(url, headers={"kid": "nope"}), "no key 'nope'"),
        ("not a JWT", lambda url: {"Authorization": "Bearer not-a-jwt"}, "not a JWT"),
    ],
)
async def test_bad_jwts_get_a_401_with_the_reason(
    cds: Cds, why: str, make: Any, expected: str
) -> None:
    url = f"{CDS}/cds-services/wardround-patient-view"
    response = await cds.client.post(url, json=patient_view("x"), headers=make(url))
    assert response.status_code == 401, why
    assert expected in response.json()["detail"], response.json()
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_replayed_jti_is_refused(cds: Cds) -> None:
    url = f"{CDS}/cds-services/wardround-order-sign"
    headers = bearer(url)
    body = order_sign("p1", [], sent_chart("p1"))
    assert (await cds.client.post(url, json=body, headers=headers)).status_code == 200
    again = await cds.client.post(url, json=body, headers=headers)
    assert again.status_code == 401 and "replay" in again.json()["detail"]


# ------------------------------------------------------------------ patient-view


async def test_patient_view_without_prefetch_reads_fhir_with_the_hooks_token(
    cds: Cds, eval_fhir: EvalFhir
) -> None:
    ann = eval_fhir.ids["ann"]
    cards = cards_of(await cds.call("wardround-patient-view", patient_view(ann)))
    by_rule = {c["source"]["topic"]["code"]: c for c in cards}
    # Ann: diabetic, last HbA1c 7.2% a year before TODAY (due every 3 months above goal),
    # no UACR, latest potassium 3.2 mmol/L (below 3.5, no range on the record).
    assert {"hba1c-overdue", "uacr-overdue", "abnormal-result-low"} <= set(by_rule)
    hba1c = by_rule["hba1c-overdue"]
    cited = hba1c["extension"][CITATIONS]
    assert cited["guideline"] == "guideline:hba1c-targets#monitoring-interval"
    assert any(r.startswith("Condition/") for r in cited["records"])
    assert any(r.startswith("Observation/") for r in cited["records"])
    assert "every 3 months" in hba1c["detail"] and "`Observation/" in hba1c["detail"]
    action = hba1c["suggestions"][0]["actions"][0]
    assert action["type"] == "create" and action["resource"]["status"] == "draft"
    assert action["resource"]["subject"] == {"reference": f"Patient/{ann}"}
    low_k = by_rule["abnormal-result-low"]
    assert "Potassium" in low_k["summary"] and "3.2" in low_k["summary"]
    assert low_k["extension"][CITATIONS]["guideline"].startswith("guideline:potassium-repletion#")
    assert hba1c["links"][0]["type"] == "absolute" and ann in hba1c["links"][0]["url"]
    # Read from FHIR, with the hook's access token, and only Ann's records.
    assert cds.fhir_requests, "the FHIR server was not read"
    assert all(
        r.headers["authorization"] == "Bearer some-opaque-fhir-access-token"
        for r in cds.fhir_requests
    )
    bob = eval_fhir.ids["bob"]
    assert not any(bob in r for c in cards for r in c["extension"][CITATIONS]["records"])
    entry = next(e for e in cds.audit.entries() if e["action"] == "cds_hook")
    assert entry["patient"] == ann and entry["user"] == "Practitioner/example"
    assert entry["client"] == ISSUER and set(entry["fetched"]) == {"patient", "observations",
        "conditions", "medications", "allergies"}  # fmt: skip


async def test_patient_view_uses_prefetch_and_drops_other_patients_records(cds: Cds) -> None:
    body = patient_view("p1", prefetch=sent_chart("p1"))
    cards = cards_of(await cds.call("wardround-patient-view", body))
    summaries = " | ".join(c["summary"] for c in cards)
    assert "Potassium is high: 6.1" in summaries and "eGFR is low: 25" in summaries
    assert cds.fhir_requests == []  # everything was prefetched
    entry = next(e for e in cds.audit.entries() if e["action"] == "cds_hook")
    assert entry["dropped"] == ["Observation/k-other"]
    assert "Observation/k-other" not in json.dumps(cards)


async def test_a_missing_prefetch_key_is_read_and_no_server_means_412(cds: Cds) -> None:
    partial = {k: v for k, v in sent_chart("p1").items() if k != "conditions"}
    body = patient_view("p1", prefetch=partial)
    cards_of(await cds.call("wardround-patient-view", body))
    searched = [r.url.path for r in cds.fhir_requests if not r.url.path.endswith("/metadata")]
    assert searched and all(p.endswith("/Condition") for p in searched)
    body = patient_view("p1", prefetch=partial)
    del body["fhirServer"], body["fhirAuthorization"]
    refused = await cds.call("wardround-patient-view", body)
    assert refused.status_code == 412 and "conditions" in refused.json()["detail"]


# ------------------------------------------------------------------ order-sign, feedback


async def test_order_sign_checks_allergies_potassium_and_egfr(cds: Cds) -> None:
    orders = [
        draft("p1", "amox", "308182", "Amoxicillin 250 MG Oral Capsule"),
        draft("p1", "lis", "314076", "Lisinopril 10 MG Oral Tablet"),
        draft("p1", "met", "860975", "Metformin 500 MG Oral Tablet"),
    ]
    cards = cards_of(
        await cds.call("wardround-order-sign", order_sign("p1", orders, sent_chart("p1")))
    )
    by_rule = {c["source"]["topic"]["code"]: c for c in cards}
    assert set(by_rule) == {"order-allergy", "order-potassium", "order-metformin-egfr"}
    assert all(c["indicator"] == "critical" for c in cards)
    allergy = by_rule["order-allergy"]
    assert allergy["extension"][CITATIONS]["records"] == [
        "MedicationRequest/amox",
        "AllergyIntolerance/pen",
    ]
    remove = allergy["suggestions"][0]["actions"][0]
    assert remove == {"type": "delete", "description": "Remove the draft Amoxicillin 250 MG Oral Capsule",
                      "resourceId": ["MedicationRequest/amox"]}  # fmt: skip
    potassium = by_rule["order-potassium"]
    assert potassium["extension"][CITATIONS]["guideline"].startswith("guideline:hyperkalaemia#")
    assert "Observation/k1" in potassium["extension"][CITATIONS]["records"]
    assert by_rule["order-metformin-egfr"]["extension"][CITATIONS]["guideline"] == (
        "guideline:diabetes-pharmacotherapy#kidney-function-and-metformin"
    )


async def test_order_select_checks_only_the_selection_and_refuses_foreign_drafts(cds: Cds) -> None:
    orders = [
        draft("p1", "amox", "308182", "Amoxicillin"),
        draft("p1", "lis", "314076", "Lisinopril"),
    ]
    body = order_sign("p1", orders, sent_chart("p1"))
    body["hook"] = "order-select"
    body["context"]["selections"] = ["MedicationRequest/lis"]
    cards = cards_of(await cds.call("wardround-order-select", body))
    assert [c["source"]["topic"]["code"] for c in cards] == ["order-potassium"]
    body = order_sign("p1", [draft("p2", "x", "308182", "Amoxicillin")], sent_chart("p1"))
    refused = await cds.call("wardround-order-sign", body)
    assert refused.status_code == 400 and "another patient" in refused.json()["detail"]


async def test_feedback_is_written_to_the_audit_log(cds: Cds) -> None:
    orders = [draft("p1", "amox", "308182", "Amoxicillin")]
    card = cards_of(
        await cds.call("wardround-order-sign", order_sign("p1", orders, sent_chart("p1")))
    )[0]
    url = f"{CDS}/cds-services/wardround-order-sign/feedback"
    body = {"feedback": [
        {"card": card["uuid"], "outcome": "accepted",
         "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}], "outcomeTimestamp": "2024-06-01T10:05:31Z"},
        {"card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb", "outcome": "overridden",
         "overrideReason": {"reason": {"code": "d7ecf885", "system": "https://example.com/cds-hooks/override-reason-system"},
                            "userComment": "A comment entered by the clinician."},
         "outcomeTimestamp": "2020-12-11T00:00:00Z"},
    ]}  # fmt: skip
    response = await cds.client.post(url, json=body, headers=bearer(url))
    assert response.status_code == 200 and response.json() == {"recorded": 2}
    accepted, overridden = [e for e in cds.audit.entries() if e["action"] == "cds_feedback"]
    assert accepted["patient"] == "p1" and accepted["outcome"] == "accepted"
    assert accepted["accepted_suggestions"] == [card["suggestions"][0]["uuid"]]
    assert overridden["known_card"] is False and overridden["override_reason"] == "d7ecf885"
    assert overridden["user_comment"] == "A comment entered by the clinician."
    unsigned = await cds.client.post(url, json=body)
    assert unsigned.status_code == 401
