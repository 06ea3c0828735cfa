"""Charts that are legal FHIR but unkind: missing dates, codes without displays, values
without units, a 1 MB note, mixed scripts and emoji, references to nothing, the same record
twice. Rendering, the manifest and the eval's computed answers must survive them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from wardround.evals.tasks.ehrqa import fetch_chart, questions_for
from wardround.fhir.manifest import build_manifest
from wardround.fhir.render import render_resource, render_resources
from wardround.testing.sekmet_inprocess import asgi_client, load_chart, sekmet_app

LOINC = "http://loinc.org"
PAT = {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000aa"}
BIG_NOTE = ("Плановый осмотр 🩺 患者は元気です — " * 40_000)[:1_000_000]


def _obs(code: str, display: str | None, when: str | None, value: dict[str, Any]) -> dict:
    coding = {"system": LOINC, "code": code, **({"display": display} if display else {})}
    resource = {"resourceType": "Observation", "status": "final", "code": {"coding": [coding]},
                "subject": PAT, **value}  # fmt: skip
    if when:
        resource["effectiveDateTime"] = when
    return resource


def malformed() -> list[dict[str, Any]]:
    return [
        {"resourceType": "Patient", "name": [{"family": "Ñúñez-李", "given": ["Zoë 🌸"]}],
         "gender": "unknown"},  # no birth date
        _obs("2823-3", None, None, {"valueQuantity": {"value": 4.1}}),  # no display, date, unit
        _obs("2823-3", "Potassium", "2024-01-02", {"valueQuantity": {"value": 3.9}}),
        _obs("8867-4", "Heart rate 💓", "2024-01-02", {"valueString": "régulier, 72"}),
        {"resourceType": "Condition", "code": {"coding": [{"system": "http://snomed.info/sct",
         "code": "44054006"}]}, "subject": PAT},  # no display, no onset
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "medicationReference": {"reference": "Medication/does-not-exist"}, "subject": PAT},
        {"resourceType": "DocumentReference", "status": "current", "subject": PAT,
         "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                      "data": base64.b64encode(BIG_NOTE.encode()).decode()}}]},
        {"resourceType": "Encounter", "status": "finished", "subject": PAT,
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}},
    ]  # fmt: skip


def bundle() -> dict[str, Any]:
    entries = []
    for n, resource in enumerate(malformed()):
        uid = PAT["reference"] if n == 0 else f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
        entries.append({"fullUrl": uid, "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})  # fmt: skip
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_each_resource_renders_to_one_bounded_line() -> None:
    for n, resource in enumerate(malformed()):
        line = render_resource({**resource, "id": f"r{n}"})
        assert line.startswith(f"{resource['resourceType']}/r{n}"), line
        assert len(line) < 2_000, f"{resource['resourceType']}: {len(line)} characters"
    note = render_resource({**malformed()[6], "id": "big"}, note_chars=500)
    assert "Плановый осмотр 🩺" in note and len(note) < 700


def test_the_same_record_twice_renders_twice_without_error() -> None:
    twice = [{**malformed()[2], "id": "dup"}] * 2
    text = render_resources(twice)
    assert text.count("Observation/dup") >= 1


async def chart_questions(tmp_path: Path) -> tuple[Any, dict[str, list[Any]]]:
    client = asgi_client(sekmet_app(tmp_path / "sekmet"))
    try:
        pid = await load_chart(client, json.loads(json.dumps(bundle())))
        manifest = await build_manifest(client, pid)
        return manifest, questions_for(await fetch_chart(client, pid))
    finally:
        await client.aclose()


async def test_manifest_and_computed_answers_survive(tmp_path: Path) -> None:
    manifest, questions = await chart_questions(tmp_path)
    assert "Observation" in manifest.types and "DocumentReference" in manifest.types
    (latest,) = questions["latest_value"]
    # The undated potassium (4.1) cannot be "the most recent"; the dated one is.
    assert "potassium" in latest.input and latest.target["value"] == 3.9


async def test_an_unnamed_medication_is_not_an_expected_answer(tmp_path: Path) -> None:
    _, questions = await chart_questions(tmp_path)
    for question in questions["active_medications"]:
        assert "?" not in question.target["expected"], question.target
