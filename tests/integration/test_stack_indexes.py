"""`stack up` gives the copilot all three tools: the starter guidelines and the built-in
images are indexed (once), and a conversation over the real stack can look them up."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from copilot_fakes import call, final
from fakes import ScriptedChatModel
from live import LiveStack
from wardround.server.app import create_app
from wardround.stack import indexes
from wardround.tools.registry import extra_tools

pytestmark = pytest.mark.integration


def test_up_indexed_guidelines_and_images_once(stack: LiveStack) -> None:
    counts = stack.status.indexes or {}
    assert counts["guideline_passages"] > 50 and counts["images"] >= 10, counts
    started = time.monotonic()
    assert indexes.ensure_guidelines(stack.settings) == (counts["guideline_passages"], False)
    assert indexes.ensure_images(stack.settings, _links(stack)) == (counts["images"], False)
    assert time.monotonic() - started < 20, "a second `up` reuses the indexes"
    names = {t.name for t in extra_tools(stack.settings)}
    assert names == {"search_images", "lookup_guideline"}


def _links(stack: LiveStack) -> dict[str, dict[str, str]]:
    return indexes.link_examples(stack.settings, stack.fhir_url, stack.patient_ids)


def test_example_images_only_for_charts_with_that_study(stack: LiveStack) -> None:
    links = _links(stack)
    linked = {link["patient_ref"] for link in links.values()}
    for pid in stack.patient_ids:
        studies = httpx.get(
            f"{stack.fhir_url}/ImagingStudy",
            params={"patient": pid, "identifier": f"{indexes.EXAMPLE_SYSTEM}|{pid}-chest-xray-pa"},
            timeout=30,
        ).json()
        xrays = httpx.get(
            f"{stack.fhir_url}/Procedure",
            params={"patient": pid, "code": f"{indexes.SNOMED}|399208008", "_summary": "count"},
            timeout=30,
        ).json()
        examples = studies.get("entry", [])
        assert len(examples) == (1 if f"Patient/{pid}" in linked else 0)
        if examples:
            assert xrays["total"] > 0, "linked only where the chart records a chest X-ray"


async def test_a_conversation_looks_up_a_guideline(stack: LiveStack, tmp_path: Path) -> None:
    model = ScriptedChatModel(
        replies=[
            call("lookup_guideline", query="low potassium replacement", k=2),
            lambda messages: final("See the guideline passage.", [_first_ref(messages)]),
        ]
    )
    # The stack's guideline and image indexes; a thread store and audit log of its own.
    settings = stack.settings.model_copy(
        update={"home": tmp_path, "chroma_path": stack.settings.chroma_dir}
    )
    app = create_app(settings, model=model, max_steps=3)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            health = (await client.get("/api/health")).json()
            assert {"search_images", "lookup_guideline"} <= set(health["tools"])
            thread = (
                await client.post("/api/threads", json={"patient_id": stack.patient_ids[0]})
            ).json()["thread_id"]
            done = await client.post(
                f"/api/threads/{thread}/messages?stream=false",
                json={"content": "What does the guideline say about low potassium?"},
                timeout=120,
            )
            answer = next(e["data"] for e in done.json()["events"] if e["event"] == "answer")
            (ref,) = answer["citations"]
            evidence = await client.get(f"/api/threads/{thread}/evidence", params={"ref": ref})
            assert evidence.status_code == 200 and "otassium" in evidence.json()["line"]


def _first_ref(messages: list) -> str:
    for message in reversed(messages):  # the newest tool result
        found = re.findall(r"guideline:[^\s\]]+", str(message.content))
        if found:
            return found[0]
    raise AssertionError("no guideline passage in the tool result")
