"""Approvals over HTTP: pending orders, approve/edit/reject, nothing written without approval,
a repeated approval never writes twice, a busy thread refuses a second run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from copilot_fakes import HBA1C_ORDER, GatedModel, call, final
from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture
from wardround.fhir.client import escape_value
from wardround.graphs.copilot import ORDER_SYSTEM, order_key
from wardround.testing.api_inprocess import ApiHarness, api_harness, first, kinds, parse_sse

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def written(fhir: FhirFixture, thread: str, call_id: str) -> list[dict[str, Any]]:
    key = order_key(thread, call_id)
    return await fhir.client.search(
        "ServiceRequest", [("identifier", f"{ORDER_SYSTEM}|{escape_value(key)}")]
    )


async def proposed(api: ApiHarness, fhir: FhirFixture) -> tuple[str, dict[str, Any]]:
    thread = await api.thread(fhir.patients["diabetes"])
    events = await api.say(thread, "order an HbA1c")
    assert kinds(events) == ["tool_call", "approval_required", "done"]
    assert first(events, "done")["status"] == "awaiting_approval"
    return thread, first(events, "approval_required")


async def test_approve_writes_once_and_a_second_approval_is_refused(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    model = ScriptedChatModel(
        replies=[call("create_service_request", **HBA1C_ORDER), final("Ordered.")]
    )
    async with api_harness(tmp_path, fhir.client, model) as api:
        thread, approval = await proposed(api, fhir)
        assert set(approval) >= {"interrupt_id", "call_id", "tool", "args", "summary"}
        pending = (await api.client.get(f"/api/threads/{thread}/approvals")).json()
        assert [p["call_id"] for p in pending] == [approval["call_id"]]
        assert await written(fhir, thread, approval["call_id"]) == []

        refused = await api.client.post(
            f"/api/threads/{thread}/messages", json={"content": "something else"}
        )
        assert refused.status_code == 409 and "waiting for a decision" in refused.json()["detail"]

        response = await api.decide(thread, approval["call_id"], action="approve")
        assert response.status_code == 200
        events = parse_sse(response.text)
        assert kinds(events)[0] == "tool_result" and first(events, "done")["status"] == "complete"
        stored = await written(fhir, thread, approval["call_id"])
        assert len(stored) == 1 and stored[0]["code"]["coding"][0]["code"] == "4548-4"

        again = await api.decide(thread, approval["call_id"], action="approve")
        assert again.status_code == 409 and "no order" in again.json()["detail"]
        assert len(await written(fhir, thread, approval["call_id"])) == 1
        assert (await api.client.get(f"/api/threads/{thread}/approvals")).json() == []
        decided = [e for e in api.audit.entries() if e["action"] == "approve_order"]
        assert decided and decided[0]["thread"] == thread


async def test_reject_writes_nothing(fhir: FhirFixture, tmp_path: Path) -> None:
    model = ScriptedChatModel(replies=[call("create_service_request", **HBA1C_ORDER), final("OK.")])
    async with api_harness(tmp_path, fhir.client, model) as api:
        before = await fhir.client.search("ServiceRequest", {"patient": fhir.patients["diabetes"]})
        thread, approval = await proposed(api, fhir)
        response = await api.decide(thread, approval["call_id"], action="reject", reason="not now")
        assert response.status_code == 200
        assert first(parse_sse(response.text), "answer")["text"] == "OK."
        after = await fhir.client.search("ServiceRequest", {"patient": fhir.patients["diabetes"]})
        assert len(after) == len(before)
        view = (await api.client.get(f"/api/threads/{thread}")).json()
        assert "rejected" in view["messages"][2]["content"]


async def test_edit_is_checked_before_it_resumes(fhir: FhirFixture, tmp_path: Path) -> None:
    model = ScriptedChatModel(
        replies=[call("create_service_request", **HBA1C_ORDER), final("Done.")]
    )
    async with api_harness(tmp_path, fhir.client, model) as api:
        thread, approval = await proposed(api, fhir)
        bad = await api.decide(
            thread, approval["call_id"], action="edit", args={**HBA1C_ORDER, "priority": "later"}
        )
        assert bad.status_code == 422 and "priority" in bad.json()["detail"]
        no_args = await api.decide(thread, approval["call_id"], action="edit")
        assert no_args.status_code == 422 and "args" in no_args.json()["detail"]
        assert len((await api.client.get(f"/api/threads/{thread}/approvals")).json()) == 1
        good = await api.decide(
            thread, approval["call_id"], action="edit", args={**HBA1C_ORDER, "priority": "urgent"}
        )
        assert good.status_code == 200
        (stored,) = await written(fhir, thread, approval["call_id"])
        assert stored["priority"] == "urgent"


async def test_a_busy_thread_refuses_a_second_request(fhir: FhirFixture, tmp_path: Path) -> None:
    model = GatedModel(
        replies=[final("Slow answer.")], gate=asyncio.Event(), entered=asyncio.Event()
    )
    async with api_harness(tmp_path, fhir.client, model) as api:
        thread = await api.thread(fhir.patients["anaemia"])
        first_request = asyncio.create_task(
            api.client.post(f"/api/threads/{thread}/messages", json={"content": "one"})
        )
        await asyncio.wait_for(model.entered.wait(), 10)
        second = await api.client.post(f"/api/threads/{thread}/messages", json={"content": "two"})
        assert second.status_code == 409 and "busy" in second.json()["detail"]
        model.gate.set()
        response = await asyncio.wait_for(first_request, 30)
        assert first(parse_sse(response.text), "answer")["text"] == "Slow answer."
