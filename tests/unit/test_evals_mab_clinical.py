"""MedAgentBench's clinical tool profile: the task's "now", windows in hours, and writes whose
FHIR bodies the tool builds and the original's graders accept."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from langchain_core.messages import ToolMessage

from eval_fixtures import BENCHMARK_DATA, EvalFhir
from fakes import ScriptedChatModel
from wardround.evals.task import EvalEnv, Trace
from wardround.evals.tasks import mab_grading as grading
from wardround.evals.tasks import medagentbench as mab
from wardround.evals.tasks.mab_clinical import CLINICAL_TOOLS, WRITES, make_clinical_tools
from wardround.evals.tasks.mab_tools import OrderLog
from wardround.settings import Settings
from wardround.testing.sample_charts import ANN_MRN
from wardround.tools.evidence import REQUIRES_APPROVAL

pytestmark = pytest.mark.asyncio(loop_scope="session")
NOW = datetime.fromisoformat("2024-05-01T21:00:00+00:00")


async def call(tool, **args) -> ToolMessage:
    return await tool.ainvoke({"type": "tool_call", "id": "c1", "name": tool.name, "args": args})


def two_step_env(eval_fhir: EvalFhir) -> EvalEnv:
    """MedAgentBench with the clinical tools, the two-step choice and the finish checks."""
    return EvalEnv(
        settings=Settings(benchmark_data_dir=BENCHMARK_DATA),
        fhir=eval_fhir.client,
        options={"tools": "clinical", "choice": "two_step", "check": "on"},
    )


def tools_for(fhir, orders: OrderLog, now: datetime | None = NOW) -> dict:
    return {t.name: t for t in make_clinical_tools(fhir, orders, as_of=now)}


async def test_the_profile_keeps_the_searches_and_marks_the_writes(eval_fhir: EvalFhir):
    tools = tools_for(eval_fhir.client, OrderLog())
    assert set(CLINICAL_TOOLS) <= set(tools) and "get_patients" in tools
    assert "get_lab_observations" not in tools and "post_service_request" not in tools
    for name, tool in tools.items():
        assert bool((tool.metadata or {}).get(REQUIRES_APPROVAL)) == (name in WRITES)
    assert tools["patient_age"].metadata["kinds"] == ["age"]


async def test_lab_values_in_the_last_hours_as_of_now(eval_fhir: EvalFhir):
    tools = tools_for(eval_fhir.client, OrderLog())
    every = await call(tools["lab_values"], patient=ANN_MRN, code="19123-9")
    # The 2.1 of the next morning is after "now": not shown.
    assert every.content.startswith("2 result(s)") and "2.1" not in every.content
    assert "Latest: 1.4 mg/dL at 2024-05-01T20:00:00+00:00 (1.0 hours before now)" in every.content
    assert "mean 1.55 mg/dL" in every.content and len(every.artifact) == 2
    recent = await call(tools["lab_values"], patient=ANN_MRN, code="19123-9", within_hours=12)
    assert recent.content.startswith("1 result(s) of code 19123-9 in the last 12 hours")
    assert len(recent.artifact) == 1
    earlier = tools_for(eval_fhir.client, OrderLog(), datetime.fromisoformat("2024-05-01T19:00Z"))
    none = await call(earlier["lab_values"], patient=ANN_MRN, code="19123-9", within_hours=10)
    assert none.content.startswith("No result of code 19123-9 in the last 10 hours")
    assert none.artifact == []


async def test_age_is_on_the_tasks_day_not_today(eval_fhir: EvalFhir):
    tools = tools_for(eval_fhir.client, OrderLog())
    found = await call(tools["patient_age"], patient=ANN_MRN)
    assert found.content.startswith("54 years old on 2024-05-01")  # born 1970-01-02
    timeless = tools_for(eval_fhir.client, OrderLog(), now=None)
    error = await call(timeless["patient_age"], patient=ANN_MRN)
    assert error.content.startswith("Error") and "now" in error.content


async def test_writes_build_bodies_the_graders_accept(eval_fhir: EvalFhir):
    orders = OrderLog()
    tools = tools_for(eval_fhir.client, orders)
    target = {"patient_id": eval_fhir.ids["ann"], "mrn": ANN_MRN, "now": NOW.isoformat()}
    await call(tools["record_vital"], patient=ANN_MRN, flowsheet_id="BP", value="118/77 mmHg")
    vital = grading.Checks()
    grading.GRADERS["task3"](
        vital, {**target, "value": "118/77 mmHg"}, [], [orders.posts[0]["body"]]
    )
    assert not vital.failed, vital.failed
    await call(tools["order_medication"], patient=ANN_MRN, ndc=grading.NDC_POTASSIUM, dose=10,
               unit="mEq", route="oral")  # fmt: skip
    await call(tools["order_service"], patient=ANN_MRN, system="loinc", code=grading.LOINC_SERUM_K,
               at="2024-05-02T08:00:00+00:00")  # fmt: skip
    pair = grading.Checks()
    bodies = [p["body"] for p in orders.posts[1:]]
    grading.GRADERS["task9"](pair, {**target, "value": 3.4, "dose_meq": 10.0}, [3.4], bodies)
    assert not pair.failed, pair.failed
    bad = await call(tools["order_service"], patient=ANN_MRN, system="icd", code="X")
    assert bad.content.startswith("Error: invalid arguments") and len(orders.posts) == 3


async def test_a_two_step_agent_orders_magnesium_with_the_clinical_tools(eval_fhir: EvalFhir):
    env = two_step_env(eval_fhir)
    sample = next(
        s
        for s in await mab.dataset(env)
        if s.category == "task5"
        and s.target["patient_id"] == eval_fhir.ids["ann"]
        and s.target["dose"]
    )
    grams, hours = sample.target["dose"]
    replies = [
        {"action": "get_conditions"},  # words say "last ... level": the first step reads the lab
        {"patient": ANN_MRN, "code": "19123-9", "within_hours": 24},
        {"action": "order_medication"},
        # "If low, then order": the model reads value and limit, code compares
        {"value": sample.target["value"], "limit": 1.9, "holds_when": "at_or_below"},
        {
            "patient": ANN_MRN,
            "ndc": grading.NDC_MAGNESIUM,
            "dose": grams,
            "unit": "g",
            "route": "IV",
            "over_hours": hours,
        },
        {"action": "final_answer"},
        {"answer": [sample.target["value"]]},
    ]
    env.model = ScriptedChatModel(replies=[json.dumps(r) for r in replies])
    task = mab.bind(env, [sample])
    trace: Trace = await task.solver(sample)
    assert [c["name"] for c in trace.tool_calls] == ["lab_values", "order_medication"]
    score = await task.scorer(sample, trace)
    assert score.correct, score.explanation
    assert task.info["tools"] == "clinical"
    assert re.search(r"lab_values", json.dumps(trace.artifacts["tools"]))
    gate = next(
        c
        for c in env.model.calls
        if "the task makes it conditional" in str(c["messages"][-1].content)
    )
    assert "If low, then order replacement IV magnesium" in str(gate["messages"][-1].content)


async def test_a_conditional_order_whose_condition_fails_becomes_the_answer(eval_fhir: EvalFhir):
    env = two_step_env(eval_fhir)
    sample = next(
        s
        for s in await mab.dataset(env)
        if s.category == "task5" and s.target["outcome"] == "normal"
    )
    replies = [
        {"action": "lab_values"},
        {"patient": sample.target["mrn"], "code": "19123-9", "within_hours": 24},
        {"action": "order_medication"},
        # the value read is above the limit: code says not low, the answer instead
        {"value": sample.target["value"], "limit": 1.9, "holds_when": "at_or_below"},
        {"answer": ["FINISH([order_medication])"]},  # a tool's name: sent back once
        {"answer": [sample.target["value"]]},
        {"answer": [sample.target["value"]]},  # in case the finish check asks again
    ]
    env.model = ScriptedChatModel(replies=[json.dumps(r) for r in replies])
    task = mab.bind(env, [sample])
    trace: Trace = await task.solver(sample)
    assert [c["name"] for c in trace.tool_calls] == ["lab_values"]
    assert trace.answer and str(sample.target["value"]) in trace.answer


@pytest.mark.parametrize("outcome", ["stale", "recent"])
async def test_an_a1c_older_than_a_year_is_judged_by_code_not_by_the_model(
    eval_fhir: EvalFhir, outcome: str
):
    env = two_step_env(eval_fhir)
    sample = next(
        s
        for s in await mab.dataset(env)
        if s.category == "task10" and s.target["outcome"] == outcome
    )
    mrn, value, when = sample.target["mrn"], sample.target["value"], sample.target["date"]
    order = {"patient": mrn, "system": "loinc", "code": "4548-4"}
    replies = [
        {"action": "lab_values"},
        {"patient": mrn, "code": "4548-4"},
        {"action": "order_service"},
        {"recorded": when[:10], "limit": 1, "unit": "years"},  # read; code counts the days
        *([order, {"action": "final_answer"}] if outcome == "stale" else []),
        {"answer": [value, when]},
        {"answer": [value, when]},  # in case the finish check asks again
    ]
    env.model = ScriptedChatModel(replies=[json.dumps(r) for r in replies])
    task = mab.bind(env, [sample])
    trace: Trace = await task.solver(sample)
    written = [c["name"] for c in trace.tool_calls if c["name"] == "order_service"]
    assert written == (["order_service"] if outcome == "stale" else [])
    score = await task.scorer(sample, trace)
    assert score.correct, score.explanation
    assert any("age limit" in str(c["messages"][-1].content) for c in env.model.calls)


async def test_a_read_only_task_is_offered_no_write_tool(eval_fhir: EvalFhir):
    from wardround.graphs.tool_loop import offered_tools

    tools = list(tools_for(eval_fhir.client, OrderLog()).values())
    lookup = "What's the most recent magnesium level of the patient 1234567 within last 24 hours?"
    assert not set(WRITES) & {t.name for t in offered_tools(tools, lookup)}
    conditional = "Check the magnesium. If low, then order replacement IV magnesium."
    offered = {t.name for t in offered_tools(tools, conditional)}
    assert {"order_medication", "lab_values"} <= offered
    assert "record_vital" not in offered  # an order task files no vital sign on the way
    record = "I just measured the blood pressure for patient 1234567. Record it."
    assert set(WRITES) & {t.name for t in offered_tools(tools, record)} == {"record_vital"}
    lab = "If the result date is greater than 1 year old, order a new HbA1C lab test."
    assert set(WRITES) & {t.name for t in offered_tools(tools, lab)} == {"order_service"}
    drug = "If low, then order replacement IV magnesium according to dosing instructions."
    assert set(WRITES) & {t.name for t in offered_tools(tools, drug)} == {"order_medication"}
    assert len(offered_tools(tools, None)) == len(tools)


async def test_the_function_profile_offers_the_writes_a_task_names(eval_fhir: EvalFhir):
    from wardround.evals.tasks.mab_tools import make_mab_tools
    from wardround.graphs.tool_loop import offered_tools

    tools = make_mab_tools(eval_fhir.client, OrderLog(), as_of=NOW)
    refer = "Order orthopedic surgery referral for patient 1234567."
    posts = {t.name for t in offered_tools(tools, refer) if t.name.startswith("post_")}
    assert posts == {"post_service_request"}  # a referral is no prescription
    pair = "If low, order replacement potassium and pair it with a morning potassium level."
    posts = {t.name for t in offered_tools(tools, pair) if t.name.startswith("post_")}
    assert posts == {"post_medication_request", "post_service_request"}
    record = "Record the patient's blood pressure."
    posts = {t.name for t in offered_tools(tools, record) if t.name.startswith("post_")}
    assert posts == {"post_vital_observation"}


async def test_a_code_without_results_lists_the_patients_own_codes(eval_fhir: EvalFhir):
    tools = tools_for(eval_fhir.client, OrderLog())
    # 2823-3 is the serum potassium order code; the chart holds its results under others.
    reply = await call(tools["lab_values"], patient=ANN_MRN, code="2823-3")
    assert reply.content.startswith("No result of code 2823-3")
    assert "19123-9" in reply.content and reply.artifact == []
    held = {line.split()[1] for line in reply.content.splitlines() if line.startswith("- ")}
    mine = {
        c["code"]
        for o in await eval_fhir.client.search("Observation", {"patient": eval_fhir.ids["ann"]})
        for c in o["code"].get("coding", [])
    }
    assert held and held <= mine  # only this patient's codes


def test_an_hours_window_is_kept_only_where_the_task_says_hours():
    from wardround.agents.two_step import prune_optional, units_of

    units = units_of(tools_for(None, OrderLog())["lab_values"])
    assert units == {"within_hours": "hours"}
    args = {"patient": "S1", "code": "4548-4", "within_hours": 1}
    stale = "If the lab value result date is greater than 1 year old, order a new test."
    assert "within_hours" not in prune_optional(args, ["patient", "code"], stale, units)
    day = {**args, "within_hours": 24}
    assert prune_optional(day, ["patient"], "within last 24 hours", units)["within_hours"] == 24
    assert prune_optional(day, ["patient"], "in a 24-hour window", units)["within_hours"] == 24


def test_the_final_answer_is_values_not_a_tools_sentence():
    from pydantic import ValidationError

    assert mab.FinishAnswer.model_validate({"answer": "FINISH([2.1])"}).answer == [2.1]
    assert mab.FinishAnswer.model_validate({"answer": ["Patient not found"]}).answer
    assert mab.FinishAnswer.model_validate({"answer": [4068113]}).answer == [4068113]
    with pytest.raises(ValidationError, match="give only the value"):
        mab.FinishAnswer.model_validate(
            {"answer": ["No result of code 19123-9 in the last 24 hours (before now)."]}
        )


def test_the_condition_of_a_write_is_the_sentence_that_makes_it_conditional():
    from wardround.graphs.finish_check import write_condition

    a1c = "What's the last HbA1C value? If the result date is greater than 1 year old, order a new HbA1C lab test."
    assert (
        write_condition(a1c)
        == "If the result date is greater than 1 year old, order a new HbA1C lab test."
    )
    assert write_condition("Order orthopedic surgery referral for patient S1.") is None
    assert write_condition("What is the latest potassium? Is it low?") is None
