"""The `cds` task: guideline rules' decisions computed by code, cards written by a (scripted)
model over the synthetic cohort seeded on an in-process SEKMET."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from eval_fixtures import EvalFhir
from fakes import ScriptedChatModel
from wardround.evals.suite import get_task, run_eval
from wardround.evals.task import EvalEnv, Sample, Trace
from wardround.evals.tasks import NAMES, cds, cds_cohort
from wardround.settings import Settings
from wardround.tools.guidelines.ingest import corpus_dir, load_chunks
from wardround.tools.guidelines.rules import RULES

SAMPLES = cds.build_samples()
BY_ID = {s.id: s for s in SAMPLES}
_PATIENT = re.compile(r"Patient: Patient/(cds-[A-Za-z0-9\-]+)")


def patient_of(messages) -> str:
    found = _PATIENT.search(str(messages[-1].content))
    assert found, "no patient in the prompt"
    return found.group(1)


def card_for(sample: Sample, *, decision: str | None = None, cite_record: bool = True) -> str:
    target = sample.target
    patient = f"Patient/{sample.metadata['patient_id']}"  # shown, but decides nothing
    card = {
        "decision": decision or target["decision"],
        "summary": f"{target['decision']}: per the guideline",
        "records": [target["evidence"][0] if cite_record else patient],
        "passage": target["passages"][0],
    }
    return json.dumps(card)


def scripted(**card: object) -> ScriptedChatModel:
    """Answers every card from the sample named in the prompt (stateless: safe concurrently)."""

    def respond(messages) -> str:
        return card_for(BY_ID[patient_of(messages)], **card)  # type: ignore[arg-type]

    model = ScriptedChatModel(respond=respond)
    model.metadata = {"dialect": "none"}
    return model


def test_task_is_registered():
    assert "cds" in NAMES and get_task("cds").needs_fhir


def test_dataset_covers_six_rules_with_every_outcome():
    assert len(SAMPLES) >= 60 and len({s.id for s in SAMPLES}) == len(SAMPLES)
    outcomes = defaultdict(set)
    for s in SAMPLES:
        outcomes[s.category].add(s.target["decision"])
        assert s.target["decision"] in s.target["decisions"] == list(RULES[s.category].decisions)
        assert s.target["evidence"] and set(s.target["evidence"]) <= {
            *s.target["records"],
            *([f"{s.metadata['draft']['resourceType']}/{s.metadata['draft']['id']}"]
              if "draft" in s.metadata else []),
        }  # fmt: skip
    assert len(outcomes) >= 6
    for rule, seen in outcomes.items():
        assert seen == set(RULES[rule].decisions), rule  # every decision, so both outcomes


def test_each_rule_names_a_passage_of_the_starter_corpus():
    for rule in RULES.values():
        for section in rule.passages:
            chunks = load_chunks(corpus_dir() / f"{section.source}.md")
            assert section.ref in {c.ref for c in chunks}
            assert cds.passage_text(section)


def test_thresholds_decide_at_their_edges():
    by = {s.id: s.target["decision"] for s in SAMPLES}
    assert by["cds-order-potassium-05"] == "hold"  # potassium 5.5: hold
    assert by["cds-order-potassium-04"] == "continue"  # 5.4: continue
    assert by["cds-order-potassium-06"] == "continue"  # the latest is normal, an older high
    assert by["cds-order-metformin-egfr-05"] == "reduce dose"  # eGFR 30
    assert by["cds-order-metformin-egfr-06"] == "stop"  # eGFR 29
    assert by["cds-order-metformin-egfr-04"] == "continue"  # eGFR 47
    assert by["cds-hba1c-interval-08"] == "overdue"  # 7.0% is not at goal: 3-monthly, 95 days
    assert by["cds-hba1c-interval-02"] == "not overdue"  # 6.8% at 150 days: 6-monthly
    assert by["cds-hba1c-interval-06"] == "overdue"  # none on record
    assert by["cds-uacr-yearly-07"] == "overdue" and by["cds-uacr-yearly-08"] == "not overdue"
    assert by["cds-order-hba1c-repeat-04"] == "cancel" and by["cds-order-hba1c-repeat-05"] == (
        "proceed"
    )  # 89 days: a repeat; 90: not
    assert by["cds-statin-indication-01"] == "indicated"  # LDL 200 at 50
    assert by["cds-statin-indication-04"] == "not indicated"  # diabetes at 35, LDL 120
    assert by["cds-statin-indication-05"] == "estimate risk"  # 45, LDL 130, no diabetes


def test_scoring_needs_the_decision_a_record_and_the_passage():
    sample = BY_ID["cds-order-potassium-01"]
    evidence, passage = sample.target["evidence"][0], sample.target["passages"][0]

    def scored(decision: str, citations: list[str]):
        return cds.score_card(sample, decision, citations)

    right = scored("hold", [evidence, passage])
    assert right.correct and right.metadata["cites_record"] and right.metadata["cites_passage"]
    assert not scored("continue", [evidence, passage]).correct
    no_passage = scored("hold", [evidence])
    assert not no_passage.correct and not no_passage.metadata["cites_passage"]
    assert no_passage.metadata["decision_correct"]
    assert not scored("hold", [passage]).correct  # no deciding record
    assert not scored("hold", [sample.target["passages"][0], "Patient/cds-order-potassium-01"]
                      ).correct  # fmt: skip
    # The other hyperkalaemia passage is the rule's too.
    assert scored("Hold", [evidence, sample.target["passages"][1]]).correct


async def test_right_cards_score_correct_over_the_seeded_cohort(eval_fhir: EvalFhir):
    model = scripted()
    env = EvalEnv(settings=Settings(), model=model, fhir=eval_fhir.client)
    samples = await cds.dataset(env)
    task = cds.bind(env, samples)
    for sample in samples:
        trace = await task.solver(sample)
        # The rule run on what the server returns agrees with the frozen truth.
        assert trace.artifacts["truth_on_server"] == sample.target["decision"], sample.id
        assert set(sample.target["evidence"]) <= set(trace.retrieved), sample.id
        score = await task.scorer(sample, trace)
        assert score.correct, (sample.id, score.explanation)
    prompt = str(trace.messages[-2]["content"])
    assert "Guideline:" in prompt and "Choices for decision:" in prompt


async def test_the_prompt_shows_records_draft_and_passage(eval_fhir: EvalFhir):
    seen: list[str] = []

    def respond(messages) -> str:
        seen.append(str(messages[-1].content))
        return card_for(BY_ID["cds-order-potassium-06"])

    model = ScriptedChatModel(respond=respond)
    model.metadata = {"dialect": "none"}
    env = EvalEnv(settings=Settings(), model=model, fhir=eval_fhir.client)
    task = cds.bind(env, SAMPLES)
    trace = await task.solver(BY_ID["cds-order-potassium-06"])
    text = seen[0]
    assert "Today is 2025-06-30" in text and "valsartan 80 MG" in text and "draft" in text
    assert "Observation/cds-order-potassium-06-o1" in text  # K 4.1, the latest
    assert "Observation/cds-order-potassium-06-o2" in text  # K 5.9, older
    assert "[guideline:hyperkalaemia#removing-potassium]" in text
    assert trace.answer.startswith("continue") and (await task.scorer(
        BY_ID["cds-order-potassium-06"], trace)).correct  # fmt: skip


@pytest.mark.parametrize(
    ("card", "part"),
    [({"decision": "WRONG"}, "decision_correct"), ({"cite_record": False}, "cites_record")],
)
async def test_wrong_cards_score_incorrect(eval_fhir: EvalFhir, card: dict, part: str):
    def wrong(sample: Sample) -> str:
        if card.get("decision"):
            other = next(d for d in sample.target["decisions"] if d != sample.target["decision"])
            return card_for(sample, decision=other)
        return card_for(sample, cite_record=False)

    def respond(messages) -> str:
        return wrong(BY_ID[patient_of(messages)])

    model = ScriptedChatModel(respond=respond)
    model.metadata = {"dialect": "none"}
    env = EvalEnv(settings=Settings(), model=model, fhir=eval_fhir.client)
    task = cds.bind(env, SAMPLES)
    for sample in [s for s in SAMPLES if s.id.endswith("-01") or s.id.endswith("-02")]:
        score = await task.scorer(sample, await task.solver(sample))
        assert not score.correct and not score.metadata[part], sample.id


async def test_an_uncitable_reply_is_an_error_trace_not_a_crash(eval_fhir: EvalFhir):
    reply = json.dumps({"decision": "hold", "summary": "x", "records": ["Observation/nope"],
                        "passage": "guideline:nope#x"})  # fmt: skip
    model = ScriptedChatModel(respond=lambda messages: reply)
    model.metadata = {"dialect": "none"}
    env = EvalEnv(settings=Settings(), model=model, fhir=eval_fhir.client)
    task = cds.bind(env, SAMPLES)
    sample = BY_ID["cds-order-potassium-01"]
    trace = await task.solver(sample)
    assert "solver_error" in trace.artifacts and not (await task.scorer(sample, trace)).correct


async def test_run_eval_over_the_cohort(eval_fhir: EvalFhir, tmp_path: Path):
    env = EvalEnv(settings=Settings(), model=scripted(), fhir=eval_fhir.client)
    result, summary = await run_eval(
        get_task("cds"), env, preset="scripted", root=tmp_path, limit=16, progress=False
    )
    assert summary["n"] == 16 and summary["accuracy"] == 1.0
    assert len({r.category for r in result.records}) == len(RULES)  # round-robin over rules
    assert (tmp_path / "cds" / "samples.jsonl").exists()


def test_scoring_a_stored_trace_reads_the_decision_from_the_answer():
    sample = BY_ID["cds-uacr-yearly-01"]
    trace = Trace(
        answer="not overdue: UACR 12 mg/g 100 days ago",
        citations=[sample.target["evidence"][0], sample.target["passages"][0]],
    )
    assert cds.score_card(sample, cds.decision_of(trace), trace.citations).correct
    assert cds_cohort.TODAY.isoformat() == sample.metadata["today"]


def test_the_card_asks_for_records_and_the_passage_in_fields_of_their_own():
    rule = RULES["hba1c-interval"]
    schema = cds.card_schema(rule, ["Patient/p", "Observation/o"]).model_json_schema()
    props = schema["properties"]
    assert props["records"]["items"]["enum"] == ["Patient/p", "Observation/o"]
    assert set(props["passage"]["enum"]) == {s.ref for s in rule.passages}
    assert {"decision", "records", "passage"} <= set(schema["required"])
    card = {"records": ["Observation/o", "Observation/o"], "passage": rule.passages[0].ref}
    assert cds.card_citations(card) == ["Observation/o", rule.passages[0].ref]
