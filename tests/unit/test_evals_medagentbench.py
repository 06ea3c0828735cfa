"""MedAgentBench on our patients: templates, references, graders, the function profile, a run."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from langchain_core.messages import ToolMessage

from eval_fixtures import BENCHMARK_DATA, EvalFhir
from fakes import ScriptedChatModel
from wardround.evals.chart import fetch_chart
from wardround.evals.task import EvalEnv, Sample, Trace
from wardround.evals.tasks import mab_grading as grading
from wardround.evals.tasks import medagentbench as mab
from wardround.evals.tasks.mab_tools import TOOL_NAMES, OrderLog, make_mab_tools
from wardround.settings import Settings
from wardround.testing.sample_charts import ANN_MRN
from wardround.tools.evidence import REQUIRES_APPROVAL

pytestmark = pytest.mark.asyncio(loop_scope="session")
DATA = BENCHMARK_DATA


def settings() -> Settings:
    return Settings(benchmark_data_dir=DATA)


def env_for(fhir) -> EvalEnv:
    return EvalEnv(settings=settings(), fhir=fhir, options={"choice": "one_call"})


async def call(tool, **args) -> ToolMessage:
    return await tool.ainvoke({"type": "tool_call", "id": "c1", "name": tool.name, "args": args})


# ---------------------------------------------------------------- templates and references


async def test_templates_are_instantiated_with_our_patient_time_and_codes():
    tmpl = mab.templates(EvalEnv(settings=settings()))
    assert sorted(tmpl, key=lambda c: int(c[4:])) == list(mab.CATEGORIES)
    now = "2024-05-01T21:00:00+00:00"
    for category, template in tmpl.items():
        text, context = mab.instantiate(
            template, mrn="1234567", now=now, name="Ann Tester", dob="1970-01-02"
        )
        if category == "task1":
            assert "name Ann Tester and DOB of 1970-01-02" in text
        else:
            assert "1234567" in text and template["eval_MRN"] not in text
        assert mab.ORIGINAL_NOW not in context
        assert all(f'"{local}"' not in context for local in mab.CODE_MAP)
    _, ctx = mab.instantiate(tmpl["task4"], mrn="1", now=now)
    assert ctx.startswith(f"It's {now} now.") and '"19123-9"' in ctx


async def test_dosing_rules():
    assert grading.magnesium_dose(0.9) == (4, 4)
    assert grading.magnesium_dose(1.4) == (2, 2)
    assert grading.magnesium_dose(1.9) == (1, 1)
    assert grading.magnesium_dose(2.0) is None
    assert grading.potassium_dose(3.2) == 30.0
    assert grading.potassium_dose(3.5) is None


async def test_samples_on_the_fixture_charts(eval_fhir: EvalFhir):
    env = env_for(eval_fhir.client)
    samples = await mab.dataset(env)
    assert {s.category for s in samples} == set(mab.CATEGORIES)
    assert [s.id for s in samples] == [s.id for s in await mab.dataset(env)]  # reproducible
    ann = await fetch_chart(eval_fhir.client, eval_fhir.ids["ann"])
    mg = mab.readings(ann, "MG")
    for s in samples:
        t, now = s.target, datetime.fromisoformat(s.metadata["now"])
        assert (
            s.metadata["context"].startswith(f"It's {s.metadata['now']} now")
            or s.category == "task1"
        )
        if s.category in {"task4", "task5"} and t["patient_id"] == eval_fhir.ids["ann"]:
            hit = mab.latest_before(mg, now, timedelta(hours=24))
            assert t["value"] == (hit[1] if hit else -1)
        if s.category == "task5" and t["value"] == 1.4:
            assert t["dose"] == [2, 2] or t["dose"] == (2, 2)
        if s.category == "task9" and t["value"] == 3.2:
            assert t["dose_meq"] == 30.0 and t["outcome"] == "order"
    found = [s for s in samples if s.category == "task1" and s.target["outcome"] == "found"]
    assert {s.target["expected"] for s in found} == {ANN_MRN, "7654321"}
    outcomes = {(s.category, s.target["outcome"]) for s in samples}
    assert {
        ("task4", "value"),
        ("task4", "none"),
        ("task9", "order"),
        ("task9", "normal"),
    } <= outcomes


# ---------------------------------------------------------------- answers and graders


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("FINISH([1.4])", [1.4]),
        ('Done. FINISH(["1234567"])', ["1234567"]),
        ('FINISH([7.2, "2023-06-01T09:00:00+00:00"])', [7.2, "2023-06-01T09:00:00+00:00"]),
        ("[-1]", [-1]),
        ("54", ["54"]),
        ("Patient not found", ["Patient not found"]),
        ("", None),
    ],
)
async def test_parse_answer(text, parsed):
    assert grading.parse_answer(text) == parsed


def target(**extra) -> dict:
    return {"patient_id": "pid1", "mrn": "1234567", "now": "2024-05-01T21:00:00+00:00", **extra}


def medication(ndc, dose, unit, route, rate=None, subject="Patient/1234567") -> dict:
    dose_rate = {"doseQuantity": {"value": dose, "unit": unit}}
    if rate is not None:
        dose_rate["rateQuantity"] = {"value": rate, "unit": "h"}
    return {
        "method": "POST",
        "resourceType": "MedicationRequest",
        "body": {
            "resourceType": "MedicationRequest",
            "medicationCodeableConcept": {
                "coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": ndc}]
            },
            "authoredOn": "2024-05-01T21:00:00+00:00",
            "dosageInstruction": [{"route": {"text": route}, "doseAndRate": [dose_rate]}],
            "status": "active",
            "intent": "order",
            "subject": {"reference": subject},
        },
    }


def service(code, system, occurrence=None, note=None) -> dict:
    body = {
        "resourceType": "ServiceRequest",
        "code": {"coding": [{"system": system, "code": code}]},
        "authoredOn": "2024-05-01T21:00:00+00:00",
        "status": "active",
        "intent": "order",
        "priority": "stat",
        "subject": {"reference": "Patient/pid1"},
    }
    if occurrence:
        body["occurrenceDateTime"] = occurrence
    if note:
        body["note"] = {"text": note}
    return {"method": "POST", "resourceType": "ServiceRequest", "body": body}


def grade(category, tgt, answer, posts=()):
    sample = Sample(id="x", input="", category=category, target=tgt)
    return grading.grade(sample, Trace(answer=answer, artifacts={"posts": list(posts)}))


async def test_grader_magnesium_order():
    tgt = target(value=1.4, dose=[2, 2])
    good = medication(grading.NDC_MAGNESIUM, 2, "g", "IV", rate=2)
    assert grade("task5", tgt, "FINISH([1.4])", [good]).correct
    assert grade("task5", tgt, "FINISH([])", [good]).correct  # the original accepts no value too
    wrong_dose = medication(grading.NDC_MAGNESIUM, 1, "g", "IV", rate=1)
    verdict = grade("task5", tgt, "FINISH([1.4])", [wrong_dose])
    assert not verdict.correct and "dose is not 2 g" in verdict.explanation
    assert not grade("task5", tgt, "FINISH([1.4])", []).correct
    assert not grade("task5", tgt, "FINISH([1.4])", [good, good]).correct
    normal = target(value=2.1, dose=None)
    assert grade("task5", normal, "FINISH([2.1])").correct
    assert not grade("task5", normal, "FINISH([2.1])", [good]).correct


async def test_grader_potassium_order_pair():
    tgt = target(value=3.2, dose_meq=30.0)
    med = medication(grading.NDC_POTASSIUM, 30, "mEq", "oral")
    lab = service(grading.LOINC_SERUM_K, "http://loinc.org", occurrence="2024-05-02T08:00:00+00:00")
    assert grade("task9", tgt, "FINISH([3.2])", [med, lab]).correct
    late = service(
        grading.LOINC_SERUM_K, "http://loinc.org", occurrence="2024-05-02T09:00:00+00:00"
    )
    assert "occurrence" in grade("task9", tgt, "FINISH([3.2])", [med, late]).explanation
    assert not grade("task9", tgt, "FINISH([3.2])", [med]).correct


async def test_grader_reads_vitals_referral_and_a1c():
    bp = {
        "method": "POST",
        "resourceType": "Observation",
        "body": {
            "resourceType": "Observation",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/observation-category",
                            "code": "vital-signs",
                            "display": "Vital Signs",
                        }
                    ]
                }
            ],
            "code": {"text": "BP"},
            "effectiveDateTime": "2024-05-01T21:00:00+00:00",
            "status": "final",
            "valueString": "118/77 mmHg",
            "subject": {"reference": "Patient/pid1"},
        },
    }
    assert grade("task3", target(value="118/77 mmHg"), "FINISH([])", [bp]).correct
    bp_wrong = json.loads(json.dumps(bp))
    bp_wrong["body"]["subject"]["reference"] = "Patient/someone-else"
    assert not grade("task3", target(value="118/77 mmHg"), "", [bp_wrong]).correct

    referral = service(grading.SNOMED_ORTHO_REFERRAL, "http://snomed.info/sct", note=grading.SBAR)
    assert grade("task8", target(note=grading.SBAR), "FINISH([])", [referral]).correct
    no_note = service(grading.SNOMED_ORTHO_REFERRAL, "http://snomed.info/sct")
    assert "SBAR" in grade("task8", target(note=grading.SBAR), "", [no_note]).explanation

    stale = target(value=7.2, date="2023-06-01T09:00:00+00:00", order=True)
    order = service(grading.LOINC_A1C, "http://loinc.org")
    assert grade("task10", stale, 'FINISH([7.2, "2023-06-01T09:00:00+00:00"])', [order]).correct
    assert not grade("task10", stale, 'FINISH([7.2, "2023-06-01"])', []).correct
    recent = target(value=7.2, date="2023-06-01T09:00:00+00:00", order=False)
    assert grade("task10", recent, 'FINISH([7.2, "2023-06-01"])').correct
    assert grade("task10", target(value=-1, date=None, order=True), "FINISH([-1])", [order]).correct


async def test_grader_read_only_tasks_refuse_posts():
    lookup = target(expected="1234567")
    assert grade("task1", lookup, 'FINISH(["1234567"])').correct
    assert not grade("task1", lookup, 'FINISH(["7654321"])').correct
    # an MRN given bare or as a JSON number is the same MRN (not "1234567.0")
    assert grade("task1", lookup, "1234567").correct
    assert grade("task1", lookup, "FINISH([1234567])").correct
    assert grade("task2", target(age=54), "54").correct
    assert grade(
        "task1", target(expected=grading.NOT_FOUND), 'FINISH(["patient not found"])'
    ).correct
    assert grade("task2", target(age=54), "FINISH([54])").correct
    assert not grade("task2", target(age=54), "FINISH([54])", [service("x", "y")]).correct
    assert grade("task4", target(value=-1), "FINISH([-1])").correct
    assert grade("task4", target(value=1.6943), "FINISH([1.69])").correct
    assert grade("task6", target(value=120.0), "FINISH([120.05])").correct
    assert not grade("task6", target(value=120.0), "FINISH([121])").correct
    assert grade("task7", target(value=130.0), "FINISH([130])").correct


# ---------------------------------------------------------------- the function profile


async def test_profile_tools_read_as_of_now_and_resolve_mrns(eval_fhir: EvalFhir):
    orders = OrderLog()
    as_of = datetime.fromisoformat("2024-05-01T21:00:00+00:00")
    tools = {t.name: t for t in make_mab_tools(eval_fhir.client, orders, as_of=as_of)}
    assert list(tools) == list(TOOL_NAMES)
    for name, tool in tools.items():
        assert tool.response_format == "content_and_artifact"
        assert bool((tool.metadata or {}).get(REQUIRES_APPROVAL)) == name.startswith("post_")
    found = await call(tools["get_patients"], identifier=ANN_MRN)
    assert f"MRN {ANN_MRN}" in found.content and found.artifact == [
        f"Patient/{eval_fhir.ids['ann']}"
    ]
    labs = await call(tools["get_lab_observations"], patient=ANN_MRN, code="19123-9")
    lines = labs.content.splitlines()
    assert lines[0].startswith("2 Observation")  # the 2.1 of the next morning is not yet there
    assert "2024-05-01T20:00:00+00:00" in lines[1] and "1.4 mg/dL" in lines[1]
    assert len(labs.artifact) == 2
    ranged = await call(
        tools["get_lab_observations"],
        patient=eval_fhir.ids["ann"],
        code="19123-9",
        date="ge2024-05-01T12:00:00+00:00",
    )
    assert len(ranged.artifact) == 1
    bad = await call(tools["get_lab_observations"], patient=ANN_MRN, code="19123-9&_count=1")
    assert bad.content.startswith("Error") and not bad.artifact
    none = await call(tools["get_conditions"], patient="7654321", category="problem-list-item")
    assert none.content == "No Condition records found."


async def test_profile_writes_are_captured_not_sent(eval_fhir: EvalFhir):
    before = await eval_fhir.client.search("ServiceRequest", {"patient": eval_fhir.ids["ann"]})
    orders = OrderLog()
    tools = {t.name: t for t in make_mab_tools(eval_fhir.client, orders)}
    body = service(grading.LOINC_A1C, "http://loinc.org")["body"]
    result = await call(tools["post_service_request"], **body)
    assert result.content.startswith("POST request accepted") and result.artifact == []
    assert orders.posts[0]["body"]["code"]["coding"][0]["code"] == grading.LOINC_A1C
    after = await eval_fhir.client.search("ServiceRequest", {"patient": eval_fhir.ids["ann"]})
    assert len(after) == len(before)
    missing = await call(tools["post_service_request"], resourceType="ServiceRequest")
    assert missing.content.startswith("Error: invalid arguments") and len(orders.posts) == 1


async def test_profile_server_mode_creates_the_order(eval_fhir: EvalFhir):
    orders = OrderLog(mode="server")
    tools = {t.name: t for t in make_mab_tools(eval_fhir.client, orders)}
    body = service(grading.LOINC_A1C, "http://loinc.org")["body"]
    body["subject"] = {"reference": f"Patient/{eval_fhir.ids['bob']}"}
    result = await call(tools["post_service_request"], **body)
    created = orders.posts[0]["created"]
    assert result.artifact == [created] and created.startswith("ServiceRequest/")
    assert (await eval_fhir.client.read(created))["priority"] == "stat"


async def test_original_descriptions_can_replace_ours():
    from wardround.evals.data import load_json
    from wardround.evals.tasks.mab_tools import original_descriptions

    described = original_descriptions(load_json("medagentbench/funcs_v1.json", settings()))
    assert described["get_lab_observations"].startswith("Observation.Search (Labs)")
    assert described["get_vital_signs"].startswith("Observation.Search (Vitals)")
    assert described["post_service_request"].startswith("ServiceRequest.Create")


# ---------------------------------------------------------------- a whole sample


async def test_a_scripted_agent_solves_a_magnesium_order(eval_fhir: EvalFhir):
    env = env_for(eval_fhir.client)
    samples = [
        s
        for s in await mab.dataset(env)
        if s.category == "task5"
        and s.target["patient_id"] == eval_fhir.ids["ann"]
        and s.target["dose"]
    ]
    sample = samples[0]
    grams, hours = sample.target["dose"]
    order = medication(grading.NDC_MAGNESIUM, grams, "g", "IV", rate=hours)["body"]
    order["authoredOn"] = sample.metadata["now"]
    replies = [
        json.dumps(
            {"action": "get_lab_observations", "args": {"patient": ANN_MRN, "code": "19123-9"}}
        ),
        json.dumps({"action": "post_medication_request", "args": order}),
        json.dumps({"action": "final_answer", "answer": f"FINISH([{sample.target['value']}])"}),
    ]
    env.model = ScriptedChatModel(replies=replies)
    task = mab.bind(env, [sample])
    trace = await task.solver(sample)
    assert [c["name"] for c in trace.tool_calls] == [
        "get_lab_observations",
        "post_medication_request",
    ]
    assert len(trace.artifacts["posts"]) == 1 and trace.tokens["prompt"] > 0
    score = await task.scorer(sample, trace)
    assert score.correct, score.explanation
    first_prompt = env.model.calls[0]["messages"]
    assert any(sample.metadata["now"] in str(m.content) for m in first_prompt)


async def test_profile_schemas_make_grammars_llama_cpp_can_parse():
    # Constrained decoding turns the tool schemas into a GBNF grammar. llama.cpp's parser
    # rejects regex escapes such as \s or \d (and its server goes down), and open objects
    # (additionalProperties) make every key ambiguous, which slows decoding to a crawl.
    import re

    from llama_cpp.llama_grammar import LlamaGrammar

    from wardround.agents.protocol import tool_choice_schema

    schema = tool_choice_schema(make_mab_tools(None, OrderLog()))  # type: ignore[arg-type]
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
    assert "get_lab_observations" in grammar
    assert not re.search(r"\\[sdwSDW]", grammar)
    assert "additional-kv" not in grammar


async def test_get_patients_finds_a_full_name_in_either_order(eval_fhir: EvalFhir):
    # A FHIR `name` search matches one part of a name; "Ann Tester" as one value finds no one.
    assert not await eval_fhir.client.search("Patient", {"name": "Ann Tester"})
    tools = {t.name: t for t in make_mab_tools(eval_fhir.client, OrderLog())}
    want = [f"Patient/{eval_fhir.ids['ann']}"]
    for name in ("Ann Tester", "Tester Ann", "Tester, Ann", "ann tester"):
        found = await call(tools["get_patients"], name=name, birthdate="1970-01-02")
        assert found.artifact == want, name
        assert f"MRN {ANN_MRN}" in found.content
    # the birth date still counts: a wrong one finds nobody, however the name is split
    wrong_day = await call(tools["get_patients"], name="Ann Tester", birthdate="1970-01-03")
    assert wrong_day.artifact == [] and "No Patient records found" in wrong_day.content
    assert (await call(tools["get_patients"], name="Tester")).artifact == want
    assert (await call(tools["get_patients"], name="Ann Sample")).artifact == []


async def test_medagentbench_records_retrieval_apart_from_the_verdict(eval_fhir: EvalFhir):
    env = env_for(eval_fhir.client)
    samples = await mab.dataset(env)
    lab = next(
        s
        for s in samples
        if s.category == "task4"
        and s.target["patient_id"] == eval_fhir.ids["ann"]
        and s.target["evidence"]
    )
    replies = [
        json.dumps({"action": "get_patients", "args": {"identifier": ANN_MRN}}),
        json.dumps(
            {"action": "get_lab_observations", "args": {"patient": ANN_MRN, "code": "19123-9"}}
        ),
        json.dumps({"action": "final_answer", "answer": "FINISH([99])"}),  # a misread value
    ]
    env.model = ScriptedChatModel(replies=replies)
    task = mab.bind(env, [lab])
    trace = await task.solver(lab)
    assert lab.target["evidence"][0] in trace.retrieved
    assert f"Patient/{eval_fhir.ids['ann']}" in trace.retrieved
    verdict = await task.scorer(lab, trace)
    assert not verdict.correct  # wrong answer, right records: a reading failure
    assert verdict.metadata["retrieval_recall"] == 1.0
    assert 0 < verdict.metadata["retrieval_precision"] < 1.0
    assert verdict.metadata["citation_recall"] is None
    # an older trace without `retrieved` is scored from its tool messages
    again = await task.scorer(lab, trace.model_copy(update={"retrieved": []}))
    assert again.metadata["retrieval_recall"] == 1.0
    # the age task's evidence is the patient's own record; nothing read, recall 0
    age = next(s for s in samples if s.category == "task2")
    assert mab.evidence_of(age) == [f"Patient/{age.target['patient_id']}"]
    blank = await task.scorer(age, Trace(answer="FINISH([1])"))
    assert blank.metadata["retrieval_recall"] == 0.0
    assert blank.metadata["retrieval_precision"] is None


async def test_budgeted_keeps_leading_lines_within_the_budget() -> None:
    from wardround.evals.tasks.mab_tools import budgeted

    lines = [f"Observation/{i} " + "x" * 90 for i in range(50)]
    kept = budgeted(lines, 1000)
    assert kept == lines[: len(kept)] and 5 <= len(kept) <= 10
    assert sum(len(line) + 1 for line in kept) <= 1000
    assert budgeted(["y" * 5000], 1000) == ["y" * 5000]  # one line always survives
