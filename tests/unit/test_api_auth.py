"""API auth and bad input: bearer token when configured, 4xx with a message for what the
client can fix, 503 when the FHIR server is down, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot_fakes import FailingFhir, final
from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture
from wardround.fhir.client import FhirClient
from wardround.fhir.errors import FhirUnavailable
from wardround.testing.api_inprocess import api_harness

pytestmark = pytest.mark.asyncio(loop_scope="session")
TOKEN = "s3cret-token"


async def test_a_configured_token_is_required(fhir: FhirFixture, tmp_path: Path) -> None:
    model = ScriptedChatModel(replies=[final("Hello.")])
    async with api_harness(tmp_path, fhir.client, model, token=TOKEN) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await api.client.get("/api/patients", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in response.json()["detail"]
        refused = await api.client.post(
            "/api/threads", json={"patient_id": fhir.patients["anaemia"]}
        )
        assert refused.status_code == 401
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert (await api.client.get("/api/patients", headers=ok)).status_code == 200
        thread = await api.thread(fhir.patients["anaemia"], **ok)
        events = await api.say(thread, "hi", **ok)
        assert events[-1] == {"event": "done", "data": {"status": "complete"}}
        # the page and liveness stay open: they hold no patient data
        assert (await api.client.get("/")).status_code == 200
        assert (await api.client.get("/api/health")).status_code == 200
        assert {e["user"] for e in api.audit.entries()} == {"token"}


async def test_bad_requests_get_4xx_with_a_message(fhir: FhirFixture, tmp_path: Path) -> None:
    async with api_harness(tmp_path, fhir.client, ScriptedChatModel(replies=[])) as api:
        c = api.client
        cases = [
            (await c.post("/api/threads", json={"patient_id": "../etc"}), 422, "patient_id"),
            (await c.post("/api/threads", json={}), 422, "patient_id"),
            (
                await c.post(
                    "/api/threads",
                    content=b"{not json",
                    headers={"Content-Type": "application/json"},
                ),
                422,
                "JSON",
            ),
            (await c.post("/api/threads", json={"patient_id": "nobody-here"}), 404, "not found"),
            (await c.get("/api/threads/0123abc"), 404, "no thread"),
            (await c.get("/api/threads/bad%20id!"), 422, "thread_id"),
            (await c.post("/api/threads/0123abc/messages", json={"content": ""}), 422, "content"),
            (
                await c.post("/api/threads/0123abc/messages", json={"content": "hi"}),
                404,
                "no thread",
            ),
            (
                await c.post("/api/threads/0123abc/approvals/c1", json={"action": "maybe"}),
                422,
                "action",
            ),
            (await c.post("/api/threads/0123abc/resume"), 404, "no thread"),
            (await c.get("/api/patients", params={"limit": 0}), 422, "limit"),
            (
                await c.get("/api/patients", headers={"X-Wardround-User": "<script>"}),
                400,
                "X-Wardround-User",
            ),
            (await c.get("/api/nothing-here"), 404, "Not Found"),
        ]
        for response, status, words in cases:
            assert response.status_code == status, (response.request.url, response.text)
            detail = response.json()["detail"]
            assert isinstance(detail, str) and words in detail, detail
            assert "Traceback" not in response.text
        thread = await api.thread(fhir.patients["anaemia"])
        nothing = await c.post(f"/api/threads/{thread}/approvals/c1", json={"action": "approve"})
        assert nothing.status_code == 409
        assert (await c.post(f"/api/threads/{thread}/resume")).status_code == 409


async def test_fhir_down_is_503_and_surprises_are_500_without_traceback(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    down = FhirClient("http://127.0.0.1:9/fhir", retries=0, timeout=2)
    async with api_harness(tmp_path, down, ScriptedChatModel(replies=[])) as api:
        response = await api.client.get("/api/patients")
        assert response.status_code == 503
        assert "FHIR server" in response.json()["detail"]
        created = await api.client.post("/api/threads", json={"patient_id": "abc"})
        assert created.status_code == 503
    await down.aclose()
    broken = FailingFhir(fhir.client, RuntimeError("secret internals"))
    async with api_harness(
        tmp_path, broken, ScriptedChatModel(replies=[]), raise_app_exceptions=False
    ) as api:
        response = await api.client.get("/api/patients")
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error; the server log has the details"}
    assert isinstance(FhirUnavailable("x"), Exception)
