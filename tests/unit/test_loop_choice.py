"""The free loop's step choice (one long call or two short ones) and its finish checks."""

from __future__ import annotations

import json
import re

import pytest
from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture
from wardround.agents.protocol import FINAL
from wardround.chart.options import NOT_IN_CHART, settle_name
from wardround.graphs.ehr_qa import answer_question
from wardround.graphs.tool_loop import run_tool_loop
from wardround.tools.chart.tools import CHART_TOOLS
from wardround.tools.evidence import REQUIRES_APPROVAL, cited_tool, tool_result

pytestmark = pytest.mark.asyncio(loop_scope="module")

A1C = "Hemoglobin A1c/Hemoglobin.total in Blood"
OBS = re.compile(r"Observation/[A-Za-z0-9\-.]+")


def scripted(*replies: object) -> ScriptedChatModel:
    model = ScriptedChatModel(
        replies=[r if isinstance(r, str) or callable(r) else json.dumps(r) for r in replies]
    )
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    return model


async def two_step_answer(question: str, model: ScriptedChatModel, fhir: FhirFixture):
    """The loop with the two-step choice on the handmade chart."""
    return await answer_question(
        question, fhir.patients["handmade"], model=model, fhir=fhir.client, graph="loop",
        choice="two_step",
    )  # fmt: skip


def schema_of(model: ScriptedChatModel, n: int) -> dict:
    return model.calls[n]["kwargs"]["response_format"]["schema"]


def cite_seen(answer: str):
    def reply(messages: list[BaseMessage]) -> str:
        seen = OBS.findall("\n".join(str(m.content) for m in messages))
        return json.dumps({"answer": answer, "citations": seen[-1:]})  # not the prompt's example

    return reply


async def test_two_step_picks_an_action_then_fills_only_its_arguments(fhir: FhirFixture) -> None:
    model = scripted(
        {"action": "latest_value"},
        {"test": A1C},
        {"action": FINAL},
        cite_seen("6.1 % on 2023-11-12"),
    )
    result = await two_step_answer("What is the latest hemoglobin A1c?", model, fhir)
    assert result.error is None and result.answer == "6.1 % on 2023-11-12"
    assert result.citations and result.supported and result.steps == 2
    actions = schema_of(model, 0)["properties"]["action"]["enum"]
    assert actions[: len(CHART_TOOLS)] == list(CHART_TOOLS) and actions[-1] == FINAL
    assert "search_records" in actions and "create_observation" not in actions  # read-only
    args = schema_of(model, 1)
    assert set(args["properties"]) == {"test"} and A1C in args["properties"]["test"]["enum"]
    assert A1C in str(model.calls[1]["messages"][-1].content)  # the names are listed
    cited = schema_of(model, 3)["properties"]["citations"]["items"]["enum"]
    assert cited and all(ref.startswith("Observation/") for ref in cited)  # seen refs only


async def test_two_step_drops_optional_arguments_the_question_never_names(
    fhir: FhirFixture,
) -> None:
    guessed = {"resource_type": "Observation", "status": "active", "code": "9999-9", "limit": 3}
    model = scripted(
        {"action": "search_records"}, guessed, {"action": FINAL},
        {"answer": "Nothing found", "citations": []},
    )  # fmt: skip
    result = await two_step_answer("Show the observations", model, fhir)
    call = next(m for m in result.messages if m.get("tool_calls"))["tool_calls"][0]
    assert call["name"] == "search_records" and call["args"] == {"resource_type": "Observation"}
    shown = schema_of(model, 1)
    assert "default" not in json.dumps(shown)  # no default to copy


async def test_one_call_is_one_schema_over_every_tool(fhir: FhirFixture) -> None:
    model = scripted(
        {"action": "latest_value", "args": {"test": A1C}},
        lambda m: json.dumps({"action": FINAL, **json.loads(cite_seen("6.1 % on 2023-11-12")(m))}),
    )
    result = await answer_question(
        "Latest A1c?", fhir.patients["handmade"], model=model, fhir=fhir.client, graph="loop",
        choice="one_call",
    )  # fmt: skip
    assert result.error is None and result.supported and len(model.calls) == 2
    assert len(schema_of(model, 0)["anyOf"]) > len(CHART_TOOLS)


async def test_an_unsupported_number_is_repaired_once_then_flagged(fhir: FhirFixture) -> None:
    call = {"action": "latest_value", "args": {"test": A1C}}
    wrong = {"action": FINAL, "answer": "7.9 % on 2023-11-12", "citations": []}
    model = scripted(call, wrong, wrong)
    result = await answer_question(
        "Latest A1c?", fhir.patients["handmade"], model=model, fhir=fhir.client, graph="loop",
        choice="one_call",
    )  # fmt: skip
    assert result.answer.startswith("7.9") and result.unsupported == ["7.9"]
    assert not result.supported and len(model.calls) == 3
    repair = str(model.calls[2]["messages"][-1].content)
    assert "appear in no tool result: 7.9" in repair


async def test_a_supported_answer_is_not_sent_back(fhir: FhirFixture) -> None:
    call = {"action": "latest_value", "args": {"test": A1C}}
    right = {"action": FINAL, "answer": "6.1 % on 2023-11-12", "citations": []}
    model = scripted(call, right)
    result = await answer_question(
        "Latest A1c?", fhir.patients["handmade"], model=model, fhir=fhir.client, graph="loop",
        choice="one_call",
    )  # fmt: skip
    assert result.unsupported == [] and len(model.calls) == 2


class Referral(BaseModel):
    specialty: str


def referral_tool(orders: list[str]):
    async def refer(**kwargs: object) -> tuple[str, list[str]]:
        orders.append(str(kwargs["specialty"]))
        return tool_result("Created ServiceRequest/sr1", ["ServiceRequest/sr1"])

    return cited_tool(
        "create_service_request", "Order a referral.", Referral, coroutine=refer,
        metadata={REQUIRES_APPROVAL: True},
    )  # fmt: skip


async def test_an_order_written_as_text_is_sent_back_to_the_write_tool() -> None:
    orders: list[str] = []
    task = "Order an orthopedic surgery referral for the patient."
    model = scripted(
        {"action": FINAL, "answer": "Referral to orthopedic surgery placed."},
        {"action": "create_service_request", "args": {"specialty": "orthopedic surgery"}},
        {"action": FINAL, "answer": "Done."},
    )
    result = await run_tool_loop(
        task, [referral_tool(orders)], model=model, task=task, choice="one_call"
    )
    assert orders == ["orthopedic surgery"] and result.checks == ["write"]
    nudge = str(model.calls[1]["messages"][-1].content)
    assert "calling a write tool (create_service_request)" in nudge


async def test_a_conditional_order_is_left_to_the_model() -> None:
    task = "Check the potassium. If it is low, order potassium replacement."
    model = scripted({"action": FINAL, "answer": "Potassium normal; nothing ordered."})
    result = await run_tool_loop(
        task, [referral_tool([])], model=model, task=task, choice="one_call"
    )
    assert result.checks == [] and len(model.calls) == 1


async def test_settle_name_takes_the_value_the_question_names() -> None:
    lists = ["medications", "conditions", "allergies"]
    assert settle_name("Any drug or food allergies on file?", "medications", lists) == "allergies"
    assert settle_name("what is she on at the moment", "medications", lists) == "medications"
    tests = ["Body mass index (BMI) [Percentile] Per age and sex", "Body mass index (BMI) [Ratio]",
             "Body Height", NOT_IN_CHART]  # fmt: skip
    assert settle_name("her BMI lately?", tests[0], tests) == tests[1]  # no percentile asked
    assert settle_name("BMI percentile for age?", tests[0], tests) == tests[0]
    assert settle_name("last troponin?", tests[2], tests) == NOT_IN_CHART  # names none of them


async def test_two_step_settles_a_chart_tools_name_by_the_questions_words(
    fhir: FhirFixture,
) -> None:
    model = scripted(
        {"action": "current_list"}, {"items": "medications"}, {"action": FINAL},
        {"answer": "None recorded", "citations": []},
    )  # fmt: skip
    result = await two_step_answer("Is she allergic to anything we know of?", model, fhir)
    call = next(m for m in result.messages if m.get("tool_calls"))["tool_calls"][0]
    assert call == {**call, "name": "current_list", "args": {"items": "allergies"}}


async def test_the_first_action_is_the_chart_tool_the_questions_words_point_at(
    fhir: FhirFixture,
) -> None:
    """'How old' is the age tool whatever the model picks first; later steps are its own."""
    model = scripted(
        {"action": "latest_value"}, {"on": "2020-01-01"},
        {"action": "latest_value"}, {"test": A1C},
        {"action": FINAL}, cite_seen("6.1 %"),
    )  # fmt: skip
    result = await two_step_answer("how old was she on 2020-01-01, and her A1c?", model, fhir)
    calls = [c["name"] for m in result.messages for c in m.get("tool_calls") or []]
    assert calls == ["age", "latest_value"]
    assert set(schema_of(model, 1)["properties"]) == {"on"}  # the age tool's arguments
    kept = scripted({"action": "count_records"}, {"record_type": "Encounter"},
                    *[{"action": FINAL}, {"answer": "n", "citations": []}] * 2)  # fmt: skip
    await two_step_answer("How many visits in 2021?", kept, fhir)
    assert set(schema_of(kept, 1)["properties"]) >= {"record_type"}  # a counting tool: kept


async def test_two_step_sends_back_a_final_answer_that_names_a_tool(fhir: FhirFixture) -> None:
    model = scripted(
        {"action": "latest_value"},
        {"test": A1C},
        {"action": FINAL},
        json.dumps({"answer": "latest_value", "citations": []}),  # a tool's name, not a value
        cite_seen("6.1 % on 2023-11-12"),
    )
    result = await two_step_answer("What is the latest hemoglobin A1c?", model, fhir)
    assert result.error is None and result.answer == "6.1 % on 2023-11-12"
    repair = str(model.calls[4]["messages"][-1].content)
    assert "latest_value is a tool, not an answer" in repair


async def test_a_count_of_a_tests_results_counts_its_values_not_records(
    fhir: FhirFixture,
) -> None:
    """'How many A1c results' is the test's values, even when the model picks the record
    count (which counted every DiagnosticReport); 'how many visits' keeps the record count."""
    model = scripted({"action": "count_records"}, {"test": A1C}, {"action": FINAL},
                     cite_seen("2"))  # fmt: skip
    result = await two_step_answer("How many hemoglobin A1c results are recorded?", model, fhir)
    calls = [c["name"] for m in result.messages for c in m.get("tool_calls") or []]
    assert calls == ["values_in_window"]
    assert "test" in schema_of(model, 1)["properties"]


def test_a_name_lacking_the_specimen_asked_for_is_not_recorded() -> None:
    """As the planner's choice: serum potassium asked, only blood potassium charted."""
    tests = ["Potassium [Moles/volume] in Blood", "Glucose [Mass/volume] in Blood",
             "American house dust mite IgE Ab [Units/volume] in Serum", NOT_IN_CHART]  # fmt: skip
    assert settle_name("Most recent serum potassium?", tests[2], tests) == NOT_IN_CHART
    assert settle_name("Latest serum glucose result?", tests[1], tests) == NOT_IN_CHART
    assert settle_name("Latest blood sugar?", tests[1], tests) == tests[1]  # blood for serum
    assert settle_name("Latest potassium?", tests[0], tests) == tests[0]
    assert settle_name("Latest potassium?", tests[0], tests[:-1]) == tests[0]  # none offered


async def test_a_count_answer_must_give_the_count_the_tool_gave(fhir: FhirFixture) -> None:
    """A small model writes the number of records it sees listed, not the total: the finish
    sends the answer back once with the count named; phrased unlike the eval's template."""
    model = scripted({"action": "values_in_window"}, {"test": A1C}, {"action": FINAL},
                     cite_seen("She has had 17 of them."), {"action": FINAL},
                     lambda m: cite_seen(re.findall(r"counts (\d+)", str(m))[0])(m))  # fmt: skip
    result = await two_step_answer("How many times has her A1c been checked?", model, fhir)
    tool = next(m for m in result.messages if m["role"] == "tool")
    total = re.match(r"(\d+) ", tool["content"]).group(1)
    repair = next(
        str(c["messages"][-1].content)
        for c in model.calls
        if "counts" in str(c["messages"][-1].content)
    )
    assert f"values_in_window result above counts {total}" in repair
    assert result.answer == total and result.supported


def test_a_count_is_read_from_the_counting_tool_and_dates_are_not_counts() -> None:
    from langchain_core.messages import ToolMessage

    from wardround.graphs.finish_check import last_count, miscounted

    history = [
        ToolMessage(
            "7 Sodium results: min 136 on 2017-10-03", tool_call_id="a", name="values_in_window"
        ),
        ToolMessage("Error: no such test", tool_call_id="b", name="values_in_window"),
    ]
    counted = last_count(history, frozenset({"values_in_window"}))
    assert counted == ("values_in_window", 7)
    assert miscounted("3 results, the last on 2017-10-07", counted)
    assert not miscounted("7 sodium results (latest 2024-07-23)", counted)
    none = last_count([ToolMessage("No results of X.", tool_call_id="c", name="count_records")],
                      frozenset({"count_records"}))  # fmt: skip
    assert none == ("count_records", 0) and not miscounted("No results are recorded.", none)
    assert last_count(history, frozenset({"count_records"})) is None


async def test_a_year_the_question_names_becomes_the_count_window(fhir: FhirFixture) -> None:
    """The model leaves the dates out; the year the question names bounds the count (as the
    planner reads it), and a date the model gives stands."""
    model = scripted({"action": "count_records"}, {"record_type": "Encounter"},
                     *[{"action": FINAL}, cite_seen("1")] * 2)  # fmt: skip
    result = await two_step_answer("Number of visits she had during 2021?", model, fhir)
    call = next(c for m in result.messages for c in m.get("tool_calls") or [])
    assert call["args"]["date_from"] == "2021-01-01" and call["args"]["date_to"] == "2021-12-31"
    tool = next(m for m in result.messages if m["role"] == "tool")
    assert "2021-01-01" in tool["content"] or tool["content"].startswith("No ")
    kept = scripted({"action": "count_records"}, {"record_type": "Encounter"},
                    *[{"action": FINAL}, cite_seen("1")] * 2)  # fmt: skip
    result = await two_step_answer("How many visits has she had?", kept, fhir)
    call = next(c for m in result.messages for c in m.get("tool_calls") or [])
    assert "date_from" not in call["args"]  # no year named: no window
