"""The copilot's chart route: chart questions go to the EHR QA planner (real in-process SEKMET,
scripted model), follow-ups are made standalone first, and every response path carries the
planner's `supported` flag and plan; events hold dates and decimals as plain JSON."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from copilot_fakes import call, final
from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture
from wardround.graphs.copilot import AuditLog, CopilotTools, copilot_graph, run_events
from wardround.graphs.copilot.events import event
from wardround.graphs.copilot.routing import CHART_TOOL, RAW_READS, needs_context
from wardround.testing.api_inprocess import api_harness, first, kinds, parse_sse

pytestmark = pytest.mark.asyncio(loop_scope="session")

A1C = "Hemoglobin A1c/Hemoglobin.total in Blood [Observation]"


def word_overlap(question: str, labels: list[str]) -> np.ndarray:
    """A stand-in for MiniLM: shared lower-case words (deterministic, no model load)."""
    words = set(question.lower().replace("?", "").split())
    return np.array([len(words & set(label.lower().split())) / 10 for label in labels])


def plan(kind: str, about: str) -> str:
    return json.dumps({"kind": kind, "about": about})


def action(name: str) -> str:
    """The turn's first reply: the action chosen."""
    return json.dumps({"action": name})


def graph_for(fhir: FhirFixture, model: ScriptedChatModel, audit: AuditLog | None = None) -> Any:
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}  # constrained, as served
    tools = CopilotTools(fhir.client)
    return copilot_graph(
        model, tools, checkpointer=InMemorySaver(), audit=audit, similarity=word_overlap,
        chart="planner",
    )  # fmt: skip


async def turn(graph: Any, cfg: dict[str, Any], text: str, patient: str) -> list[dict[str, Any]]:
    payload = {"messages": [("human", text)], "patient_id": patient}
    return [e async for e in run_events(graph, payload, cfg)]


def new_config() -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex, "user": "dr.chart"}}


async def test_a_chart_question_is_answered_by_the_planner(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    model = ScriptedChatModel(replies=[action(CHART_TOOL), plan("latest_value", A1C)])
    audit = AuditLog(tmp_path / "audit.jsonl")
    events = await turn(
        graph_for(fhir, model, audit),
        new_config(),
        "latest hemoglobin a1c?",
        fhir.patients["handmade"],
    )
    assert kinds(events)[0] == "tool_call" and first(events, "tool_call")["name"] == CHART_TOOL
    answer = first(events, "answer")
    assert answer["text"] == "6.1 % on 2023-11-12."
    assert answer["supported"] is True and answer["injection_warning"] is False
    assert answer["plan"] == f"latest_value: {A1C}"
    assert len(answer["citations"]) == 1 and answer["citations"][0].startswith("Observation/")
    assert answer["citations"][0] in first(events, "tool_result")["refs"]
    assert first(events, "done") == {"status": "complete"}
    # The model chose among high-level actions (an enum): no tool, no raw FHIR read on offer.
    schema = model.calls[0]["kwargs"]["response_format"]["schema"]
    choices = schema["properties"]["action"]["enum"]
    assert CHART_TOOL in choices and "reply" in choices and "propose_order" in choices
    assert not set(choices) & RAW_READS
    # The planner read the records, and the audit log says which.
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    chart = [x for x in lines if x["action"] == CHART_TOOL]
    assert chart and answer["citations"][0] in chart[0]["resources"]
    assert model.replies == [], "one choice, one plan: nothing else asked of the model"


async def test_a_follow_up_is_made_standalone_before_the_planner_sees_it(
    fhir: FhirFixture,
) -> None:
    rewritten = "What was the hemoglobin a1c before the latest one?"
    model = ScriptedChatModel(
        replies=[
            action(CHART_TOOL),
            plan("latest_value", A1C),
            json.dumps({"question": rewritten}),  # the follow-up: no action asked
            plan("latest_value", A1C),
            action(CHART_TOOL),
            plan("latest_value", A1C),
        ]
    )
    graph, cfg, pid = graph_for(fhir, model), new_config(), fhir.patients["handmade"]
    await turn(graph, cfg, "latest hemoglobin a1c?", pid)
    await turn(graph, cfg, "and the one before?", pid)
    # The follow-up went to the chart by code (no action asked), rewritten first.
    rewrite_prompt = str(model.calls[2]["messages"][-1].content)
    assert "latest hemoglobin a1c?" in rewrite_prompt and "and the one before?" in rewrite_prompt
    assert rewritten in str(model.calls[3]["messages"][-1].content), "the planner got the rewrite"
    # A question that stands alone goes to the planner as asked: no rewriting call.
    events = await turn(graph, cfg, "What is the latest hemoglobin a1c in blood?", pid)
    assert first(events, "answer")["supported"] is True
    assert model.replies == []


async def test_follow_ups_are_told_apart_from_standalone_questions() -> None:
    for text in (
        "and the one before?",
        "What about LDL?",
        "when was it measured?",
        "same for her sodium",
    ):
        assert needs_context(text), text
    for text in (
        "What is her latest potassium?",
        "Is she on metformin and lisinopril?",
        "latest BMI",
    ):
        assert not needs_context(text), text


async def test_a_reply_without_tools_has_no_plan(fhir: FhirFixture) -> None:
    model = ScriptedChatModel(
        replies=[action("reply"), final("Hello, how can I help with this chart?")]
    )
    events = await turn(graph_for(fhir, model), new_config(), "hello", fhir.patients["handmade"])
    answer = first(events, "answer")
    assert answer["supported"] is None and answer["plan"] is None


async def test_event_data_is_plain_json_whatever_a_run_puts_in_it() -> None:
    data = event(
        "tool_call",
        args={"date_from": date(2024, 1, 2), "at": datetime(2024, 1, 2, 3, 4, 5),
              "value": Decimal("5.25"), "nested": [{"on": date(2023, 12, 31)}]},
    )["data"]  # fmt: skip
    assert json.loads(json.dumps(data)) == {
        "args": {"date_from": "2024-01-02", "at": "2024-01-02T03:04:05",
                 "value": "5.25", "nested": [{"on": "2023-12-31"}]},
    }  # fmt: skip


def dated_search_model() -> ScriptedChatModel:
    """Searches with a date range (the json protocol parses it into a datetime.date, as a real
    model's call is), then answers citing what it found."""

    def answer(messages: list[Any]) -> str:
        refs = [w for w in str(messages[-1].content).split() if w.startswith("Observation/")]
        return final("Found them.", refs[:1])

    search = call("search_records", resource_type="Observation", date_from="2020-01-01",
                  date_to="2024-12-31", limit=3)  # fmt: skip
    return ScriptedChatModel(replies=[search, answer])


async def test_the_api_answers_a_chart_question_with_the_planner(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    """The default mode through the API: MiniLM ranks the options (no stand-in)."""
    model = ScriptedChatModel(replies=[action(CHART_TOOL), plan("latest_value", A1C)])
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    pid = fhir.patients["handmade"]
    async with api_harness(tmp_path, fhir.client, model, chart="planner") as api:
        thread = (await api.client.post("/api/threads", json={"patient_id": pid})).json()
        response = await api.client.post(
            f"/api/threads/{thread['thread_id']}/messages?stream=false",
            json={"content": "What's her latest HbA1c?"},
        )
        assert response.status_code == 200, response.text
        answer = first(response.json()["events"], "answer")
        assert answer["text"] == "6.1 % on 2023-11-12." and answer["supported"] is True
        assert answer["plan"] == f"latest_value: {A1C}"
        view = (await api.client.get(f"/api/threads/{thread['thread_id']}")).json()
        last = view["messages"][-1]
        assert last["supported"] is True and last["plan"] == answer["plan"]
        assert last["citations"] == answer["citations"]


@pytest.mark.parametrize("stream", [True, False])
async def test_both_response_modes_carry_dates_and_the_chart_fields(
    fhir: FhirFixture, tmp_path: Path, stream: bool
) -> None:
    pid = fhir.patients["handmade"]
    async with api_harness(tmp_path, fhir.client, dated_search_model(), chart="tools") as api:
        thread = (await api.client.post("/api/threads", json={"patient_id": pid})).json()
        response = await api.client.post(
            f"/api/threads/{thread['thread_id']}/messages?stream={str(stream).lower()}",
            json={"content": "her results since 2020?"},
        )
        assert response.status_code == 200, response.text
        events = parse_sse(response.text) if stream else response.json()["events"]
        args = first(events, "tool_call")["args"]
        assert args["date_from"] == "2020-01-01" and args["date_to"] == "2024-12-31"
        answer = first(events, "answer")
        assert {"supported", "plan", "injection_warning"} <= set(answer)
        view = (await api.client.get(f"/api/threads/{thread['thread_id']}")).json()
        assert view["messages"][1]["tool_calls"][0]["args"]["date_from"] == "2020-01-01"


async def test_a_question_the_model_would_answer_from_nothing_goes_to_the_chart() -> None:
    from wardround.graphs.copilot.routing import overrule_reply

    for text in ("is the calcium trending up or down lately?", "What meds is she on",
                 "any allergies I should know about?", "list her vaccines"):  # fmt: skip
        assert overrule_reply("reply", text) == CHART_TOOL, text
    for text in ("hello", "thanks, that helps", "great work"):
        assert overrule_reply("reply", text) == "reply", text
    assert overrule_reply("propose_order", "can you order an HbA1c?") == "propose_order"
    assert overrule_reply("lookup_guideline", "when did we last see this patient?") == CHART_TOOL
    assert overrule_reply("lookup_guideline", "what is the HbA1c target in diabetes?") == (
        "lookup_guideline"
    )
    assert overrule_reply("search_images", "chest x-rays like a pneumothorax") == "search_images"


async def test_a_search_turn_answered_from_nothing_goes_to_the_chart(fhir: FhirFixture) -> None:
    """The model picks guideline lookup, then answers without looking anything up: the
    question goes to the planner instead, whose answer is the turn's."""
    model = ScriptedChatModel(
        replies=[
            action("lookup_guideline"),
            final("It is trending up lately."),
            plan("latest_value", A1C),
        ]
    )
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    tools = CopilotTools(fhir.client, extra=[_guideline_stub()])
    graph = copilot_graph(model, tools, checkpointer=InMemorySaver(), similarity=word_overlap,
                          chart="planner")  # fmt: skip
    events = await turn(graph, new_config(), "is the hemoglobin a1c in blood up or down?",
                        fhir.patients["handmade"])  # fmt: skip
    answer = first(events, "answer")
    assert answer["text"] == "6.1 % on 2023-11-12." and answer["supported"] is True
    assert answer["plan"] == f"latest_value: {A1C}"
    assert model.replies == []


def _guideline_stub() -> Any:
    from langchain_core.tools import StructuredTool

    def lookup_guideline(query: str) -> str:
        """Look up clinical guideline recommendations."""
        return "no passage"

    return StructuredTool.from_function(lookup_guideline, name="lookup_guideline")


async def test_a_chart_turn_that_cannot_answer_ends_with_its_error(fhir: FhirFixture) -> None:
    """The planner's error is the turn's: no model is asked to answer from nothing after it."""
    model = ScriptedChatModel(replies=[action(CHART_TOOL)])
    events = await turn(graph_for(fhir, model), new_config(), "latest potassium?", "no-such-1")
    assert kinds(events)[-2:] == ["error", "done"] and first(events, "done")["status"] == "error"
    assert "answer" not in kinds(events) and model.replies == []
