"""Compact rendering: one line per resource, for every type a chart holds."""

from __future__ import annotations

import base64
import json
import re

import pytest
from fhir.resources.R4B import get_fhir_model_class

from wardround.fhir.render import render_resource, render_resources
from wardround.testing.sample_charts import (
    bundle_resources,
    carebundle_charts,
    handmade_resources,
    synthea_chart,
)


def by_id() -> dict[str, dict]:
    return {r["id"]: r for r in handmade_resources()}


EXPECTED = {
    "ex-patient": "Patient/ex-patient Ada Testwell female born 1960-02-29 MRN MRN-0042",
    "ex-hba1c-new": "Observation/ex-hba1c-new 2023-11-12 Hemoglobin A1c/Hemoglobin.total in Blood 6.1 %",
    "ex-hba1c-old": "Observation/ex-hba1c-old 2022-05-01 Hemoglobin A1c/Hemoglobin.total in Blood 7.4 % (H)",
    "ex-bp": "Observation/ex-bp 2023-11-12 Blood pressure panel with all children optional 132/84 mmHg",
    "ex-smoking": "Observation/ex-smoking 2023-11-12 Tobacco smoking status Ex-smoker",
    "ex-diabetes": "Condition/ex-diabetes 2015-03-02 Diabetes mellitus type 2 active",
    "ex-sinusitis": "Condition/ex-sinusitis 2021-01-05 Viral sinusitis (disorder) resolved 2021-01-19",
    "ex-metformin-rx": "MedicationRequest/ex-metformin-rx 2023-01-10 24 HR metformin hydrochloride 500 MG "
    "Extended Release Oral Tablet active; 1 tablet, 1x/day",
    "ex-amoxicillin-rx": "MedicationRequest/ex-amoxicillin-rx 2021-01-05 Amoxicillin 250 MG Oral Capsule stopped",
    "ex-aspirin-stmt": "MedicationStatement/ex-aspirin-stmt 2020-06-01 aspirin 81 MG Oral Tablet active; 81 mg once daily",
    "ex-peanut": "AllergyIntolerance/ex-peanut 2019-04-01 Allergy to peanut active high criticality; "
    "reaction: Hives (moderate)",
    "ex-colonoscopy": "Procedure/ex-colonoscopy 2022-06-15 Colonoscopy",
    "ex-encounter": "Encounter/ex-encounter 2023-11-12 AMB Encounter for check up; reason: Diabetes review",
    "ex-flu": "Immunization/ex-flu 2023-10-01 Influenza, seasonal, injectable, preservative free",
    "ex-a1c-report": "DiagnosticReport/ex-a1c-report 2023-11-12 Hemoglobin A1c/Hemoglobin.total in Blood "
    "(1 result): Improved glycaemic control.",
}  # fmt: skip


@pytest.mark.parametrize("resource_id", sorted(EXPECTED))
def test_each_type_renders_its_essentials(resource_id: str) -> None:
    assert render_resource(by_id()[resource_id]) == EXPECTED[resource_id]


def test_fixture_resources_are_valid_r4() -> None:
    for resource in handmade_resources():
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_document_note_is_decoded_flattened_and_clipped() -> None:
    note = by_id()["ex-note"]
    line = render_resource(note, note_chars=120)
    head = "DocumentReference/ex-note 2023-11-12 Progress note: "
    assert line.startswith(head)
    assert "Subjective: feels well" in line
    assert "\n" not in line
    assert line.endswith("…")
    assert len(line) <= len(head) + 120
    full = render_resource(note, note_chars=10_000)
    assert not full.endswith("…")
    assert "Counselled on diet." in full
    assert len(full) > len(line)


def test_binary_and_broken_attachments_do_not_break_a_line() -> None:
    pdf = {
        "resourceType": "DocumentReference", "id": "d1", "status": "current", "date": "2024-01-02",
        "type": {"text": "Discharge summary"},
        "content": [{"attachment": {"contentType": "application/pdf", "data": "JVBERi0=", "title": "summary.pdf"}}],
    }  # fmt: skip
    assert (
        render_resource(pdf)
        == "DocumentReference/d1 2024-01-02 Discharge summary: [application/pdf: summary.pdf]"
    )
    broken = json.loads(json.dumps(pdf))
    broken["content"][0]["attachment"] = {"contentType": "text/plain", "data": "!!not base64!!"}
    assert render_resource(broken).startswith("DocumentReference/d1 2024-01-02 Discharge summary")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ({"valueString": "trace\n protein"}, "Urine protein trace protein"),
        ({"valueBoolean": False}, "Urine protein no"),
        ({"valueInteger": 3}, "Urine protein 3"),
        ({"valueQuantity": {"value": 0.123456, "comparator": "<", "code": "g/L"}}, "Urine protein <0.123 g/L"),
        ({"valueRange": {"low": {"value": 1, "unit": "g"}, "high": {"value": 2, "unit": "g"}}}, "Urine protein 1 g-2 g"),
        ({"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 40}}}, "Urine protein 1/40"),
        ({"dataAbsentReason": {"text": "Sample haemolysed"}}, "Urine protein no value (Sample haemolysed)"),
    ],
)  # fmt: skip
def test_observation_value_kinds(value: dict, shown: str) -> None:
    resource = {"resourceType": "Observation", "id": "o", "status": "final",
                "code": {"text": "Urine protein"}, "effectiveDateTime": "2024-03-04T10:00:00Z", **value}  # fmt: skip
    assert render_resource(resource) == f"Observation/o 2024-03-04 {shown}"


def test_components_other_than_blood_pressure_are_listed() -> None:
    resource = {
        "resourceType": "Observation", "id": "o", "status": "preliminary", "code": {"text": "Eye exam"},
        "effectiveDateTime": "2024-03-04",
        "component": [
            {"code": {"text": "Left IOP"}, "valueQuantity": {"value": 14, "unit": "mmHg"}},
            {"code": {"text": "Right IOP"}, "valueQuantity": {"value": 15, "unit": "mmHg"}},
        ],
    }  # fmt: skip
    assert render_resource(resource) == (
        "Observation/o 2024-03-04 Eye exam Left IOP 14 mmHg; Right IOP 15 mmHg preliminary"
    )


def test_other_types_fall_back_to_date_code_and_status() -> None:
    flag = {"resourceType": "Flag", "id": "f1", "status": "active", "period": {"start": "2024-05-06"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "Fall risk"}]}}  # fmt: skip
    assert render_resource(flag) == "Flag/f1 2024-05-06 Fall risk active"
    practitioner = {
        "resourceType": "Practitioner",
        "id": "pr",
        "name": [{"given": ["Fen"], "family": "Mocklin"}],
    }
    assert render_resource(practitioner) == "Practitioner/pr Fen Mocklin"


def test_malformed_resources_still_give_a_citable_line() -> None:
    odd = {"resourceType": "Observation", "id": "o9", "code": "not-a-concept", "component": "x"}
    assert render_resource(odd).startswith("Observation/o9")


def test_patient_death_and_medication_reference() -> None:
    patient = {"resourceType": "Patient", "id": "p", "name": [{"text": "J Doe"}], "gender": "male",
               "birthDate": "1940-01-01", "deceasedDateTime": "2020-02-03T04:05:06Z"}  # fmt: skip
    assert render_resource(patient) == "Patient/p J Doe male born 1940-01-01 died 2020-02-03"
    request = {"resourceType": "MedicationRequest", "id": "m", "status": "active", "intent": "plan",
               "medicationReference": {"reference": "Medication/x", "display": "Insulin glargine"},
               "authoredOn": "2024-01-01", "dosageInstruction": [{"text": "10 units at night"}]}  # fmt: skip
    assert render_resource(request) == (
        "MedicationRequest/m 2024-01-01 Insulin glargine active plan; 10 units at night"
    )


def test_carebundle_charts_render_one_line_each() -> None:
    for bundle in carebundle_charts().values():
        resources = bundle_resources(bundle)
        for n, resource in enumerate(resources):
            resource["id"] = f"r{n}"
        lines = render_resources(resources).split("\n")
        assert len(lines) == len(resources)
        for line, resource in zip(lines, resources, strict=True):
            assert line.startswith(f"{resource['resourceType']}/{resource['id']}")
        for line in lines:
            if line.startswith("Observation/"):
                assert re.search(r"\d", line.split(" ", 2)[2]), line  # every result has a value


def test_synthea_chart_renders_labs_vitals_and_notes() -> None:
    resources = bundle_resources(json.loads(synthea_chart()))
    lines = [render_resource(r) for r in resources]
    assert all("\n" not in line for line in lines)
    assert all(
        line.startswith(f"{r['resourceType']}/{r['id']}")
        for line, r in zip(lines, resources, strict=True)
    )
    bp = [ln for ln, r in zip(lines, resources, strict=True) if r["resourceType"] == "Observation"
          and r["code"]["coding"][0]["code"] == "85354-9"]  # fmt: skip
    assert bp and all(re.search(r" \d+(\.\d+)?/\d+(\.\d+)? mm\[Hg\]$", ln) for ln in bp)
    notes = [
        ln
        for ln, r in zip(lines, resources, strict=True)
        if r["resourceType"] == "DocumentReference"
    ]
    encoded = [
        r["content"][0]["attachment"]["data"]
        for r in resources
        if r["resourceType"] == "DocumentReference"
    ]
    assert notes
    first_words = base64.b64decode(encoded[0]).decode().split()[:3]
    assert " ".join(first_words) in notes[0]
    assert all(len(ln) < 320 for ln in notes)
    quantities = [(ln, r) for ln, r in zip(lines, resources, strict=True) if "valueQuantity" in r]
    for line, resource in quantities:
        value = resource["valueQuantity"]["value"]
        assert f"{value:.3f}".rstrip("0").rstrip(".") in line
