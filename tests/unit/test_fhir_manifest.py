"""Patient manifest: types and codes with counts and date ranges, from a chart or a server."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from fhir_fixtures import FhirFixture
from wardround.fhir.manifest import Manifest, build_manifest
from wardround.testing.sample_charts import bundle_resources, handmade_resources

pytestmark = pytest.mark.asyncio(loop_scope="session")

HBA1C = ("Observation", "http://loinc.org", "4548-4")


def find(manifest: Manifest, resource_type: str, system: str | None, code: str):
    matches = [
        c for c in manifest.codes
        if (c.resource_type, c.system, c.code) == (resource_type, system, code)
    ]  # fmt: skip
    assert len(matches) == 1, (resource_type, code)
    return matches[0]


async def test_manifest_counts_types_codes_and_dates() -> None:
    manifest = Manifest.from_resources(handmade_resources(), patient_id="ex-patient")
    assert manifest.types["Observation"].count == 4
    assert manifest.types["Observation"].first == "2022-05-01"
    assert manifest.types["Observation"].last == "2023-11-12"
    assert manifest.types["Patient"].count == 1
    hba1c = find(manifest, *HBA1C)
    assert (hba1c.count, hba1c.first, hba1c.last) == (2, "2022-05-01", "2023-11-12")
    assert hba1c.display == "Hemoglobin A1c/Hemoglobin.total in Blood"
    assert hba1c.token == "http://loinc.org|4548-4"
    assert manifest.codes_for("Observation")[0].code == "4548-4"  # most frequent first
    peanut = find(manifest, "AllergyIntolerance", "http://snomed.info/sct", "91935009")
    assert peanut.display == "Allergy to peanut"


async def test_manifest_skips_shared_records_and_billing_codes() -> None:
    resources = [
        *handmade_resources(),
        {"resourceType": "Practitioner", "id": "pr", "name": [{"family": "X"}]},
        {"resourceType": "Claim", "id": "c1", "status": "active", "created": "2023-01-01",
         "type": {"coding": [{"system": "http://x", "code": "professional"}]}},
        {"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active", "startDate": "2023-02-01",
         "description": {"text": "Lose 5 kg"}},
    ]  # fmt: skip
    manifest = Manifest.from_resources(resources)
    assert "Practitioner" not in manifest.types
    assert manifest.types["Claim"].count == 1
    assert manifest.codes_for("Claim") == []
    goal = manifest.codes_for("Goal")[0]
    assert (goal.system, goal.code, goal.display, goal.token) == (None, None, "Lose 5 kg", None)


async def test_render_is_compact_and_caps_codes_per_type() -> None:
    manifest = Manifest.from_resources(handmade_resources(), patient_id="ex-patient")
    text = manifest.render()
    assert text.splitlines()[0] == "Patient/ex-patient chart: 16 records"
    assert "Observation x4 2022-05-01..2023-11-12" in text
    assert (
        "  [LOINC 4548-4] Hemoglobin A1c/Hemoglobin.total in Blood x2 2022-05-01..2023-11-12"
        in text
    )
    assert "  [SNOMED 73761001] Colonoscopy x1 2022-06-15" in text
    capped = manifest.render(max_codes_per_type=1)
    assert "  ... 2 more codes" in capped
    assert (
        "Condition x2 2015-03-02..2021-01-05\n  [SNOMED 44054006] Diabetes mellitus type 2 x1 2015-03-02\n  ... 1 more code\n"
        in capped
    )
    only = manifest.render(types=["Procedure"])
    assert only.splitlines()[1:] == [
        "Procedure x1 2022-06-15",
        "  [SNOMED 73761001] Colonoscopy x1 2022-06-15",
    ]
    assert len(capped) < len(text)


async def test_manifest_round_trips_as_json() -> None:
    manifest = Manifest.from_resources(handmade_resources(), patient_id="ex-patient")
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest


async def test_build_manifest_from_server_matches_the_loaded_chart(fhir: FhirFixture) -> None:
    manifest = await build_manifest(fhir.client, fhir.patients["diabetes"])
    chart = bundle_resources(fhir.bundles["diabetes"])
    want = Counter(r["resourceType"] for r in chart if r["resourceType"] != "Practitioner")
    assert {t: s.count for t, s in manifest.types.items()} == dict(want)
    assert manifest.patient_id == fhir.patients["diabetes"]
    assert find(manifest, *HBA1C).count == 1
    offline = Manifest.from_resources(chart)
    key = [(c.resource_type, c.system, c.code, c.count) for c in offline.codes]
    assert [(c.resource_type, c.system, c.code, c.count) for c in manifest.codes] == key


async def test_synthea_manifest_has_loinc_snomed_rxnorm_and_notes(
    synthea_fhir: FhirFixture,
) -> None:
    manifest = await build_manifest(synthea_fhir.client, synthea_fhir.patients["synthea"])
    systems = {(c.resource_type, c.system) for c in manifest.codes}
    assert ("Observation", "http://loinc.org") in systems
    assert ("Condition", "http://snomed.info/sct") in systems
    assert ("MedicationRequest", "http://www.nlm.nih.gov/research/umls/rxnorm") in systems
    assert manifest.types["DocumentReference"].count > 0
    chart = bundle_resources(synthea_fhir.bundles["synthea"])
    assert manifest.types["Observation"].count == sum(
        r["resourceType"] == "Observation" for r in chart
    )
    text = manifest.render(max_codes_per_type=10)
    assert len(text) < len(json.dumps(chart)) / 100
