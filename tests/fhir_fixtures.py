"""Real FHIR fixtures for tests: an in-process SEKMET server holding small synthetic charts.

SEKMET (`sekmet.main.create_app`) runs inside the test process, reached through
`httpx.ASGITransport` (no socket), or on a loopback port with `LoopbackServer` when the test
is about the network. Charts come from carebundle (fast, small), one hand-written bundle
covering the resource types carebundle does not make, and optionally one PySynthea patient.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from wardround.procs import free_port
from wardround.tools.fhir.client import FhirClient

BASE_URL = "http://sekmet.test/fhir"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

NOTE_TEXT = (
    "Progress note 2023-11-12.\n\nSubjective: feels well, walking 30 minutes daily.\n"
    "Objective: BP 132/84 mmHg, HbA1c 6.1 % (down from 7.4 %).\n"
    "Assessment: type 2 diabetes, improving control on metformin.\n"
    "Plan: continue metformin 500 mg once daily; recheck HbA1c in 6 months; "
    "dietitian follow-up; annual retinal screening due in January. " + "Counselled on diet. " * 20
)


# ------------------------------------------------------------------ servers


def sekmet_app(data_dir: Path, *, base_url: str = BASE_URL, server_auth: dict | None = None) -> Any:
    """A SEKMET FastAPI app: simulator off, strict inbound validation, quiet traffic log."""
    from sekmet.config import Settings as SekmetSettings
    from sekmet.main import create_app

    settings = SekmetSettings.model_validate(
        {
            "base_url": base_url,
            "host": "127.0.0.1",
            "data_dir": str(data_dir),
            "simulator": {"enabled": False},
            "validation": {"inbound": "strict"},
            "log_inbound": False,
            "server_auth": server_auth or {"types": ["none"]},
        }
    )
    return create_app(settings)


def asgi_client(app: Any, *, base_url: str = BASE_URL, **kwargs: Any) -> FhirClient:
    """A FhirClient talking to an in-process ASGI app."""
    kwargs.setdefault("backoff_s", 0.0)
    return FhirClient(base_url, transport=httpx.ASGITransport(app=app), **kwargs)


class LoopbackServer:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None):
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("loopback server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


# ------------------------------------------------------------------- charts


def carebundle_charts() -> dict[str, dict]:
    """Small coherent carebundle charts (transaction Bundles), by label."""
    import carebundle

    def as_dict(bundle: Any) -> dict:
        return json.loads(carebundle.to_json(bundle))

    return {
        "diabetes": as_dict(carebundle.generate_bundle(profile="type2_diabetes", seed=11)),
        "hypertension": as_dict(
            carebundle.generate_history(profile="hypertension", seed=12, visits=3)
        ),
        "anaemia": as_dict(carebundle.generate_bundle(profile="anaemia", seed=13, sex="M")),
    }


def _entry(uid: str, resource: dict) -> dict:
    return {
        "fullUrl": f"urn:uuid:{uid}",
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def _cc(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def handmade_resources() -> list[dict]:
    """One chart covering every rendered type, with local ids ("ex-*") and urn references.

    Valid R4 (the fixture tests check it with fhir.resources.R4B and SEKMET's strict mode).
    """
    pat = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}
    enc = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000002"}
    hba1c_new = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000003"}
    return [
        {
            "resourceType": "Patient", "id": "ex-patient",
            "identifier": [{"type": _cc("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number"),
                            "system": "urn:oid:1.2.3.4.5.1", "value": "MRN-0042"}],
            "name": [{"use": "official", "family": "Testwell", "given": ["Ada"]}],
            "gender": "female", "birthDate": "1960-02-29",
        },
        {
            "resourceType": "Encounter", "id": "ex-encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
            "type": [_cc(SNOMED, "185349003", "Encounter for check up")],
            "subject": pat, "period": {"start": "2023-11-12T09:00:00Z", "end": "2023-11-12T09:30:00Z"},
            "reasonCode": [{"text": "Diabetes review"}],
        },
        {
            "resourceType": "Observation", "id": "ex-hba1c-new", "status": "final",
            "category": [_cc("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory", "Laboratory")],
            "code": _cc(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
            "subject": pat, "encounter": enc, "effectiveDateTime": "2023-11-12T09:10:00Z",
            "valueQuantity": {"value": 6.1, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
        },
        {
            "resourceType": "Observation", "id": "ex-hba1c-old", "status": "final",
            "code": _cc(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
            "subject": pat, "effectiveDateTime": "2022-05-01",
            "valueQuantity": {"value": 7.4, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
            "interpretation": [_cc("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "H", "High")],
        },
        {
            "resourceType": "Observation", "id": "ex-bp", "status": "final",
            "code": _cc(LOINC, "85354-9", "Blood pressure panel with all children optional"),
            "subject": pat, "effectiveDateTime": "2023-11-12T09:05:00Z",
            "component": [
                {"code": _cc(LOINC, "8480-6", "Systolic blood pressure"),
                 "valueQuantity": {"value": 132, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": _cc(LOINC, "8462-4", "Diastolic blood pressure"),
                 "valueQuantity": {"value": 84, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            ],
        },
        {
            "resourceType": "Observation", "id": "ex-smoking", "status": "final",
            "code": _cc(LOINC, "72166-2", "Tobacco smoking status"),
            "subject": pat, "effectiveDateTime": "2023-11-12",
            "valueCodeableConcept": _cc(SNOMED, "8517006", "Ex-smoker"),
        },
        {
            "resourceType": "Condition", "id": "ex-diabetes",
            "clinicalStatus": _cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
            "verificationStatus": _cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
            "code": _cc(SNOMED, "44054006", "Diabetes mellitus type 2"),
            "subject": pat, "onsetDateTime": "2015-03-02",
        },
        {
            "resourceType": "Condition", "id": "ex-sinusitis",
            "clinicalStatus": _cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved", "Resolved"),
            "code": _cc(SNOMED, "444814009", "Viral sinusitis (disorder)"),
            "subject": pat, "onsetDateTime": "2021-01-05", "abatementDateTime": "2021-01-19",
        },
        {
            "resourceType": "MedicationRequest", "id": "ex-metformin-rx", "status": "active", "intent": "order",
            "medicationCodeableConcept": _cc(RXNORM, "860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
            "subject": pat, "authoredOn": "2023-01-10",
            "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                   "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}],
        },
        {
            "resourceType": "MedicationRequest", "id": "ex-amoxicillin-rx", "status": "stopped", "intent": "order",
            "medicationCodeableConcept": _cc(RXNORM, "308182", "Amoxicillin 250 MG Oral Capsule"),
            "subject": pat, "authoredOn": "2021-01-05",
        },
        {
            "resourceType": "MedicationStatement", "id": "ex-aspirin-stmt", "status": "active",
            "medicationCodeableConcept": _cc(RXNORM, "243670", "aspirin 81 MG Oral Tablet"),
            "subject": pat, "effectiveDateTime": "2020-06-01", "dosage": [{"text": "81 mg once daily"}],
        },
        {
            "resourceType": "AllergyIntolerance", "id": "ex-peanut",
            "clinicalStatus": _cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"),
            "verificationStatus": _cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed"),
            "type": "allergy", "category": ["food"], "criticality": "high",
            "code": _cc(SNOMED, "91935009", "Allergy to peanut"),
            "patient": pat, "recordedDate": "2019-04-01",
            "reaction": [{"manifestation": [_cc(SNOMED, "247472004", "Hives")], "severity": "moderate"}],
        },
        {
            "resourceType": "Procedure", "id": "ex-colonoscopy", "status": "completed",
            "code": _cc(SNOMED, "73761001", "Colonoscopy"), "subject": pat, "performedDateTime": "2022-06-15",
        },
        {
            "resourceType": "Immunization", "id": "ex-flu", "status": "completed",
            "vaccineCode": _cc("http://hl7.org/fhir/sid/cvx", "140", "Influenza, seasonal, injectable, preservative free"),
            "patient": pat, "occurrenceDateTime": "2023-10-01",
        },
        {
            "resourceType": "DiagnosticReport", "id": "ex-a1c-report", "status": "final",
            "code": _cc(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
            "subject": pat, "effectiveDateTime": "2023-11-12T09:10:00Z", "issued": "2023-11-12T12:00:00Z",
            "result": [hba1c_new], "conclusion": "Improved glycaemic control.",
        },
        {
            "resourceType": "DocumentReference", "id": "ex-note", "status": "current",
            "type": _cc(LOINC, "11506-3", "Progress note"), "subject": pat, "date": "2023-11-12T10:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": base64.b64encode(NOTE_TEXT.encode()).decode()}}],
        },
    ]  # fmt: skip


def handmade_chart() -> dict:
    """`handmade_resources()` as a transaction Bundle (ids dropped, urn references kept)."""
    resources = handmade_resources()
    uids = {
        "ex-patient": "00000000-0000-4000-8000-000000000001",
        "ex-encounter": "00000000-0000-4000-8000-000000000002",
        "ex-hba1c-new": "00000000-0000-4000-8000-000000000003",
    }
    entries = []
    for n, resource in enumerate(resources, start=10):
        local = resource.pop("id")
        entries.append(_entry(uids.get(local, f"00000000-0000-4000-8000-{n:012d}"), resource))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@lru_cache(maxsize=2)
def synthea_chart(seed: int = 42) -> str:
    """One PySynthea patient as JSON text (generated once per process, about 2 s)."""
    out = Path(tempfile.mkdtemp(prefix="wardround-synthea-"))
    synthea = Path(sys.executable).with_name("synthea")
    argv = [
        str(synthea),
        "-p",
        "1",
        "-s",
        str(seed),
        "-a",
        "40-80",
        "-r",
        "20260101",
        "-o",
        str(out),
    ]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    (bundle_file,) = sorted((out / "fhir").glob("*.json"))
    return bundle_file.read_text()


def bundle_resources(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", [])]


async def load_chart(client: FhirClient, bundle: dict) -> str:
    """POST a transaction Bundle; return the server id of its Patient."""
    response = await client.transaction(bundle)
    for entry in response.get("entry", []):
        location = (entry.get("response") or {}).get("location", "")
        if "Patient/" in location:
            return location.split("Patient/")[1].split("/")[0]
    raise AssertionError(f"no Patient created: {json.dumps(response)[:300]}")


# ----------------------------------------------------------------- fixtures


@dataclass
class FhirFixture:
    """A running SEKMET with charts loaded: `patients[label]` is the server's Patient id."""

    app: Any
    client: FhirClient
    patients: dict[str, str] = field(default_factory=dict)
    bundles: dict[str, dict] = field(default_factory=dict)


@pytest.fixture(scope="module", name="fhir")
async def fhir_fixture(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FhirFixture]:
    """SEKMET in-process with the carebundle charts and the hand-made chart loaded."""
    app = sekmet_app(tmp_path_factory.mktemp("sekmet"))
    client = asgi_client(app)
    fixture = FhirFixture(app=app, client=client)
    charts = {**carebundle_charts(), "handmade": handmade_chart()}
    for label, bundle in charts.items():
        fixture.bundles[label] = bundle
        fixture.patients[label] = await load_chart(client, json.loads(json.dumps(bundle)))
    yield fixture
    await client.aclose()


@pytest.fixture(scope="module", name="synthea_fhir")
async def synthea_fhir_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[FhirFixture]:
    """SEKMET in-process with one PySynthea patient (whole-life record) loaded."""
    app = sekmet_app(tmp_path_factory.mktemp("sekmet-synthea"))
    client = asgi_client(app)
    bundle = json.loads(synthea_chart())
    fixture = FhirFixture(app=app, client=client, bundles={"synthea": bundle})
    fixture.patients["synthea"] = await load_chart(client, json.loads(json.dumps(bundle)))
    yield fixture
    await client.aclose()


@contextmanager
def running(app: Any) -> Iterator[LoopbackServer]:
    """`with running(app) as server:` serves `app` at `server.url` until the block ends."""
    with LoopbackServer(app) as server:
        yield server
