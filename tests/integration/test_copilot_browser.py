"""The copilot end to end in headless Chromium: the real FHIR server with PySynthea patients,
the API served by uvicorn, the chat page driven by Playwright.

The first test checks the chart at a glance against the FHIR server (no model needed for it),
plots a result, follows a citation into the chart, stops an answer, and keeps screenshots at
1280x800 and at phone width (the folder is printed; WARDROUND_ARTIFACTS overrides it).

Two API servers share one home (so one thread store). The first runs the real embedded
model: one question, one model step, streamed to the page through the whole live path
(llama.cpp -> LangGraph -> SSE -> browser). The embedded 135M model does not answer with
citations or propose orders when asked (it calls tools at random; measured on the seeded
patients), so the second server, which reopens the same thread, uses a scripted model for
the question with a citation and for the order. Everything else is real: the page, the
API, the approval interrupt, and the order written to the FHIR server and read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import Field

from browser_kit import WIDE, artifacts_dir, chromium, screenshot, serve
from copilot_fakes import HBA1C_ORDER, call, final
from fakes import ScriptedChatModel
from live import LiveStack
from wardround.agents.models import make_chat_model
from wardround.graphs.copilot import ORDER_SYSTEM
from wardround.server.app import create_app
from wardround.settings import Settings

pytestmark = pytest.mark.integration
SHOTS = "copilot-browser"  # this test's folder of screenshots

REAL_MODEL_TIMEOUT_MS = 240_000
LOINC = "http://loinc.org"
BP_PANEL, SYSTOLIC, DIASTOLIC = "85354-9", "8480-6", "8462-4"
PHONE = {"width": 390, "height": 844}


def fhir_get(stack: LiveStack, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{stack.fhir_url}/{path}", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


class SlowScriptedModel(ScriptedChatModel):
    """Scripted replies; call number n in `slow` hangs for slow[n] seconds, to be stopped."""

    slow: dict[int, float] = Field(default_factory=dict)

    async def _agenerate(self, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        delay = self.slow.pop(len(self.calls), 0.0)
        if not delay:
            return self._generate(messages, *args, **kwargs)
        self.calls.append({"messages": list(messages), "kwargs": kwargs})
        self.replies.pop(0)  # used up, even though it is stopped before it is shown
        await asyncio.sleep(delay)
        raise AssertionError("this reply should have been stopped")


def newest_blood_pressure(stack: LiveStack, patient_id: str) -> tuple[dict[str, Any], int]:
    """The patient's newest blood pressure panel on the FHIR server, and how many there are."""
    code = f"{LOINC}|{BP_PANEL}"
    found = fhir_get(stack, "Observation", patient=patient_id, code=code, _sort="-date", _count=1)
    total = fhir_get(stack, "Observation", patient=patient_id, code=code, _summary="count")
    return found["entry"][0]["resource"], int(total["total"])


def component_value(observation: dict[str, Any], loinc: str) -> float:
    for component in observation["component"]:
        if any(c.get("code") == loinc for c in component["code"]["coding"]):
            return float(component["valueQuantity"]["value"])
    raise AssertionError(f"no component {loinc} in {observation['id']}")


def number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:.3f}".rstrip("0").rstrip(".")


def test_chart_trend_citation_and_stop_in_the_browser(
    stack: LiveStack, browser: Any, tmp_path: Path
) -> None:
    settings: Settings = stack.settings.model_copy(update={"home": tmp_path})
    patient_id = stack.patient_ids[0]
    bp, bp_records = newest_blood_pressure(stack, patient_id)
    bp_ref = f"Observation/{bp['id']}"
    model = SlowScriptedModel(
        replies=[
            call(
                "search_records", resource_type="Observation", code=f"{LOINC}|{BP_PANEL}", limit=1
            ),
            final("The latest blood pressure is on the record cited.", [bp_ref]),
            final("never shown: this answer is stopped"),
            final("Asked again, answered."),
        ],
        slow={2: 60.0},
    )
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(20_000)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    with serve(create_app(settings, model=model, extra_tools=[], max_steps=4)) as url:
        page.goto(url)
        page.locator(f"#patient-select option[value='{patient_id}']").wait_for(state="attached")
        page.select_option("#patient-select", patient_id)
        page.locator("#chart-body").wait_for(state="visible")
        screenshot(page, SHOTS, "wide-chart")

        # The chart's blood pressure is the server's newest: systolic value and date.
        item = page.locator(f".items-vitals .item[data-ref='{bp_ref}']")
        systolic = number_text(component_value(bp, SYSTOLIC))
        assert item.locator(".value").inner_text().startswith(f"{systolic}/"), item.inner_text()
        assert item.locator(".date").inner_text() == bp["effectiveDateTime"][:10]
        assert page.locator(".patient-name").inner_text().strip()

        # Its trend: one point per record, for each component.
        item.locator(".trend-button").click()
        page.locator("#trend").wait_for(state="visible")
        for loinc in (SYSTOLIC, DIASTOLIC):
            points = page.locator(f"#trend circle.point[data-series='{LOINC}|{loinc}']")
            assert points.count() == bp_records, (loinc, points.count(), bp_records)
        assert page.locator("#trend rect.band").count() == 2

        # A cited answer: the citation marks the chart item and opens the record.
        page.fill("#message", "What is the latest blood pressure?")
        page.keyboard.press("Enter")
        citation = page.locator("#log .citation", has_text=bp_ref)
        citation.wait_for()
        citation.click()
        page.locator("#record-panel").wait_for(state="visible")
        assert page.inner_text("#record-ref") == bp_ref
        assert bp["id"] in page.inner_text("#record-json")
        page.locator(f".item.cited[data-ref='{bp_ref}']").wait_for()
        page.click("#record-close")
        screenshot(page, SHOTS, "wide-chart-trend-citation")

        # Shift+Enter is a new line; a slow answer shows its step and stops on Stop.
        page.fill("#message", "Line one")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("line two")
        assert page.input_value("#message") == "Line one\nline two"
        page.keyboard.press("Enter")
        page.locator("#progress").wait_for(state="visible")
        assert "Planning" in page.inner_text("#progress-text")
        page.click("#stop")
        page.locator("#log .msg.tool", has_text="stopped").wait_for()
        page.locator("#progress").wait_for(state="hidden")
        page.fill("#message", "Again?")
        page.keyboard.press("Enter")
        page.locator("#log .msg.assistant", has_text="Asked again, answered.").wait_for()

        page.set_viewport_size(PHONE)
        page.click("#tabs button[data-view='chart']")
        page.locator("#chart").evaluate("node => node.scrollTo(0, 0)")
        shots = [screenshot(page, SHOTS, "phone-chart")]
        page.click("#tabs button[data-view='chat']")
        shots.append(screenshot(page, SHOTS, "phone-conversation"))
        page.set_viewport_size(WIDE)
        item.locator(".label").click()
        page.locator("#record-panel").wait_for(state="visible")
        shots.append(screenshot(page, SHOTS, "wide-record-open"))
    context.close()
    print("screenshots in", artifacts_dir(SHOTS), [p.name for p in shots])
    outside = [u for u in requests if not u.startswith(url)]
    assert not outside, f"the page reached beyond our API: {outside}"


def test_chat_cite_and_approve_an_order_in_the_browser(
    stack: LiveStack, browser: Any, tmp_path: Path
) -> None:
    settings: Settings = stack.settings.model_copy(update={"home": tmp_path})
    patient_id = stack.patient_ids[0]
    page = browser.new_page()
    page.set_default_timeout(30_000)

    # 1. The real embedded model, one step: whatever it does streams to the page.
    real = create_app(settings, model=make_chat_model(stack.settings), max_steps=1)
    with serve(real) as url:
        page.goto(url)
        page.locator(f"#patient-select option[value='{patient_id}']").wait_for(state="attached")
        page.select_option("#patient-select", patient_id)
        page.click("#start")
        page.wait_for_function("location.hash.startsWith('#thread=')")
        thread_id = page.evaluate("location.hash").split("=", 1)[1]
        page.fill("#message", "What is the patient's most recent blood pressure?")
        page.keyboard.press("Enter")
        page.wait_for_selector("#send:disabled")
        page.wait_for_selector("#send:enabled", timeout=REAL_MODEL_TIMEOUT_MS)
        shown = page.locator("#log .msg.tool, #log .msg.assistant, #log .msg.error")
        texts = [t for t in shown.all_inner_texts() if t.strip()]
        print("real model turn:", texts)  # what the embedded model did, for the test log
        assert (
            any(t.startswith("→ ") or t.startswith("←") for t in texts)
            or page.locator("#log .msg.assistant").count()
        ), texts

    # 2. The same thread on a second server with a scripted model.
    observations = fhir_get(stack, "Observation", patient=patient_id, _sort="-date", _count=1)[
        "entry"
    ]
    newest = f"Observation/{observations[0]['resource']['id']}"
    scripted = ScriptedChatModel(
        replies=[
            call("search_records", resource_type="Observation", limit=1),
            final("The newest observation is on the record shown.", [newest]),
            call("create_service_request", **HBA1C_ORDER),
            final("Ordered an HbA1c."),
        ]
    )
    second = create_app(settings, model=scripted, max_steps=4)
    with serve(second) as url:
        page.goto(f"{url}/#thread={thread_id}")
        page.locator("#log .msg.user").first.wait_for()
        assert "blood pressure" in page.locator("#log .msg.user").first.inner_text()

        page.fill("#message", "What is the newest observation?")
        page.keyboard.press("Enter")
        citation = page.locator("#log .citation", has_text=newest)
        citation.wait_for()
        assert "newest observation" in page.locator("#log .msg.assistant").last.inner_text()
        citation.click()
        page.locator("#record-panel").wait_for(state="visible")
        assert page.inner_text("#record-ref") == newest
        assert observations[0]["resource"]["id"] in page.inner_text("#record-json")

        page.fill("#message", "Order an HbA1c.")
        page.keyboard.press("Enter")
        card = page.locator(".approval-card").last
        card.wait_for()
        assert "Hemoglobin A1c" in card.inner_text()
        # The card shows the resource the approval writes, with the order's identifier.
        preview = card.locator("pre.order-resource", has_text='"resourceType": "ServiceRequest"')
        preview.wait_for()
        assert ORDER_SYSTEM in preview.inner_text()
        before = len(
            fhir_get(stack, "ServiceRequest", patient=patient_id, _count=100).get("entry", [])
        )
        card.locator("button.approve").click()
        page.locator("#log .msg.assistant", has_text="Ordered an HbA1c.").wait_for()
        written = card.locator("a.written-ref").inner_text()
        page.set_viewport_size(WIDE)
        page.keyboard.press("Escape")  # closes the record opened from the citation
        page.locator("#record-panel").wait_for(state="hidden")
        card.scroll_into_view_if_needed()
        screenshot(page, SHOTS, "wide-order-written")

    code = f"{HBA1C_ORDER['system']}|{HBA1C_ORDER['code']}"
    orders = fhir_get(stack, "ServiceRequest", patient=patient_id, code=code, _count=100)
    ours = [
        e["resource"]
        for e in orders.get("entry", [])
        if any(i.get("system") == ORDER_SYSTEM for i in e["resource"].get("identifier", []))
    ]
    assert len(ours) == 1, "the approved order is on the FHIR server, once"
    assert ours[0]["subject"]["reference"] == f"Patient/{patient_id}"
    assert written == f"ServiceRequest/{ours[0]['id']}", "the card links the written record"
    after = fhir_get(stack, "ServiceRequest", patient=patient_id, _summary="count")["total"]
    assert after == before + 1
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "create_service_request" in audit and patient_id in audit
