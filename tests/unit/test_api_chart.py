"""The chart, trend and patient-record endpoints, stopping an answer, and the order preview,
over the API in process and a real SEKMET."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from copilot_fakes import HBA1C_ORDER, FailingFhir, GatedModel, call, final
from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture
from wardround.fhir.errors import FhirUnavailable
from wardround.graphs.copilot import ORDER_SYSTEM
from wardround.testing.api_inprocess import api_harness, kinds, parse_sse

pytestmark = pytest.mark.asyncio(loop_scope="session")
A1C = "http://loinc.org|4548-4"


async def test_chart_trend_and_records_of_a_patient(fhir: FhirFixture, tmp_path: Path) -> None:
    pid = fhir.patients["handmade"]
    async with api_harness(tmp_path, fhir.client, ScriptedChatModel(replies=[])) as api:
        chart = (await api.client.get(f"/api/patients/{pid}/chart")).json()
        assert chart["patient"]["name"] == "Ada Testwell"
        assert chart["vitals"][0]["value"] == "132/84 mmHg"
        lab = chart["labs"][0]
        assert (lab["value"], lab["date"], lab["code"]) == ("6.1 %", "2023-11-12", A1C)

        trend = (await api.client.get(f"/api/patients/{pid}/trend", params={"code": A1C})).json()
        assert [p["value"] for p in trend["series"][0]["points"]] == [7.4, 6.1]

        record = (await api.client.get(f"/api/patients/{pid}/records/{lab['ref']}")).json()
        assert record["ref"] == lab["ref"] and record["line"] == lab["line"]

        actions = [json.loads(line)["action"] for line in (tmp_path / "audit.jsonl").open()]
        assert actions == ["view_chart", "view_trend", "view_record"]


async def test_clear_errors_for_bad_input(fhir: FhirFixture, tmp_path: Path) -> None:
    pid = fhir.patients["handmade"]
    other = fhir.patients["diabetes"]
    (obs,) = await fhir.client.search("Observation", {"patient": other, "_count": 1}, limit=1)
    async with api_harness(tmp_path, fhir.client, ScriptedChatModel(replies=[])) as api:
        cases = [
            ("/api/patients/nobody-here/chart", {}, 404, "Patient/nobody-here"),
            ("/api/patients/bad%20id/chart", {}, 422, "patient_id"),
            (f"/api/patients/{pid}/trend", {"code": "two words"}, 422, "code"),
            (f"/api/patients/{pid}/trend", {}, 422, "code"),
            (f"/api/patients/{pid}/trend", {"code": "http://loinc.org|2823-3"}, 404, "no Observation"),
            (f"/api/patients/{pid}/records/Observation/{obs['id']}", {}, 403, "not a record of"),
        ]  # fmt: skip
        for path, params, status, words in cases:
            response = await api.client.get(path, params=params)
            assert response.status_code == status, (path, response.text)
            assert words in response.json()["detail"], response.text
            assert "Traceback" not in response.text


async def test_fhir_down_is_503_with_a_message(fhir: FhirFixture, tmp_path: Path) -> None:
    down = FailingFhir(fhir.client, FhirUnavailable("connection refused"))
    pid = fhir.patients["handmade"]
    async with api_harness(tmp_path, down, ScriptedChatModel(replies=[])) as api:
        for path in (f"/api/patients/{pid}/chart", f"/api/patients/{pid}/trend?code={A1C}"):
            response = await api.client.get(path)
            assert response.status_code == 503, response.text
            assert "FHIR server is unavailable" in response.json()["detail"]


async def test_stop_cancels_the_answer_and_the_thread_takes_the_next_question(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    model = GatedModel(
        replies=[final("never shown"), final("Second answer.")], gate=gate, entered=entered
    )
    pid = fhir.patients["handmade"]
    async with api_harness(tmp_path, fhir.client, model) as api:
        thread = await api.thread(pid)
        assert (await api.client.post(f"/api/threads/{thread}/stop")).status_code == 409
        asking = asyncio.create_task(api.say(thread, "first question"))
        await asyncio.wait_for(entered.wait(), 10)
        stopped = await api.client.post(f"/api/threads/{thread}/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        events = await asyncio.wait_for(asking, 10)
        assert kinds(events) == ["done"] and events[-1]["data"]["status"] == "stopped"

        view = (await api.client.get(f"/api/threads/{thread}")).json()
        assert view["status"] == "idle"
        assert [m["role"] for m in view["messages"]] == ["user", "assistant"]
        assert "stopped" in view["messages"][-1]["content"]

        model.replies.pop(0)  # the stopped call never consumed its reply
        gate.set()
        events = await api.say(thread, "second question")
        assert kinds(events)[-2:] == ["answer", "done"]
        assert "Second answer." in events[-2]["data"]["text"]


async def test_an_order_card_shows_the_resource_the_approval_writes(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    pid = fhir.patients["hypertension"]
    model = ScriptedChatModel(
        replies=[call("create_service_request", **HBA1C_ORDER), final("Ordered.")]
    )
    async with api_harness(tmp_path, fhir.client, model) as api:
        thread = await api.thread(pid)
        events = await api.say(thread, "order an HbA1c")
        pending = next(e["data"] for e in events if e["event"] == "approval_required")
        url = f"/api/threads/{thread}/approvals/{pending['call_id']}/resource"
        preview = (await api.client.get(url)).json()
        assert preview["resourceType"] == "ServiceRequest"
        assert preview["subject"]["reference"] == f"Patient/{pid}"
        assert preview["code"]["coding"][0]["code"] == HBA1C_ORDER["code"]
        (mark,) = [i for i in preview["identifier"] if i["system"] == ORDER_SYSTEM]

        events = parse_sse((await api.decide(thread, pending["call_id"], action="approve")).text)
        written = next(e["data"] for e in events if e["event"] == "tool_result")
        (ref,) = written["refs"]
        resource = await fhir.client.read(ref)
        assert mark in resource["identifier"], "the preview's identifier is the written one"
        assert resource["code"] == preview["code"]
        assert (await api.client.get(url)).status_code == 404  # no longer pending
