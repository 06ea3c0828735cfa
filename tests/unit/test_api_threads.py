"""The copilot API in process over a real SEKMET: threads, SSE event shapes, history, records,
the patient list, the page and the OpenAPI schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copilot_fakes import final, hba1c_answer_model
from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture, hba1c_refs
from wardround.testing.api_inprocess import api_harness, first, kinds, parse_sse

pytestmark = pytest.mark.asyncio(loop_scope="session")

EVENT_FIELDS = {
    "token": {"text"},
    "tool_call": {"id", "name", "args"},
    "tool_result": {"id", "name", "text", "refs", "status"},
    "answer": {"text", "citations", "flagged"},
    "done": {"status"},
}


async def test_a_conversation_streams_events_and_keeps_its_history(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    refs = await hba1c_refs(fhir)
    model = hba1c_answer_model("Latest HbA1c 6.1 % (2023-11-12).", refs[:1])
    pid = fhir.patients["handmade"]
    async with api_harness(tmp_path, fhir.client, model) as api:
        created = await api.client.post("/api/threads", json={"patient_id": pid})
        assert created.status_code == 201
        thread = created.json()
        assert thread["patient_id"] == pid and "Ada Testwell" in thread["patient"]

        response = await api.client.post(
            f"/api/threads/{thread['thread_id']}/messages",
            json={"content": "latest HbA1c?"},
            headers={"X-Wardround-User": "dr.ada"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)
        for item in events:  # every event carries the documented fields
            assert EVENT_FIELDS[item["event"]] <= set(item["data"]), item
        assert kinds(events)[:2] == ["tool_call", "tool_result"]
        assert kinds(events)[-2:] == ["answer", "done"]
        assert "token" in kinds(events)
        assert first(events, "answer")["citations"] == refs[:1]

        view = (await api.client.get(f"/api/threads/{thread['thread_id']}")).json()
        assert view["status"] == "idle" and view["pending"] == []
        roles = [m["role"] for m in view["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant"]
        assert view["messages"][-1]["citations"] == refs[:1]
        assert refs[0] in view["messages"][2]["refs"]

        record = await api.client.get(f"/api/threads/{thread['thread_id']}/records/{refs[0]}")
        assert record.status_code == 200
        body = record.json()
        assert body["ref"] == refs[0] and "6.1 %" in body["line"]
        assert body["resource"]["valueQuantity"]["value"] == 6.1

        audit = api.audit.entries()
        assert {"read_patient", "search_records", "view_record"} <= {e["action"] for e in audit}
        search = next(e for e in audit if e["action"] == "search_records")
        assert search["user"] == "dr.ada" and search["patient"] == pid
        assert refs[0] in search["resources"] and search["thread"] == thread["thread_id"]


async def test_records_of_another_patient_are_refused(fhir: FhirFixture, tmp_path: Path) -> None:
    async with api_harness(tmp_path, fhir.client, ScriptedChatModel(replies=[])) as api:
        thread = await api.thread(fhir.patients["diabetes"])
        other = (await hba1c_refs(fhir))[0]  # the handmade patient's
        response = await api.client.get(f"/api/threads/{thread}/records/{other}")
        assert response.status_code == 403
        assert "not a record of this thread's patient" in response.json()["detail"]
        missing = await api.client.get(f"/api/threads/{thread}/records/Observation/nope-0")
        assert missing.status_code == 404
        evidence = await api.client.get(
            f"/api/threads/{thread}/evidence", params={"ref": "guideline:af#dosing"}
        )
        assert evidence.status_code == 404


async def test_json_instead_of_a_stream(fhir: FhirFixture, tmp_path: Path) -> None:
    model = ScriptedChatModel(replies=[final("Hello.")])
    async with api_harness(tmp_path, fhir.client, model) as api:
        thread = await api.thread(fhir.patients["anaemia"])
        response = await api.client.post(
            f"/api/threads/{thread}/messages", params={"stream": "false"}, json={"content": "hi"}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["thread_id"] == thread
        assert [e["event"] for e in body["events"]][-2:] == ["answer", "done"]


async def test_patient_list_page_and_schema(fhir: FhirFixture, tmp_path: Path) -> None:
    async with api_harness(tmp_path, fhir.client, ScriptedChatModel(replies=[])) as api:
        patients = (await api.client.get("/api/patients")).json()
        assert {p["id"] for p in patients} >= set(fhir.patients.values())
        ada = (await api.client.get("/api/patients", params={"name": "Testwell"})).json()
        assert [p["id"] for p in ada] == [fhir.patients["handmade"]]
        assert ada[0]["line"].startswith(f"Patient/{fhir.patients['handmade']}")
        assert any(e["action"] == "list_patients" for e in api.audit.entries())

        page = await api.client.get("/")
        assert page.status_code == 200 and 'id="patient-select"' in page.text
        script = await api.client.get("/static/app.js")
        assert script.status_code == 200 and "approval_required" in script.text

        schema = (await api.client.get("/api/openapi.json")).json()
        paths = set(schema["paths"])
        assert {
            "/api/patients",
            "/api/threads",
            "/api/threads/{thread_id}",
            "/api/threads/{thread_id}/messages",
            "/api/threads/{thread_id}/approvals",
            "/api/threads/{thread_id}/approvals/{call_id}",
            "/api/threads/{thread_id}/records/{resource_type}/{resource_id}",
        } <= paths
        sse = schema["paths"]["/api/threads/{thread_id}/messages"]["post"]["responses"]["200"]
        assert "text/event-stream" in sse["content"]
        health = await api.client.get("/api/health")
        assert health.json()["status"] == "ok"
        assert "create_service_request" in health.json()["tools"]


async def test_the_default_thread_store_is_sqlite_in_home(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    model = ScriptedChatModel(replies=[final("Hello.")])
    async with api_harness(tmp_path, fhir.client, model) as api:
        thread = await api.thread(fhir.patients["anaemia"])
        await api.say(thread, "hi")
    assert (tmp_path / "copilot.sqlite").stat().st_size > 0
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert all(json.loads(line)["ts"] for line in lines)
    async with api_harness(tmp_path, fhir.client, ScriptedChatModel(replies=[])) as api:
        view = (await api.client.get(f"/api/threads/{thread}")).json()
        assert [m["content"] for m in view["messages"]] == ["hi", "Hello."]
