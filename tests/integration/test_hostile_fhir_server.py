"""No other patient's record leaves the FHIR layer: a hostile server, SEKMET, and Medplum.

The hostile server (`wardround.testing.hostile_fhir`) sits in front of SEKMET and claims
`patient` for every type, ignores it for the types SEKMET lacks it for, ignores strict
handling, mixes other patients' records into every page, `_include` and `$everything`, and
(in one test) returns another Patient for `Patient/{id}`. Every way records come out of the
client is checked: `fetch_records`, `everything()`, `build_manifest`, the FHIR tools and the
chart panel. Whether a record is foreign is read from its JSON (`names_another`), not from
the client's compartment table.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import ToolMessage

from wardround.fhir.client import FhirClient, FhirForeignRecord, FhirUnsupportedSearch
from wardround.fhir.manifest import NON_CHART_TYPES, build_manifest
from wardround.fhir.records import RECORD_TYPES, fetch_records
from wardround.server.chart import chart_summary, patient_record, result_trend
from wardround.testing import medplum_server
from wardround.testing.hostile_fhir import HostileTransport, names_another
from wardround.testing.sample_charts import carebundle_charts, handmade_chart
from wardround.testing.sekmet_inprocess import BASE_URL, load_chart, sekmet_app
from wardround.tools.fhir.tools import make_fhir_tools

pytestmark = pytest.mark.integration

TEAM_FAMILIES = ("aaaaaaaa", "bbbbbbbb", "cccccccc")
A1C = "http://loinc.org|4548-4"


def team_chart(family: str) -> dict[str, Any]:
    """A Patient with a CareTeam, FamilyMemberHistory, Composition, ClinicalImpression, an
    Observation and a DiagnosticReport: the types SEKMET cannot search by patient, and two
    it can."""
    pat = {"reference": f"urn:uuid:{family}-0000-4000-8000-000000000001"}
    obs = {"reference": f"urn:uuid:{family}-0000-4000-8000-000000000006"}
    resources = [
        {"resourceType": "Patient", "name": [{"family": family}], "gender": "female"},
        {"resourceType": "CareTeam", "status": "active", "name": f"{family} team", "subject": pat},
        {"resourceType": "FamilyMemberHistory", "status": "completed", "patient": pat,
         "relationship": {"text": "mother"}},
        {"resourceType": "ClinicalImpression", "status": "completed", "subject": pat},
        {"resourceType": "Composition", "status": "final", "type": {"text": "summary"},
         "subject": pat, "date": "2024-01-01", "author": [{"display": "Dr A"}], "title": "Summary"},
        {"resourceType": "Observation", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}], "text": "HbA1c"},
         "subject": pat, "effectiveDateTime": "2024-01-01",
         "valueQuantity": {"value": 6.5, "unit": "%"}},
        {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "HbA1c"},
         "subject": pat, "effectiveDateTime": "2024-01-01", "result": [obs]},
    ]  # fmt: skip
    entries = [
        {
            "fullUrl": f"urn:uuid:{family}-0000-4000-8000-{n:012d}",
            "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]},
        }
        for n, resource in enumerate(resources, start=1)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@dataclass
class Server:
    """A FHIR server with the charts loaded; `client()` makes a fresh client to it."""

    name: str
    base_url: str
    transport: Callable[[], httpx.AsyncBaseTransport]
    patients: dict[str, str] = field(default_factory=dict)
    raw: Callable[[], httpx.AsyncBaseTransport] | None = None  # the server behind a proxy
    transports: list[httpx.AsyncBaseTransport] = field(default_factory=list)

    def client(self) -> FhirClient:
        self.transports.append(self.transport())
        return FhirClient(self.base_url, transport=self.transports[-1], backoff_s=0.0, timeout=120)

    def injected(self) -> int:
        """How many foreign records the last client's hostile server slipped in (0: honest)."""
        last = self.transports[-1] if self.transports else None
        return len(last.injected) if isinstance(last, HostileTransport) else 0

    async def record(self, reference: str) -> dict[str, Any]:
        """A record read straight from the real server (the oracle's source)."""
        async with httpx.AsyncClient(transport=(self.raw or self.transport)(), timeout=60) as http:
            return (await http.get(f"{self.base_url}/{reference}")).json()


def charts() -> dict[str, dict]:
    teams = {family: team_chart(family) for family in TEAM_FAMILIES}
    return {**carebundle_charts(), "handmade": handmade_chart(), **teams}


async def loaded(server: Server) -> Server:
    loader = FhirClient(server.base_url, transport=(server.raw or server.transport)(), timeout=300)
    async with loader:
        for label, bundle in charts().items():
            server.patients[label] = await load_chart(loader, json.loads(json.dumps(bundle)))
    return server


@pytest.fixture(scope="module", params=["hostile", "sekmet", "medplum"])
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    if request.param == "medplum":
        try:
            medplum_server.check_node()
        except medplum_server.MedplumUnavailable as exc:
            pytest.skip(f"Medplum needs Node.js: {exc}")
        with medplum_server.medplum_server(tmp_path_factory.mktemp("medplum")) as record:
            yield await loaded(Server("medplum", record.base_url, httpx.AsyncHTTPTransport))
        return
    app = sekmet_app(tmp_path_factory.mktemp(request.param))

    def plain() -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=app)

    if request.param == "sekmet":
        yield await loaded(Server("sekmet", BASE_URL, plain))
        return

    def hostile() -> httpx.AsyncBaseTransport:
        return HostileTransport(plain(), BASE_URL)

    yield await loaded(Server("hostile", BASE_URL, hostile, raw=plain))


def attacked(server: Server) -> None:
    """On the hostile server, the last client was really sent other patients' records."""
    assert server.name != "hostile" or server.injected() > 0


def foreign(resources: list[dict[str, Any]], pid: str) -> list[str]:
    return [f"{r['resourceType']}/{r.get('id')}" for r in resources if names_another(r, pid)]


async def foreign_refs(server: Server, refs: list[str], pid: str) -> list[str]:
    """The references (as cited by tools and the page) whose record is not `pid`'s."""
    return [ref for ref in refs if names_another(await server.record(ref), pid)]


def labels() -> list[str]:
    return ["handmade", "diabetes", TEAM_FAMILIES[0]]


# ------------------------------------------------------------------ the client


async def test_fetch_records_returns_only_the_patients_own(server: Server) -> None:
    client = server.client()
    async with client:
        left_out: set[str] = set()
        for label in labels():
            pid = server.patients[label]
            for rtype in (*RECORD_TYPES, "Composition", "FamilyMemberHistory"):
                try:
                    found = await records_of(client, pid, rtype)
                except FhirUnsupportedSearch:
                    left_out.add(rtype)
                    continue
                assert foreign(found, pid) == [], (label, rtype)
            teams = await fetch_team(client, server.patients[TEAM_FAMILIES[0]])
            assert teams in (None, 1)
    if server.name == "sekmet":
        assert "CareTeam" in left_out and "FamilyMemberHistory" in left_out
    else:
        assert left_out == set()
    if server.name == "hostile":  # the attack happened, and every injected record was dropped
        assert client.dropped >= server.injected() > 0


async def records_of(client: FhirClient, pid: str, rtype: str) -> list[dict[str, Any]]:
    """`fetch_records` for the tools' types, a plain patient search for the others."""
    if rtype in RECORD_TYPES:
        return await fetch_records(client, pid, rtype, limit=200)
    return await client.search(rtype, {"patient": pid})


async def fetch_team(client: FhirClient, pid: str) -> int | None:
    """How many CareTeams come back for a team patient (each has one); None: left out."""
    try:
        return len(await fetch_records(client, pid, "CareTeam"))
    except FhirUnsupportedSearch:
        return None


async def test_includes_bring_no_other_patient(server: Server) -> None:
    client = server.client()
    async with client:
        pid = server.patients["handmade"]
        params = {"patient": pid, "_include": "Observation:subject"}
        found = await client.search("Observation", params)
    assert found and foreign(found, pid) == []
    attacked(server)


async def test_everything_and_the_manifest_hold_only_the_patient(server: Server) -> None:
    client = server.client()
    async with client:
        for label in labels():
            pid = server.patients[label]
            chart = await client.everything(pid)
            assert chart and foreign(chart, pid) == [], label
            manifest = await build_manifest(client, pid)
            own = [r for r in chart if r["resourceType"] not in manifest.left_out]
            counted = {t: s.count for t, s in manifest.types.items()}
            expected = expected_counts(own)
            # A server without $everything (Medplum) is read per type: the manifest may read
            # types everything()'s fallback list leaves out (the patient's own CareTeam).
            assert {t: counted.get(t) for t in expected} == expected, label
            if label in TEAM_FAMILIES and "CareTeam" in manifest.types:  # theirs, or none
                assert manifest.types["CareTeam"].count == 1
    attacked(server)


def expected_counts(resources: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in resources:
        if r["resourceType"] not in NON_CHART_TYPES:
            counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
    return counts


# --------------------------------------------------------------- the tools


async def call(tools: dict[str, Any], name: str, **args: Any) -> ToolMessage:
    message = await tools[name].ainvoke(
        {"type": "tool_call", "id": "1", "name": name, "args": args}
    )
    assert isinstance(message, ToolMessage)
    return message


async def test_the_tools_cite_and_show_only_the_patients_records(server: Server) -> None:
    client = server.client()
    async with client:
        for label in labels():
            pid = server.patients[label]
            tools = {t.name: t for t in make_fhir_tools(client, patient_id=pid)}
            cited: list[str] = []
            manifest = await call(tools, "patient_manifest")
            cited += manifest.artifact
            for rtype in RECORD_TYPES:
                message = await call(tools, "search_records", resource_type=rtype, limit=100)
                if "cannot search" in str(message.content):
                    assert server.name == "sekmet" and "Left out:" in str(manifest.content)
                cited += message.artifact
            reports = [r for r in cited if r.startswith("DiagnosticReport/")]
            for ref in reports[:2]:
                cited += (await call(tools, "read_record", reference=ref)).artifact
            assert cited and await foreign_refs(server, cited, pid) == [], label
    attacked(server)


async def test_the_tools_refuse_a_named_foreign_record(server: Server) -> None:
    me, other = server.patients[TEAM_FAMILIES[0]], server.patients[TEAM_FAMILIES[1]]
    async with server.client() as client:
        theirs = await fetch_records(client, other, "Observation")
        tools = {t.name: t for t in make_fhir_tools(client, patient_id=me)}
        before = client.dropped
        message = await call(tools, "read_record", reference=f"Observation/{theirs[0]['id']}")
        assert message.artifact == [] and "is not a record of" in str(message.content)
        assert client.dropped == before + 1


# ---------------------------------------------------------- the chart panel


async def test_the_chart_panel_shows_only_the_patient(server: Server) -> None:
    async with server.client() as client:
        for label in labels():
            pid = server.patients[label]
            summary = await chart_summary(client, pid)
            refs = [item.ref for item in _items(summary)]
            assert await foreign_refs(server, refs, pid) == [], label
            assert summary.patient.ref == f"Patient/{pid}"
        pid = server.patients[TEAM_FAMILIES[0]]
        trend = await result_trend(client, pid, A1C)
        points = [p.ref for s in trend.series for p in s.points]
        assert points and await foreign_refs(server, points, pid) == []
        other = await fetch_records(client, server.patients[TEAM_FAMILIES[1]], "Observation")
        with pytest.raises((PermissionError, FhirForeignRecord)):
            await patient_record(client, pid, f"Observation/{other[0]['id']}")
    attacked(server)


def _items(summary: Any) -> list[Any]:
    groups = [summary.problems, summary.medications, summary.allergies, summary.vitals]
    groups += [summary.labs, summary.other_results]
    return [item for group in groups for item in group]


async def test_another_patient_for_patient_id_is_refused(server: Server, tmp_path: Path) -> None:
    if server.name != "hostile":
        pytest.skip("only the hostile server swaps Patients")
    assert server.raw is not None
    swapped = HostileTransport(server.raw(), BASE_URL, swap_patient_reads=True)
    async with FhirClient(BASE_URL, transport=swapped, backoff_s=0.0) as client:
        pid = server.patients["handmade"]
        with pytest.raises(FhirForeignRecord):
            await chart_summary(client, pid)
        tools = {t.name: t for t in make_fhir_tools(client, patient_id=pid)}
        message = await call(tools, "read_record", reference=f"Patient/{pid}")
        assert message.artifact == [] and "Patient/" in str(message.content)
        assert client.dropped == 2 and swapped.injected
