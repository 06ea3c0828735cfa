"""Guideline-grounded decisions: the model writes the CDS card, code knows the answer.

Each sample is one synthetic patient (`cds_cohort`, seeded on the FHIR server under fixed
ids) and one rule of `tools.guidelines.rules`, the same code the CDS Hooks service builds its
cards from: HbA1c and UACR overdue in diabetes, lipids on a statin, a drafted ACE inhibitor
or other potassium-raising drug with a high potassium, drafted metformin with a low eGFR, a
drafted statin with no lipid panel to start from, a repeated HbA1c, and a statin indication
from age, LDL and diabetes. Each rule names its guideline passage in the starter corpus and
meets each of its decisions in the cohort.

The solver reads the patient's records from FHIR, shows the model the ones the rule reads
(compact lines, `fhir.render`), the draft order for an order rule, and the passage, and asks
for one JSON card: a decision from the rule's choices (constrained), a one-line summary and
its citations (record and passage ids, constrained to those shown). A card is correct when
its decision is the computed one and it cites a deciding record and the passage.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from wardround.evals.chart import fetch_chart
from wardround.evals.task import EvalEnv, Sample, Score, Task, TaskDef, Trace
from wardround.evals.tasks import cds_cohort
from wardround.fhir.render import render_resource
from wardround.tools.guidelines import rules
from wardround.tools.guidelines.chart import codes, when
from wardround.tools.guidelines.ingest import corpus_dir, load_chunks
from wardround.tools.guidelines.rules import RULES, Rule, Section

SYSTEM = (
    "You are a clinical decision support service writing one CDS Hooks card for a clinician. "
    "Decide from the patient's records and the guideline passage given, nothing else. Reply "
    'with one JSON object: {"decision": one of the choices given, "summary": one line of at '
    'most 140 characters stating the decision and the deciding value or date, "records": '
    'the ids of the records that decide it, "passage": the id of the guideline passage}.'
)
CHART_TYPES = ("Condition", "MedicationRequest", "Observation")


# ---------------------------------------------------------------- the guideline passages


@lru_cache(maxsize=32)
def passage_text(section: Section) -> str:
    """The passage's text from the starter corpus (one section; the chunks joined)."""
    chunks = load_chunks(corpus_dir() / f"{section.source}.md")
    found = [c.text for c in chunks if c.section == section.section]
    if not found:
        raise ValueError(f"no section {section.section!r} in the corpus file {section.source}")
    return " ".join(found)


def passage_block(rule: Rule) -> str:
    return "\n".join(f"[{s.ref}] {passage_text(s)}" for s in rule.passages)


# ---------------------------------------------------------------- the dataset


def truth(case: cds_cohort.Case) -> rules.Decision:
    records = cds_cohort.chart(case)
    found = rules.decide(
        case.rule,
        patient=records["patient"][0],
        conditions=records["conditions"],
        medications=records["medications"],
        observations=records["observations"],
        today=cds_cohort.TODAY,
        order=cds_cohort.draft_order(case),
    )
    if found is None:
        raise ValueError(f"rule {case.rule} does not apply to {case.patient_id}")
    return found


def question(rule: Rule, order: dict[str, Any] | None) -> str:
    if order is None:
        return rule.question
    name = (order.get("medicationCodeableConcept") or order.get("code") or {}).get("text", "")
    return rule.question.format(order=name)


def build_samples() -> list[Sample]:
    samples = []
    for case in cds_cohort.CASES:
        rule = RULES[case.rule]
        found = truth(case)
        order = cds_cohort.draft_order(case)
        samples.append(
            Sample(
                id=case.patient_id,
                input=question(rule, order),
                category=rule.name,
                target={
                    "decision": found.decision,
                    "decisions": list(rule.decisions),
                    "evidence": found.evidence,
                    "passages": [s.ref for s in rule.passages],
                    "records": found.records,
                },
                metadata={
                    "patient_id": case.patient_id,
                    "rule": rule.name,
                    "hook": rule.hook,
                    "today": cds_cohort.TODAY.isoformat(),
                    **({"draft": order} if order else {}),
                },
            )
        )
    return samples


async def dataset(env: EvalEnv) -> list[Sample]:
    return build_samples()


# ---------------------------------------------------------------- what the model sees


def relevant(rule: Rule, chart: Any) -> list[dict[str, Any]]:
    """The records the rule reads: the problem list, the medicines, its results (newest
    first, older ones too: which is the latest is part of the job)."""
    wanted = set(rule.observations)
    results = [o for o in chart.of("Observation") if codes(o.get("code")) & wanted]
    results.sort(key=lambda o: when(o) or date.min, reverse=True)
    return [*chart.of("Condition"), *chart.of("MedicationRequest"), *results]


def prompt(sample: Sample, rule: Rule, patient: dict[str, Any], records: list[dict]) -> str:
    today = date.fromisoformat(sample.metadata["today"])
    age = rules.age_on(patient, today)
    lines = [f"Today is {today.isoformat()}. Hook: {rule.hook}.",
             f"Patient: {render_resource(patient)} (age {age})", "", "Records:"]  # fmt: skip
    lines += [f"- {render_resource(r)}" for r in records] or ["- (none)"]
    draft = sample.metadata.get("draft")
    if draft:
        lines += ["", "Draft order being signed:", f"- {render_resource(draft)}"]
    choices = ", ".join(f'"{d}"' for d in rule.decisions)
    lines += ["", "Guideline:", passage_block(rule), "", f"Question: {sample.input}",
              f"Choices for decision: {choices}."]  # fmt: skip
    return "\n".join(lines)


def card_schema(rule: Rule, records: list[str]) -> type[BaseModel]:
    """The card as a JSON schema: the decision one of the rule's, the deciding records ids
    shown, and the passage a field of its own (asked for in one list with the records, the
    1.5B left the passage out of 64 of 71 cards)."""
    decision: Any = Literal[tuple(rule.decisions)]
    record: Any = Literal[tuple(records)]
    passage: Any = Literal[tuple(s.ref for s in rule.passages)]
    return create_model(
        "Card",
        decision=(decision, ...),
        summary=(str, Field(max_length=300)),
        records=(list[record], Field(min_length=1)),
        passage=(passage, ...),
    )


def card_citations(card: dict[str, Any]) -> list[str]:
    """The card's citations: its records, then its passage."""
    return list(dict.fromkeys([*card["records"], card["passage"]]))


# ---------------------------------------------------------------- scoring


def _norm(text: Any) -> str:
    return " ".join(str(text or "").lower().replace("_", " ").split())


def decision_of(trace: Trace) -> str:
    if trace.artifacts.get("decision"):
        return str(trace.artifacts["decision"])
    return trace.answer.split(":", 1)[0]


def score_card(sample: Sample, decision: str, citations: list[str]) -> Score:
    target = sample.target
    right = _norm(decision) == _norm(target["decision"])
    cited = set(citations)
    record = bool(cited & set(target["evidence"]))
    passage = bool(cited & set(target["passages"]))
    misses = [m for m, ok in (("decision", right), ("record", record), ("passage", passage))
              if not ok]  # fmt: skip
    why = f"decided {decision!r}, expected {target['decision']!r}"
    if misses:
        why += "; wrong or missing: " + ", ".join(misses)
    return Score.of(right and record and passage, why, decision_correct=right,
                    cites_record=record, cites_passage=passage)  # fmt: skip


async def score(sample: Sample, trace: Trace) -> Score:
    return score_card(sample, decision_of(trace), list(trace.citations))


# ---------------------------------------------------------------- the solver


def bind(env: EvalEnv, samples: list[Sample]) -> Task:
    from langchain_core.messages import HumanMessage, SystemMessage

    from wardround.agents.protocol import ModelOutputError, complete_json, model_dialect
    from wardround.evals.traces import tokens_dict
    from wardround.graphs.trace import trace

    lock = asyncio.Lock()
    seeded: list[bool] = []

    async def ensure_seeded() -> None:
        async with lock:
            if not seeded:
                await cds_cohort.seed(env.fhir)
                seeded.append(True)

    async def solve(sample: Sample) -> Trace:
        await ensure_seeded()
        rule = RULES[sample.metadata["rule"]]
        chart = await fetch_chart(env.fhir, sample.metadata["patient_id"], CHART_TYPES)
        records = relevant(rule, chart)
        draft = sample.metadata.get("draft")
        today = date.fromisoformat(sample.metadata["today"])
        on_server = rules.decide(
            rule.name, patient=chart.patient, conditions=chart.of("Condition"),
            medications=chart.of("MedicationRequest"), observations=chart.of("Observation"),
            today=today, order=draft,
        )  # fmt: skip
        shown = [f"{r['resourceType']}/{r['id']}" for r in [chart.patient, *records]]
        shown += [f"{draft['resourceType']}/{draft['id']}"] if draft else []
        schema = card_schema(rule, shown)
        messages = [SystemMessage(SYSTEM), HumanMessage(prompt(sample, rule, chart.patient,
                                                                records))]  # fmt: skip
        artifacts: dict[str, Any] = {
            "truth_on_server": on_server.decision if on_server else None,
        }
        started = time.monotonic()
        try:
            card, reply = await complete_json(
                env.model, messages, schema.model_json_schema(), schema.model_validate,
                model_dialect(env.model),
            )  # fmt: skip
        except ModelOutputError as err:
            artifacts["solver_error"] = str(err)
            return Trace(messages=trace(messages), retrieved=shown, artifacts=artifacts,
                         latency_s=time.monotonic() - started, steps=1)  # fmt: skip
        found = card.model_dump()
        artifacts.update(decision=found["decision"], summary=found["summary"])
        return Trace(
            answer=f"{found['decision']}: {found['summary']}",
            messages=trace([*messages, reply]),
            tokens=tokens_dict(reply.usage_metadata),
            latency_s=time.monotonic() - started,
            steps=1,
            citations=card_citations(found),
            retrieved=shown,
            artifacts=artifacts,
        )

    return Task(
        name="cds",
        samples=samples,
        solver=solve,
        scorer=score,
        scoring="the card's decision equals the rule's computed one (constrained to the rule's "
        "choices) and its citations include a deciding record and the guideline passage",
        info={"rules": sorted({s.metadata["rule"] for s in samples})},
    )


TASK = TaskDef(
    name="cds",
    description="CDS cards on synthetic charts: a guideline rule's decision (computed by code) "
    "with the records and the passage cited",
    dataset=dataset,
    bind=bind,
    needs_fhir=True,
)
