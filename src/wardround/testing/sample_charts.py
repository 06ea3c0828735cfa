"""Small synthetic charts with known contents, for demos, benches and tests.

- `carebundle_charts()`: three small coherent charts from carebundle (the dev extra).
- `handmade_chart()`: one hand-written chart holding every resource type the renderer knows,
  the types carebundle does not make among them.
- `ann()` and `bob()`: two charts whose answers are known (latest values, counts, allergies),
  found again by their MRNs (`ANN_MRN`, `BOB_MRN`).
- `synthea_chart()`: one PySynthea patient's whole-life record (the stack extra).

Every chart is a FHIR R4 transaction Bundle with urn references; load one with
`stack.sekmet_inprocess.load_chart` or POST it to any FHIR server's base URL.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from wardround.fhir.client import FhirClient

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}

# The known charts' medical record numbers, by which they are found again after loading.
ANN_MRN, BOB_MRN = "1234567", "7654321"

NOTE_TEXT = (
    "Progress note 2023-11-12.\n\nSubjective: feels well, walking 30 minutes daily.\n"
    "Objective: BP 132/84 mmHg, HbA1c 6.1 % (down from 7.4 %).\n"
    "Assessment: type 2 diabetes, improving control on metformin.\n"
    "Plan: continue metformin 500 mg once daily; recheck HbA1c in 6 months; "
    "dietitian follow-up; annual retinal screening due in January. " + "Counselled on diet. " * 20
)


# ------------------------------------------------------------ carebundle


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


# ------------------------------------------------------------ hand-made


def _entry(uid: str, resource: dict) -> dict:
    return {
        "fullUrl": f"urn:uuid:{uid}",
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def _cc(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _handmade_results(pat: dict, enc: dict, hba1c_new: dict) -> list[dict]:
    """The hand-made chart's results: HbA1c twice, a blood pressure panel, smoking status."""
    return [
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
    ]  # fmt: skip


def _handmade_problems_and_medicines(pat: dict, enc: dict, hba1c_new: dict) -> list[dict]:
    """Its conditions, prescriptions, a medication statement and an allergy."""
    return [
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
    ]  # fmt: skip


def _handmade_care(pat: dict, enc: dict, hba1c_new: dict) -> list[dict]:
    """Its procedure, immunization, report and progress note."""
    return [
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
        *_handmade_results(pat, enc, hba1c_new),
        *_handmade_problems_and_medicines(pat, enc, hba1c_new),
        *_handmade_care(pat, enc, hba1c_new),
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


def bundle_resources(bundle: dict) -> list[dict]:
    """The resources of a Bundle, in entry order."""
    return [e["resource"] for e in bundle.get("entry", [])]


# ------------------------------------------------------------ Ann and Bob


class ChartBuilder:
    """A transaction Bundle for one patient, built a record at a time."""

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


def ann() -> ChartBuilder:
    """Ann: diabetic, an inpatient stay in May 2024 with low magnesium and potassium."""
    c = ChartBuilder("Ann", "Tester", "1970-01-02", "female", ANN_MRN)
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


def bob() -> ChartBuilder:
    """Bob: hypertensive, few records, no allergies or medications."""
    c = ChartBuilder("Bob", "Sample", "1950-06-30", "male", BOB_MRN)
    k = "Potassium [Moles/volume] in Blood"
    c.lab("6298-4", k, "2022-02-02T08:00:00+00:00", 4.4, "mmol/L")
    c.lab("6298-4", k, "2024-02-02T08:00:00+00:00", 4.4, "mmol/L")
    c.condition("38341003", "Hypertension (disorder)", "2010-01-01")
    c.encounter("2024-02-02T08:00:00+00:00")
    return c


async def load_ann_and_bob(fhir: FhirClient) -> dict[str, str]:
    """Load both charts; returns {"ann": id, "bob": id} (server-assigned Patient ids)."""
    ids = {}
    for name, chart in (("ann", ann()), ("bob", bob())):
        await fhir.transaction(chart.bundle())
        mrn = ANN_MRN if name == "ann" else BOB_MRN
        found = await fhir.search("Patient", {"identifier": mrn})
        ids[name] = str(found[0]["id"])
    return ids


# ------------------------------------------------------------ PySynthea


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
