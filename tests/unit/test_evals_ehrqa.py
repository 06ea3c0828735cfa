"""EHR QA: questions and answers computed from charts on a real in-process FHIR server."""

from __future__ import annotations

import re

import pytest

from eval_fixtures import EvalFhir
from fakes import ScriptedChatModel
from wardround.evals.chart import fetch_chart
from wardround.evals.task import EvalEnv, Trace
from wardround.evals.tasks import ehrqa
from wardround.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


def by_question(samples):
    return {s.input: s for s in samples}


async def test_answers_are_computed_from_the_chart(eval_fhir: EvalFhir):
    chart = await fetch_chart(eval_fhir.client, eval_fhir.ids["ann"])
    q = ehrqa.questions_for(chart)
    latest = by_question(q["latest_value"])[
        "What is the patient's most recent hemoglobin A1c result?"
    ]
    assert latest.target["value"] == 7.2 and latest.target["unit"] == "%"
    assert len(latest.target["evidence"]) == 1 and latest.target["evidence"][0].startswith(
        "Observation/"
    )
    trend = by_question(q["trend"])
    a1c_trend = next(s for text, s in trend.items() if "hemoglobin A1c" in text)
    assert a1c_trend.target["value"] == "increased" and len(a1c_trend.target["evidence"]) == 2
    mg_trend = next(s for text, s in trend.items() if "magnesium" in text)
    assert mg_trend.target["value"] == "increased"  # 1.4 -> 2.1
    meds = q["active_medications"][0].target
    assert meds["expected"] == ["Metformin 500 MG Oral Tablet"]
    assert meds["distractors"] == ["Lisinopril 10 MG Oral Tablet"]
    assert q["allergies"][0].target["expected"] == ["Peanut (substance)"]
    since = next(s for s in q["conditions_since"] if "2024-04-15" in s.input).target
    assert since["expected"] == ["Acute bronchitis (disorder)"]
    assert since["distractors"] == ["Diabetes mellitus type 2 (disorder)"]
    counts = by_question(q["count"])
    assert counts["How many encounters did the patient have in 2024?"].target["value"] == 2
    assert counts["How many magnesium results are recorded for the patient?"].target["value"] == 3
    assert q["last_encounter"][0].target["value"] == "2024-05-02"
    ages = by_question(q["age"])
    assert ages["How old was the patient, in whole years, on 2024-05-02?"].target["value"] == 54
    on_date = by_question(q["value_on_date"])
    glucose = next(s for text, s in on_date.items() if "blood glucose on 2024-04-01" in text)
    assert glucose.target["value"] == 95.0
    # two glucose results on 2024-05-01: no value-on-date question for that day
    assert not any("blood glucose on 2024-05-01" in text for text in on_date)


async def test_nothing_recorded_questions(eval_fhir: EvalFhir):
    bob = ehrqa.questions_for(await fetch_chart(eval_fhir.client, eval_fhir.ids["bob"]))
    nothing = {s.input for s in bob["nothing_recorded"]}
    assert "What allergies or intolerances are recorded for the patient?" in nothing
    assert "Which medications does the patient currently have active prescriptions for?" in nothing
    assert sum("most recent" in text for text in nothing) == 3
    assert not bob["allergies"] and not bob["active_medications"]
    trend = bob["trend"][0]
    assert "potassium" in trend.input and trend.target["value"] == "unchanged"


async def test_dataset_covers_categories_and_is_reproducible(eval_fhir: EvalFhir):
    env = EvalEnv(settings=Settings(), fhir=eval_fhir.client)
    first = await ehrqa.dataset(env)
    again = await ehrqa.dataset(env)
    assert [s.id for s in first] == [s.id for s in again]
    assert len({s.id for s in first}) == len(first)
    categories = {s.category for s in first}
    assert categories == set(ehrqa.CATEGORIES)
    assert all(s.metadata["patient_id"] in eval_fhir.ids.values() for s in first)


async def test_paraphrases_keep_targets_and_change_wording(eval_fhir: EvalFhir):
    env = EvalEnv(settings=Settings(), fhir=eval_fhir.client)
    plain = await ehrqa.dataset(env)
    env.options["phrasing"] = "paraphrase"
    reworded = await ehrqa.dataset(env)
    assert len(plain) == len(reworded)
    for before, after in zip(plain, reworded, strict=True):
        assert after.target == before.target and after.category == before.category
        assert after.input != before.input and after.id == before.id + "-p"
    dated = [s for s in reworded if s.category == "value_on_date"]
    assert dated and not any(re.search(r"\d{4}-\d{2}-\d{2}", s.input) for s in dated)


async def test_retrieval_is_scored_apart_from_the_answer():
    from wardround.evals.scorers import retrieval_scores

    got = retrieval_scores(["A/1", "A/2"], ["A/1", "B/9", "B/8", "B/7"], ["A/1"])
    assert got == {"retrieval_recall": 0.5, "retrieval_precision": 0.25,
                   "citation_recall": 0.5, "citation_precision": 1.0}  # fmt: skip
    assert retrieval_scores([], ["A/1"], [])["retrieval_recall"] is None


async def test_selection_quota_and_redistribution():
    from wardround.evals.task import Sample

    def cands(pid: str, n_latest: int, n_age: int) -> dict:
        mk = lambda cat, i: Sample(id=f"{pid}-{cat}-{i}", input="q", category=cat)  # noqa: E731
        return {
            "latest_value": [mk("latest_value", i) for i in range(n_latest)],
            "age": [mk("age", i) for i in range(n_age)],
        }

    chosen = ehrqa.select({"p1": cands("p1", 30, 1), "p2": cands("p2", 30, 1)}, per_category=5)
    by_cat = {c: [s for s in chosen if s.category == c] for c in ("latest_value", "age")}
    assert len(by_cat["age"]) == 2
    # the 8 unfilled slots of the other categories and 3 of age go to latest_value
    assert len(by_cat["latest_value"]) == 5 + 8 * 5 + 3
    assert {s.id.split("-")[0] for s in by_cat["latest_value"]} == {"p1", "p2"}


@pytest.mark.parametrize(
    ("kind_target", "answer", "ok"),
    [
        ({"kind": "numeric", "value": 7.2, "exact": False}, "HbA1c 7.2 %", True),
        ({"kind": "numeric", "value": 2, "exact": True}, "3 encounters", False),
        ({"kind": "numeric", "value": 2, "abs_tol": 0, "rel_tol": 0}, "2.4", False),  # old file
        ({"kind": "date", "value": "2024-05-02"}, "May 2, 2024", True),
        ({"kind": "set", "expected": ["Peanut (substance)"], "distractors": []}, "peanut", True),
        ({"kind": "trend", "value": "unchanged"}, "It stayed the same.", True),
        ({"kind": "nothing"}, "Nothing is recorded.", True),
        ({"kind": "nothing"}, "The latest value is 4.4.", False),
    ],
)
async def test_scoring_by_kind(kind_target, answer, ok):
    from wardround.evals.task import Sample

    sample = Sample(id="x", input="q", target={**kind_target, "evidence": ["Observation/a"]})
    score = await ehrqa.score(sample, Trace(answer=answer, citations=["Observation/a"]))
    assert score.correct is ok
    assert score.metadata["cites_evidence"] is True


async def test_solver_runs_the_graph_and_stores_its_trace(eval_fhir: EvalFhir):
    """The free loop, for real, on a scripted model: one search, then an answer citing it."""
    import json

    def answer(messages) -> str:
        refs = re.findall(r"Observation/[A-Za-z0-9\-.]+", str(messages[-1].content))
        # No value of its own: the loop's finish check would send an invented one back.
        answer = "As in the cited record"
        return json.dumps({"action": "final_answer", "answer": answer, "citations": refs[:1]})

    search = {"action": "search_records", "args": {"resource_type": "Observation", "limit": 3}}
    model = ScriptedChatModel(replies=[json.dumps(search), answer])
    model.metadata = {"dialect": "none", "protocol": "json"}
    env = EvalEnv(
        settings=Settings(),
        model=model,
        fhir=eval_fhir.client,
        options={"graph": "loop", "choice": "one_call"},
    )
    samples = await ehrqa.dataset(env)
    task = ehrqa.bind(env, samples)
    trace = await task.solver(samples[0])
    assert (
        task.info["graph"] == "loop"
        and trace.answer == "As in the cited record"
        and trace.steps == 2
    )
    assert len(trace.citations) == 1 and trace.citations[0] in trace.retrieved
    roles = [m["role"] for m in trace.messages]
    assert roles[-3:] == ["ai", "tool", "ai"]  # the stored shape, tool result included
    tool = next(m for m in trace.messages if m["role"] == "tool")
    assert tool["name"] == "search_records" and tool["artifact"] == trace.retrieved
    assert len(model.calls) == 2
