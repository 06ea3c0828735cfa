"""The copilot API over a hostile FHIR server (other patients' records mixed into every page,
`_include` and `$everything`): none of them reaches the answer, its citations, the chart
panel or the audit's read lines, and every one dropped is in the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture
from wardround.fhir.client import FhirClient
from wardround.graphs.copilot.audit import DROPPED
from wardround.testing.api_inprocess import api_harness, first
from wardround.testing.hostile_fhir import HostileTransport
from wardround.testing.sekmet_inprocess import BASE_URL

pytestmark = pytest.mark.asyncio(loop_scope="session")

A1C = "Hemoglobin A1c/Hemoglobin.total in Blood [Observation]"


def refs_in(value: Any) -> set[str]:
    """Every `Type/id` reference string anywhere in a JSON value."""
    text = json.dumps(value)
    return {
        word.strip('",[]{}')
        for word in text.split()
        if "/" in word and word.strip('",[]{}')[:1].isupper()
    }


async def owner(fhir: FhirFixture, ref: str) -> str | None:
    record = await fhir.client.read(ref)
    if record["resourceType"] == "Patient":
        return record["id"]
    subject = record.get("subject") or record.get("patient") or {}
    return str(subject.get("reference", "")).removeprefix("Patient/") or None


async def test_the_api_over_a_hostile_server_shows_only_the_patients_records(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    pid = fhir.patients["handmade"]
    hostile = HostileTransport(httpx.ASGITransport(app=fhir.app), BASE_URL)
    client = FhirClient(BASE_URL, transport=hostile, backoff_s=0)
    replies = [
        json.dumps({"action": "answer_from_chart"}),
        json.dumps({"kind": "latest_value", "about": A1C}),
    ]
    model = ScriptedChatModel(replies=replies)
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    async with api_harness(tmp_path, client, model, chart="planner") as api:
        thread = (await api.client.post("/api/threads", json={"patient_id": pid})).json()
        response = await api.client.post(
            f"/api/threads/{thread['thread_id']}/messages?stream=false",
            json={"content": "latest hemoglobin a1c?"},
        )
        assert response.status_code == 200, response.text
        events = response.json()["events"]
        chart = (await api.client.get(f"/api/patients/{pid}/chart")).json()
    assert hostile.injected, "the hostile server did slip other patients' records in"
    answer = first(events, "answer")
    assert answer["text"] == "6.1 % on 2023-11-12." and answer["citations"]
    shown = refs_in(events) | refs_in(chart)
    for ref in sorted(shown & set(hostile.injected)):
        pytest.fail(f"{ref}, another patient's record, reached the API")
    for ref in answer["citations"]:
        assert await owner(fhir, ref) == pid
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    reads = [ref for x in lines if x.get("kind") == "read" for ref in x["resources"]]
    assert reads and not set(reads) & set(hostile.injected)
    dropped = [x for x in lines if x["action"] == DROPPED]
    assert dropped and {x["patient"] for x in dropped} == {pid}
    assert {f"{x['resource_type']}/{x['resource_id']}" for x in dropped} <= set(hostile.injected)
    await client.aclose()
