"""The Patient compartment check (fhir/compartment.py) and how the client applies it on SEKMET.

SEKMET 0.1.1 has no `patient` search parameter for CareTeam, Composition, ClinicalImpression
and FamilyMemberHistory and answers `CareTeam?patient=X` with every patient's CareTeams; the
client must leave such types out (or search them by `subject`) and never return another
patient's records.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from fhir_fixtures import FhirFixture, RecordingTransport
from wardround.fhir.client import (
    FhirClient,
    FhirForeignRecord,
    FhirUnsupportedSearch,
    refuses,
    search_params_of,
)
from wardround.fhir.compartment import COMPARTMENT, DroppedRecord, belongs_to, owner_id
from wardround.fhir.manifest import build_manifest
from wardround.fhir.records import RECORD_TYPES, fetch_records
from wardround.graphs.copilot.audit import DROPPED, AuditLog, audit_dropped_records
from wardround.testing.sekmet_inprocess import BASE_URL, load_chart, sekmet_app

ME, OTHER = "p-me", "p-other"
# Types SEKMET 0.1.1 has no `patient` (nor `subject`) search for: its CapabilityStatement
# leaves them out and it answers 400 under strict handling (Goal and SupplyDelivery too).
SEKMET_WITHOUT_PATIENT = (
    "CareTeam", "ClinicalImpression", "Composition", "FamilyMemberHistory", "Goal",
    "SupplyDelivery",
)  # fmt: skip


def ref(pid: str) -> dict[str, str]:
    return {"reference": f"Patient/{pid}"}


# ----------------------------------------------------------- the definition itself


@pytest.mark.parametrize(
    ("resource", "mine"),
    [
        ({"resourceType": "Patient", "id": ME}, True),
        ({"resourceType": "Patient", "id": OTHER, "link": [{"other": ref(ME)}]}, False),
        ({"resourceType": "Observation", "subject": ref(ME)}, True),
        ({"resourceType": "Observation", "subject": ref(OTHER)}, False),
        ({"resourceType": "Observation", "subject": {"reference": f"http://x/fhir/Patient/{ME}"}}, True),
        ({"resourceType": "Observation", "subject": {"reference": f"Patient/{ME}/_history/2"}}, True),
        ({"resourceType": "Observation", "subject": {"reference": f"Patient/{ME}x"}}, False),
        # by Ann about Bob: Bob's result, though the definition puts it in both compartments
        ({"resourceType": "Observation", "subject": ref(OTHER), "performer": [ref(ME)]}, False),
        ({"resourceType": "Observation", "performer": [ref(ME)]}, True),
        ({"resourceType": "Observation"}, False),  # names nobody: not shown as anyone's
        ({"resourceType": "CareTeam", "subject": ref(OTHER)}, False),
        ({"resourceType": "CareTeam", "participant": [{"member": ref(ME)}]}, True),
        ({"resourceType": "Immunization", "patient": ref(ME)}, True),
        ({"resourceType": "Coverage", "beneficiary": ref(OTHER), "payor": [ref(ME)]}, False),
        ({"resourceType": "Appointment", "participant": [{"actor": ref(OTHER)}, {"actor": ref(ME)}]}, True),
        ({"resourceType": "Appointment", "participant": [{"actor": ref(OTHER)}]}, False),
        ({"resourceType": "Practitioner", "id": "dr"}, True),  # shared, in no compartment
        ({"resourceType": "Medication", "id": "m"}, True),
        ({"resourceType": "Task", "for": ref(OTHER)}, False),  # outside it, but names another
        ({"resourceType": "Device", "patient": ref(ME)}, True),
    ],
)  # fmt: skip
def test_belongs_to_follows_the_r4_patient_compartment(resource: dict, mine: bool) -> None:
    assert belongs_to(resource, ME) is mine


def test_the_table_covers_every_record_type_the_tools_search() -> None:
    outside = {t for t in RECORD_TYPES if t not in COMPARTMENT}
    assert outside == {"Device"}  # R4 keeps Device out; Device.patient is checked instead
    assert owner_id({"resourceType": "Condition", "subject": ref(OTHER)}) == OTHER
    assert owner_id({"resourceType": "Device", "patient": ref(ME)}) == ME


def test_a_refused_parameter_is_told_from_a_list_of_valid_ones() -> None:
    assert refuses("Unknown search parameter 'patient' for CareTeam; parameter ignored", "patient")
    hapi = 'Unknown search parameter "code:text" for resource type "Observation". '
    assert not refuses(
        hapi + "Valid search parameters for this search are: [patient, code]", "patient"
    )
    assert refuses('Unknown search parameter "patient" for resource type "CareTeam".', "patient")
    assert not refuses("Unknown search parameter 'patient-name' for X", "patient")


def test_search_parameters_from_a_capability_statement() -> None:
    statement = {"rest": [{"mode": "server", "resource": [
        {"type": "CareTeam", "searchParam": [{"name": "subject"}, {"name": "status"}]},
        {"type": "Basic"},
    ]}]}  # fmt: skip
    assert search_params_of(statement) == {"CareTeam": frozenset({"subject", "status"})}


# --------------------------------------------------------- the client on SEKMET


def team_chart(family: str) -> dict[str, Any]:
    """A Patient with one record of each type SEKMET cannot search by patient, and a result."""
    pat = {"reference": f"urn:uuid:{family}-0000-4000-8000-000000000001"}
    resources = [
        {"resourceType": "Patient", "name": [{"family": family}], "gender": "female"},
        {"resourceType": "CareTeam", "status": "active", "name": f"{family} team", "subject": pat},
        {"resourceType": "FamilyMemberHistory", "status": "completed", "patient": pat,
         "relationship": {"text": "mother"}},
        {"resourceType": "ClinicalImpression", "status": "completed", "subject": pat},
        {"resourceType": "Composition", "status": "final", "type": {"text": "summary"},
         "subject": pat, "date": "2024-01-01", "author": [{"display": "Dr A"}], "title": "Summary"},
        {"resourceType": "Observation", "status": "final", "code": {"text": "Heart rate"},
         "subject": pat, "effectiveDateTime": "2024-01-01", "valueQuantity": {"value": 60}},
    ]  # fmt: skip
    entries = []
    for n, resource in enumerate(resources, start=1):
        uid = f"{family}-0000-4000-8000-{n:012d}"
        entries.append({"fullUrl": f"urn:uuid:{uid}", "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})  # fmt: skip
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture(scope="module")
async def teams(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """SEKMET with three patients, each with a CareTeam, Composition, ... of their own."""
    app = sekmet_app(tmp_path_factory.mktemp("sekmet-teams"))
    fixture = FhirFixture(
        app=app, client=FhirClient(BASE_URL, transport=httpx.ASGITransport(app=app))
    )
    for family in ("aaaaaaaa", "bbbbbbbb", "cccccccc"):
        fixture.patients[family] = await load_chart(fixture.client, team_chart(family))
    yield fixture
    await fixture.client.aclose()


def fresh(fixture: FhirFixture) -> tuple[FhirClient, RecordingTransport]:
    recorder = RecordingTransport(httpx.ASGITransport(app=fixture.app))
    return FhirClient(BASE_URL, transport=recorder, backoff_s=0.0), recorder


async def test_sekmet_says_it_ignores_patient_for_care_teams(teams: FhirFixture) -> None:
    """What the client guards against, measured on the raw server."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=teams.app)) as http:
        body = (await http.get(f"{BASE_URL}/CareTeam", params={"patient": "x"})).json()
    outcomes = [e for e in body["entry"] if e["resource"]["resourceType"] == "OperationOutcome"]
    assert len(body["entry"]) - len(outcomes) == 3  # every patient's
    assert "parameter ignored" in json.dumps(outcomes)


async def test_types_without_a_patient_search_are_left_out_with_the_reason(
    teams: FhirFixture,
) -> None:
    client, recorder = fresh(teams)
    async with client:
        reasons = await client.unsearchable([*SEKMET_WITHOUT_PATIENT, "Observation"])
        for rtype in SEKMET_WITHOUT_PATIENT:
            with pytest.raises(FhirUnsupportedSearch, match=f"cannot search {rtype} by patient"):
                await client.search(rtype, {"patient": teams.patients["aaaaaaaa"]})
        assert len(await client.search("Observation", {"patient": teams.patients["aaaaaaaa"]})) == 1
    assert set(reasons) == set(SEKMET_WITHOUT_PATIENT)
    assert "CapabilityStatement" in reasons["CareTeam"]
    metadata = [r for r in recorder.requests if r.url.path.endswith("/metadata")]
    assert len(metadata) == 1  # read once per client
    searches = [r for r in recorder.requests if not r.url.path.endswith("/metadata")]
    assert all(r.headers["prefer"] == "handling=strict" for r in searches)
    assert not any(r.url.path.endswith(t) for r in searches for t in reasons)  # never asked


async def test_care_teams_come_back_only_as_the_patients_own(teams: FhirFixture) -> None:
    """Through `subject=` where SEKMET has it, or not at all."""
    client, _ = fresh(teams)
    async with client:
        pid = teams.patients["aaaaaaaa"]
        for rtype in SEKMET_WITHOUT_PATIENT:
            try:
                found = await client.search(rtype, {"patient": pid})
            except FhirUnsupportedSearch:
                continue
            assert found and all(belongs_to(r, pid) for r in found)
        chart = await client.everything(pid)
        manifest = await build_manifest(client, pid)
    assert all(belongs_to(r, pid) for r in chart)
    assert "CareTeam" not in manifest.types and "CareTeam" in manifest.left_out
    assert "Left out: CareTeam" in manifest.render() and client.dropped == 0


class Lenient(httpx.AsyncBaseTransport):
    """SEKMET as a server that does not know `Prefer: handling=strict` (the header dropped)."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        del request.headers["prefer"]
        return await self.inner.handle_async_request(request)


async def test_a_refusal_under_strict_handling_means_unsupported(teams: FhirFixture) -> None:
    """A server whose CapabilityStatement is silent is caught by its 400 under strict..."""
    client, _ = fresh(teams)
    client._search_params = {}  # as if the statement listed no search parameters
    async with client:
        with pytest.raises(FhirUnsupportedSearch, match="refused `patient` under strict"):
            await fetch_records(client, teams.patients["aaaaaaaa"], "CareTeam")
        assert "CareTeam" in await client.unsearchable(["CareTeam"])


async def test_an_ignored_patient_parameter_in_the_bundle_means_unsupported(
    teams: FhirFixture,
) -> None:
    """... and, where strict handling is not known, by the OperationOutcome in its Bundle."""
    client = FhirClient(BASE_URL, transport=Lenient(teams.app), backoff_s=0.0)
    client._search_params = {}
    async with client:
        with pytest.raises(FhirUnsupportedSearch, match="parameter ignored"):
            await fetch_records(client, teams.patients["aaaaaaaa"], "CareTeam")
        assert client.dropped == 0  # refused before any record was looked at


async def test_drops_are_counted_logged_and_audited(
    teams: FhirFixture, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    me, other = teams.patients["aaaaaaaa"], teams.patients["bbbbbbbb"]
    audit = AuditLog(tmp_path / "audit.jsonl")
    handler = audit_dropped_records(audit)
    seen: list[DroppedRecord] = []
    client, _ = fresh(teams)
    client.on_drop(seen.append)
    theirs = (await teams.client.search("Observation", {"patient": other}))[0]
    try:
        async with client:
            with caplog.at_level(logging.WARNING, "wardround.fhir.compartment"):
                with pytest.raises(FhirForeignRecord):
                    await client.read(f"Observation/{theirs['id']}", patient_id=me)
                kept = client.compartment.keep([theirs], me, "test")
    finally:
        logging.getLogger("wardround.fhir.compartment").removeHandler(handler)
    assert kept == [] and client.dropped == 2 and len(seen) == 2
    assert seen[0] == DroppedRecord(BASE_URL, me, "Observation", theirs["id"], seen[0].via)
    assert f"Observation/{theirs['id']}" in caplog.text
    entries = [e for e in audit.entries() if e["action"] == DROPPED]
    assert len(entries) == 2 and entries[0]["server"] == BASE_URL
    assert entries[0]["resource_type"] == "Observation" and entries[0]["patient"] == me


async def test_the_carebundle_charts_lose_nothing(fhir: FhirFixture) -> None:
    """On honest data the check drops no record of the patient's own."""
    client, _ = fresh(fhir)
    async with client:
        for pid in fhir.patients.values():
            await client.everything(pid)
            for rtype in RECORD_TYPES:
                try:
                    await fetch_records(client, pid, rtype, limit=500)
                except FhirUnsupportedSearch:
                    assert rtype in SEKMET_WITHOUT_PATIENT
    assert client.dropped == 0


async def test_a_type_with_only_subject_is_searched_by_subject(teams: FhirFixture) -> None:
    client, recorder = fresh(teams)
    client._search_params = {"Observation": frozenset({"subject", "code"})}  # no `patient`
    async with client:
        pid = teams.patients["aaaaaaaa"]
        found = await fetch_records(client, pid, "Observation")
    assert len(found) == 1 and belongs_to(found[0], pid)
    (sent,) = [r.url.params for r in recorder.requests if "subject" in r.url.params]
    assert sent["subject"] == f"Patient/{pid}" and "patient" not in sent
