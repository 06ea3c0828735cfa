"""Fixtures for the evaluation tests: two small charts with known answers, and a rule-driven
chat model. The charts are loaded into a real in-process SEKMET (see fhir_fixtures.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}

# The public benchmark files (CI points WARDROUND_BENCHMARK_DATA_DIR at a read-only copy).
BENCHMARK_DATA = Path(os.environ.get("WARDROUND_BENCHMARK_DATA_DIR", "/work/shared/data"))

# Known answers the tests assert against.
ANN_MRN, BOB_MRN = "1234567", "7654321"


def _cc(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


class _Chart:
    def __init__(self, given: str, family: str, birth: str, gender: str, mrn: str) -> None:
        self.urn = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, mrn)}"
        self.entries: list[dict[str, Any]] = []
        self.add(
            {
                "resourceType": "Patient",
                "identifier": [{"type": MR, "system": "http://hospital.example", "value": mrn}],
                "name": [{"use": "official", "family": family, "given": [given]}],
                "gender": gender,
                "birthDate": birth,
            },
            self.urn,
        )

    def add(self, resource: dict[str, Any], urn: str | None = None) -> None:
        urn = urn or f"urn:uuid:{uuid.uuid4()}"
        self.entries.append(
            {
                "fullUrl": urn,
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )

    def lab(
        self,
        code: str,
        display: str,
        when: str,
        value: float,
        unit: str,
        category: str = "laboratory",
    ) -> None:
        self.add(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [
                    _cc(
                        "http://terminology.hl7.org/CodeSystem/observation-category",
                        category,
                        category,
                    )
                ],
                "code": _cc(LOINC, code, display),
                "subject": {"reference": self.urn},
                "effectiveDateTime": when,
                "valueQuantity": {"value": value, "unit": unit},
            }
        )

    def med(self, code: str, display: str, status: str, when: str) -> None:
        self.add(
            {
                "resourceType": "MedicationRequest",
                "status": status,
                "intent": "order",
                "medicationCodeableConcept": _cc(RXNORM, code, display),
                "subject": {"reference": self.urn},
                "authoredOn": when,
            }
        )

    def allergy(self, code: str, display: str) -> None:
        self.add(
            {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": _status(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"
                ),
                "verificationStatus": _status(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "confirmed",
                ),
                "code": _cc(SNOMED, code, display),
                "patient": {"reference": self.urn},
                "recordedDate": "2020-01-01",
            }
        )

    def condition(self, code: str, display: str, onset: str) -> None:
        self.add(
            {
                "resourceType": "Condition",
                "clinicalStatus": _status(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
                ),
                "code": _cc(SNOMED, code, display),
                "subject": {"reference": self.urn},
                "onsetDateTime": onset,
            }
        )

    def encounter(self, start: str) -> None:
        self.add(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "type": [_cc(SNOMED, "185349003", "Encounter for check up")],
                "subject": {"reference": self.urn},
                "period": {"start": start, "end": start},
            }
        )

    def bundle(self) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


def ann() -> _Chart:
    """Ann: diabetic, an inpatient stay in May 2024 with low magnesium and potassium."""
    c = _Chart("Ann", "Tester", "1970-01-02", "female", ANN_MRN)
    c.lab(
        "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "2021-03-01T09:00:00+00:00", 6.5, "%"
    )
    c.lab(
        "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "2023-06-01T09:00:00+00:00", 7.2, "%"
    )
    mg = "Magnesium [Mass/volume] in Serum or Plasma"
    c.lab("19123-9", mg, "2024-05-01T08:00:00+00:00", 1.7, "mg/dL")
    c.lab("19123-9", mg, "2024-05-01T20:00:00+00:00", 1.4, "mg/dL")
    c.lab("19123-9", mg, "2024-05-02T08:00:00+00:00", 2.1, "mg/dL")
    glu = "Glucose [Mass/volume] in Blood"
    c.lab("2339-0", glu, "2024-04-01T08:00:00+00:00", 95.0, "mg/dL")
    c.lab("2339-0", glu, "2024-05-01T08:00:00+00:00", 110.0, "mg/dL")
    c.lab("2339-0", glu, "2024-05-01T20:00:00+00:00", 130.0, "mg/dL")
    k = "Potassium [Moles/volume] in Blood"
    c.lab("6298-4", k, "2023-01-01T08:00:00+00:00", 4.1, "mmol/L")
    c.lab("6298-4", k, "2024-05-01T08:00:00+00:00", 3.2, "mmol/L")
    c.med("860975", "Metformin 500 MG Oral Tablet", "active", "2021-03-01")
    c.med("314076", "Lisinopril 10 MG Oral Tablet", "stopped", "2019-05-05")
    c.allergy("762952008", "Peanut (substance)")
    c.condition("44054006", "Diabetes mellitus type 2 (disorder)", "2021-03-01")
    c.condition("10509002", "Acute bronchitis (disorder)", "2024-04-15")
    for start in (
        "2023-06-01T09:00:00+00:00",
        "2024-05-01T07:00:00+00:00",
        "2024-05-02T09:00:00+00:00",
    ):
        c.encounter(start)
    return c


def bob() -> _Chart:
    """Bob: hypertensive, few records, no allergies or medications."""
    c = _Chart("Bob", "Sample", "1950-06-30", "male", BOB_MRN)
    k = "Potassium [Moles/volume] in Blood"
    c.lab("6298-4", k, "2022-02-02T08:00:00+00:00", 4.4, "mmol/L")
    c.lab("6298-4", k, "2024-02-02T08:00:00+00:00", 4.4, "mmol/L")
    c.condition("38341003", "Hypertension (disorder)", "2010-01-01")
    c.encounter("2024-02-02T08:00:00+00:00")
    return c


async def load_charts(fhir: Any) -> dict[str, str]:
    """Load both charts; returns {"ann": id, "bob": id} (server-assigned Patient ids)."""
    ids = {}
    for name, chart in (("ann", ann()), ("bob", bob())):
        await fhir.transaction(chart.bundle())
        mrn = ANN_MRN if name == "ann" else BOB_MRN
        found = await fhir.search("Patient", {"identifier": mrn})
        ids[name] = str(found[0]["id"])
    return ids


def doctor_responder(diagnoses: dict[str, str], *, tests: int = 1) -> Callable[[Any], str]:
    """A scripted doctor: one question, `tests` test requests, then a diagnosis looked up by
    the case objective (so replies depend only on the conversation)."""

    def contents(messages: Any) -> list[tuple[str, str]]:
        out = []
        for m in messages:
            if isinstance(m, dict):
                out.append((str(m.get("role")), str(m.get("content"))))
            else:
                out.append((m.type, str(m.content)))
        return out

    def respond(messages: Any) -> str:
        turns = contents(messages)
        done = sum(1 for role, _ in turns if role in ("ai", "assistant"))
        system = next((text for role, text in turns if role == "system"), "")
        if done == 0:
            return "What brings you in today, and when did it start?"
        if done <= tests:
            return "REQUEST TEST: Complete_Blood_Count"
        for objective, dx in diagnoses.items():
            if objective in system:
                return f"DIAGNOSIS READY: {dx}"
        return "DIAGNOSIS READY: Unknown condition"

    return respond


@dataclass
class EvalFhir:
    """SEKMET in-process holding the two charts; `ids` are their Patient ids."""

    app: Any
    client: Any
    ids: dict[str, str]


@pytest.fixture(scope="module", name="eval_fhir")
async def eval_fhir_fixture(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EvalFhir]:
    from wardround.tests.fhir_fixtures import asgi_client, sekmet_app

    app = sekmet_app(tmp_path_factory.mktemp("sekmet-evals"))
    client = asgi_client(app)
    ids = await load_charts(client)
    yield EvalFhir(app=app, client=client, ids=ids)
    await client.aclose()
