"""FHIR tools on a real in-process SEKMET: results, citations, validation, injection, writes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool

from fhir_fixtures import FhirFixture, RecordingTransport
from wardround.fhir.client import FhirClient
from wardround.fhir.records import fetch_records
from wardround.runtime.procs import free_port
from wardround.testing.sekmet_inprocess import BASE_URL
from wardround.tools.evidence import REQUIRES_APPROVAL
from wardround.tools.fhir.tools import make_fhir_tools

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAMES = [
    "find_patient", "patient_manifest", "search_records", "read_record",
    "create_observation", "create_medication_request", "create_service_request",
]  # fmt: skip


def tools_for(fixture: FhirFixture, label: str | None = "handmade") -> dict[str, BaseTool]:
    pid = fixture.patients[label] if label else None
    return {t.name: t for t in make_fhir_tools(fixture.client, patient_id=pid)}


def recorded_tools(
    fixture: FhirFixture, label: str = "handmade"
) -> tuple[dict[str, BaseTool], RecordingTransport]:
    transport = RecordingTransport(httpx.ASGITransport(app=fixture.app))
    client = FhirClient(BASE_URL, transport=transport, backoff_s=0)
    tools = make_fhir_tools(client, patient_id=fixture.patients[label])
    return {t.name: t for t in tools}, transport


async def call(tool: BaseTool, **args: Any) -> ToolMessage:
    message = await tool.ainvoke(
        {"type": "tool_call", "id": "call-1", "name": tool.name, "args": args}
    )
    assert isinstance(message, ToolMessage)
    return message


def failed(message: ToolMessage) -> bool:
    return str(message.content).startswith("Error") and not message.artifact


# ------------------------------------------------------------------ shape


async def test_tool_set_schemas_and_approval_flags(fhir: FhirFixture) -> None:
    bound = make_fhir_tools(fhir.client, patient_id=fhir.patients["handmade"])
    assert [t.name for t in bound] == NAMES
    for tool in bound:
        assert tool.response_format == "content_and_artifact"
        assert bool((tool.metadata or {}).get(REQUIRES_APPROVAL)) == tool.name.startswith("create_")
        assert "patient_id" not in tool.args
    unbound = {t.name: t for t in make_fhir_tools(fhir.client)}
    for name in ("patient_manifest", "search_records", "create_observation"):
        assert "patient_id" in unbound[name].tool_call_schema.model_json_schema()["required"]
    assert "patient_id" not in unbound["read_record"].args
    with pytest.raises(ValueError):
        make_fhir_tools(fhir.client, patient_id="bad id")


# ----------------------------------------------------------------- reads


async def test_latest_hba1c_is_found_and_cited(fhir: FhirFixture) -> None:
    tools = tools_for(fhir)
    message = await call(
        tools["search_records"], resource_type="Observation", code="4548-4", limit=1
    )
    assert "6.1 %" in message.content and "7.4" not in message.content
    (ref,) = message.artifact
    assert ref.startswith("Observation/") and ref in message.content
    assert (await fhir.client.read(ref))["valueQuantity"]["value"] == 6.1


async def test_text_search_finds_words_anywhere_in_the_name(fhir: FhirFixture) -> None:
    # SEKMET's :text is a prefix match; "a1c" is found by matching words locally instead.
    tools = tools_for(fhir)
    message = await call(
        tools["search_records"], resource_type="Observation", text="a1c", sort="date"
    )
    lines = message.content.splitlines()
    assert "oldest first" in lines[0]
    assert "7.4 %" in lines[1] and "6.1 %" in lines[2]
    assert len(message.artifact) == 2


async def test_status_and_date_filters(fhir: FhirFixture) -> None:
    tools = tools_for(fhir)
    active = await call(tools["search_records"], resource_type="MedicationRequest", status="active")
    assert "metformin" in active.content and "Amoxicillin" not in active.content
    assert len(active.artifact) == 1
    recent = await call(tools["search_records"], resource_type="Condition", date_from="2020-01-01")
    assert "sinusitis" in recent.content and "Diabetes" not in recent.content
    allergies = await call(
        tools["search_records"], resource_type="AllergyIntolerance", status="active"
    )
    assert "Allergy to peanut active high criticality" in allergies.content


async def test_empty_result_lists_the_codes_the_chart_holds(fhir: FhirFixture) -> None:
    message = await call(
        tools_for(fhir)["search_records"], resource_type="Observation", code="2345-7"
    )
    assert message.content.startswith("No Observation records match (code=2345-7).")
    assert "4548-4" in message.content  # the chart's HbA1c code, to search next
    assert message.artifact == [f"Patient/{fhir.patients['handmade']}"]
    unfiltered = await call(tools_for(fhir)["search_records"], resource_type="ImagingStudy")
    assert unfiltered.content == "No ImagingStudy records match (no filters)."


async def test_a_status_the_type_does_not_have_is_refused_with_its_codes(
    fhir: FhirFixture,
) -> None:
    message = await call(
        tools_for(fhir)["search_records"], resource_type="Observation", status="active"
    )
    assert "Observation has no status 'active'" in message.content
    assert "final" in message.content and message.artifact == []


async def test_manifest_tool_cites_the_patient(fhir: FhirFixture) -> None:
    message = await call(tools_for(fhir)["patient_manifest"])
    assert "[LOINC 4548-4] Hemoglobin A1c/Hemoglobin.total in Blood x2" in message.content
    assert message.artifact == [f"Patient/{fhir.patients['handmade']}"]
    one_type = await call(tools_for(fhir)["patient_manifest"], resource_type="MedicationRequest")
    lines = one_type.content.splitlines()
    assert lines[1] == "MedicationRequest x2 2021-01-05..2023-01-10"
    assert len(lines) == 4 and "Observation" not in one_type.content


async def test_read_report_brings_its_results(fhir: FhirFixture) -> None:
    tools = tools_for(fhir)
    reports = await call(tools["search_records"], resource_type="DiagnosticReport")
    message = await call(tools["read_record"], reference=reports.artifact[0])
    assert message.artifact[0] == reports.artifact[0]
    assert message.artifact[1].startswith("Observation/")
    assert "6.1 %" in message.content.splitlines()[1]


async def test_read_note_gives_the_full_text(fhir: FhirFixture) -> None:
    tools = tools_for(fhir)
    notes = await call(tools["search_records"], resource_type="DocumentReference")
    assert notes.content.rstrip().endswith("…")
    full = await call(tools["read_record"], reference=notes.artifact[0])
    assert "annual retinal screening due in January" in full.content


async def test_bound_tools_refuse_other_patients_records(fhir: FhirFixture) -> None:
    other = await fhir.client.search(
        "Observation", {"patient": fhir.patients["diabetes"], "_count": 1}, limit=1
    )
    message = await call(tools_for(fhir)["read_record"], reference=f"Observation/{other[0]['id']}")
    assert failed(message)
    assert "is not a record of Patient/" in message.content
    patient = await call(
        tools_for(fhir)["read_record"], reference=f"Patient/{fhir.patients['diabetes']}"
    )
    assert failed(patient)


async def test_missing_record_is_reported_as_text(fhir: FhirFixture) -> None:
    message = await call(tools_for(fhir)["read_record"], reference="Observation/does-not-exist")
    assert failed(message)
    assert "not found" in message.content


async def test_find_patient_by_name_identifier_and_birth_date(fhir: FhirFixture) -> None:
    tools = tools_for(fhir, None)
    want = [f"Patient/{fhir.patients['handmade']}"]
    for args in ({"name": "Ada Testwell"}, {"identifier": "MRN-0042"},
                 {"birth_date": "1960-02-29", "name": "testwell"}):  # fmt: skip
        message = await call(tools["find_patient"], **args)
        assert message.artifact == want, args
        assert "Ada Testwell female born 1960-02-29" in message.content
    nobody = await call(tools["find_patient"], name="Nobody Atall")
    assert nobody.artifact == [] and "No patient matches" in nobody.content


async def test_unbound_tools_take_the_patient_as_an_argument(fhir: FhirFixture) -> None:
    tools = tools_for(fhir, None)
    message = await call(
        tools["search_records"], patient_id=fhir.patients["handmade"], resource_type="Immunization"
    )
    assert "Influenza" in message.content and len(message.artifact) == 1
    missing = await call(tools["search_records"], resource_type="Immunization")
    assert failed(missing) and "patient_id" in missing.content


# ------------------------------------------------------ validation, injection


@pytest.mark.parametrize(
    ("tool", "args", "complaint"),
    [
        ("search_records", {"resource_type": "Observatoin"}, "resource_type"),
        ("search_records", {"resource_type": "Patient"}, "resource_type"),
        ("search_records", {"resource_type": "Observation", "date_from": "2023-13-45"}, "date_from"),
        ("search_records", {"resource_type": "Observation", "date_from": "1200-01-01"}, "year"),
        ("search_records", {"resource_type": "Observation", "date_from": "2024-01-01",
                            "date_to": "2023-01-01"}, "after"),
        ("search_records", {"resource_type": "Observation", "limit": 0}, "limit"),
        ("search_records", {"resource_type": "Observation", "code": "4548-4&patient=x"}, "code"),
        ("search_records", {"resource_type": "Observation", "code": "4548-4,85354-9"}, "code"),
        ("search_records", {"resource_type": "Observation", "code": "a|b|c"}, "code"),
        ("search_records", {"resource_type": "Observation", "status": "final&_id=x"}, "status"),
        ("search_records", {"resource_type": "Observation", "text": "a\x00b"}, "control"),
        ("read_record", {"reference": "Observation/x?_id=y"}, "reference"),
        ("read_record", {"reference": "Observation/../../metadata"}, "reference"),
        ("find_patient", {}, "at least one"),
        ("create_observation", {"code": "8867-4", "display": "HR"}, "exactly one"),
        ("create_observation", {"code": "8867-4", "display": "HR", "value": 1, "value_text": "x"}, "exactly one"),
        ("create_observation", {"code": "8867 4", "display": "HR", "value": 1}, "code"),
        ("create_medication_request", {"code": "1", "display": "x", "system": "not a uri"}, "system"),
        ("create_service_request", {"code": "1", "display": "x", "priority": "whenever"}, "priority"),
    ],
)  # fmt: skip
async def test_bad_arguments_come_back_as_text_without_a_request(
    fhir: FhirFixture, tool: str, args: dict, complaint: str
) -> None:
    tools, transport = recorded_tools(fhir)
    message = await call(tools[tool], **args)
    assert failed(message), message.content
    assert complaint in message.content
    assert transport.requests == []


async def test_unbound_patient_id_cannot_carry_a_query(fhir: FhirFixture) -> None:
    tools = tools_for(fhir, None)
    message = await call(
        tools["search_records"],
        patient_id=f"{fhir.patients['handmade']}&patient={fhir.patients['diabetes']}",
        resource_type="Observation",
    )
    assert failed(message) and "patient_id" in message.content


async def test_search_text_is_sent_as_one_escaped_value(fhir: FhirFixture) -> None:
    tools, transport = recorded_tools(fhir)
    smuggled = f"hemoglobin&patient={fhir.patients['diabetes']},x"
    message = await call(tools["search_records"], resource_type="Observation", text=smuggled)
    assert message.content.startswith("No Observation records match")
    assert message.artifact == [f"Patient/{fhir.patients['handmade']}"]  # only its own chart
    other = fhir.patients["diabetes"]
    assert not [
        r for r in transport.requests if other in r.url.path or r.url.params.get("patient") == other
    ]
    first = next(r for r in transport.requests if "patient" in r.url.params).url.params
    assert first.get_list("patient") == [fhir.patients["handmade"]]
    assert first.get_list("code:text") == [
        r"hemoglobin&patient=" + fhir.patients["diabetes"] + r"\,x"
    ]


async def test_server_down_is_reported_to_the_model(fhir: FhirFixture) -> None:
    base = f"http://127.0.0.1:{free_port()}/fhir"
    async with FhirClient(base, retries=0) as client:
        tools = {t.name: t for t in make_fhir_tools(client, patient_id="p1")}
        message = await call(tools["search_records"], resource_type="Observation")
    assert failed(message)
    assert base in message.content and "unreachable" in message.content


# ----------------------------------------------------------------- writes


async def created(fixture: FhirFixture, message: ToolMessage, resource_type: str) -> dict:
    assert message.status == "success", message.content
    (ref,) = message.artifact
    assert ref.startswith(f"{resource_type}/") and message.content.startswith(f"Created {ref}")
    resource = await fixture.client.read(ref)
    get_fhir_model_class(resource_type).model_validate(resource)  # valid R4
    assert resource["subject"]["reference"] == f"Patient/{fixture.patients['hypertension']}"
    return resource


async def test_create_observation_numeric_and_text(fhir: FhirFixture) -> None:
    tools = tools_for(fhir, "hypertension")
    numeric = await call(tools["create_observation"], code="8867-4", display="Heart rate", value=72,
                         unit="/min", category="vital-signs", effective="2024-05-01T08:30:00")  # fmt: skip
    resource = await created(fhir, numeric, "Observation")
    assert resource["valueQuantity"] == {
        "value": 72,
        "unit": "/min",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    }
    assert resource["effectiveDateTime"].startswith("2024-05-01T08:30:00")
    assert resource["category"][0]["coding"][0]["code"] == "vital-signs"
    text = await call(tools["create_observation"], code="BP", system="urn:oid:1.2.840.114350",
                      display="Blood pressure", value_text="118/77 mmHg")  # fmt: skip
    assert (await created(fhir, text, "Observation"))["valueString"] == "118/77 mmHg"


async def test_create_medication_request(fhir: FhirFixture) -> None:
    tools = tools_for(fhir, "hypertension")
    message = await call(tools["create_medication_request"], code="197361", display="amlodipine 5 MG Oral Tablet",
                         dose_value=5, dose_unit="mg", route="oral", times_per_day=1, reason="Hypertension")  # fmt: skip
    resource = await created(fhir, message, "MedicationRequest")
    assert (resource["status"], resource["intent"]) == ("active", "order")
    dosage = resource["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 5
    assert dosage["timing"]["repeat"] == {"frequency": 1, "period": 1, "periodUnit": "d"}
    assert "amlodipine 5 MG Oral Tablet active; 5 mg, oral, 1x/day" in message.content


async def test_create_service_request(fhir: FhirFixture) -> None:
    tools = tools_for(fhir, "hypertension")
    message = await call(tools["create_service_request"], code="306206005", display="Referral to cardiology",
                         priority="urgent", note="Resistant hypertension", occurrence="2024-06-01T09:00:00Z")  # fmt: skip
    resource = await created(fhir, message, "ServiceRequest")
    assert resource["priority"] == "urgent"
    assert resource["note"] == [{"text": "Resistant hypertension"}]
    assert resource["code"]["coding"][0]["system"] == "http://snomed.info/sct"


async def test_write_for_an_unknown_patient_is_refused(fhir: FhirFixture) -> None:
    transport = RecordingTransport(httpx.ASGITransport(app=fhir.app))
    client = FhirClient(BASE_URL, transport=transport, backoff_s=0)
    tools = {t.name: t for t in make_fhir_tools(client, patient_id="nobody")}
    message = await call(tools["create_observation"], code="8867-4", display="HR", value=60)
    assert failed(message) and "not found" in message.content
    assert [r.method for r in transport.requests] == ["GET"]


async def test_server_rejection_of_a_write_is_text() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"resourceType": "Patient", "id": "p1"})
        return httpx.Response(422, json={"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "business-rule", "diagnostics": "duplicate order"}]})  # fmt: skip

    client = FhirClient("http://fhir.test/r4", transport=httpx.MockTransport(server))
    tools = {t.name: t for t in make_fhir_tools(client, patient_id="p1")}
    message = await call(tools["create_service_request"], code="1", display="x")
    assert failed(message)
    assert "HTTP 422: duplicate order" in message.content


# ------------------------------------------------------------ fetch_records


async def test_fetch_records_for_a_graph(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    both = await fetch_records(
        fhir.client, pid, "Observation", codes=["http://loinc.org|4548-4", "85354-9"]
    )
    assert [r["id"] for r in both] == sorted(
        [r["id"] for r in both],
        key=lambda i: next(x["effectiveDateTime"] for x in both if x["id"] == i),
        reverse=True,
    )
    assert len(both) == 3
    newest = await fetch_records(fhir.client, pid, "Observation", codes=["4548-4"], limit=1)
    assert newest[0]["valueQuantity"]["value"] == 6.1
    in_2022 = await fetch_records(
        fhir.client, pid, "Observation", date_from="2022-01-01", date_to="2022-12-31"
    )
    assert [r["valueQuantity"]["value"] for r in in_2022] == [7.4]
    with pytest.raises(ValueError):
        await fetch_records(fhir.client, pid, "Practitioner")
    with pytest.raises(ValueError):
        await fetch_records(fhir.client, pid, "Device", date_from="2020-01-01")
    with pytest.raises(ValueError):
        await fetch_records(fhir.client, "x&patient=y", "Observation")


class NoTextModifier(RecordingTransport):
    """A real server that rejects the `:text` modifier, as some servers do."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if any(key.endswith(":text") for key in request.url.params):
            self.requests.append(request)
            return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-supported", "diagnostics": "no :text"}]})  # fmt: skip
        return await super().handle_async_request(request)


async def test_text_search_without_server_support(fhir: FhirFixture) -> None:
    transport = NoTextModifier(httpx.ASGITransport(app=fhir.app))
    client = FhirClient(BASE_URL, transport=transport, backoff_s=0)
    found = await fetch_records(client, fhir.patients["handmade"], "Observation", text="smoking")
    assert [r["valueCodeableConcept"]["coding"][0]["display"] for r in found] == ["Ex-smoker"]
    searches = [r for r in transport.requests if not r.url.path.endswith("/metadata")]
    assert len(searches) == 2  # the refused :text search, then the plain one
