"""AgentClinic-MedQA: the model under test is the doctor in a simulated consultation.

The 107 cases of agentclinic_medqa.jsonl, run with the original protocol: the doctor asks
the patient questions, orders tests with `REQUEST TEST: <test>` (answered by a measurement
actor from the case's results), and ends with `DIAGNOSIS READY: <diagnosis>`, within at most
20 doctor turns. A moderator compares that diagnosis with the case's correct one. A doctor
who has given none when the turns run out is asked once more, under a schema, for the
diagnosis it leans to (`diagnosis_forced` in the trace); a test asked for again is answered
with a note to move on, and a request made three times ends the consultation there (the
forced diagnosis follows; `stuck` in the trace): a small model that copies its own request
would otherwise spend every remaining turn on it.

Actors and moderator, chosen with task options:
- patient: "retrieval" (default; grounded in the case's patient facts, see clinic_actors.py)
  or "llm" (a model role-plays the patient from the same facts; option `actor_model`);
- moderator: "match" (default; normalised matching with synonyms) or "llm" (a judge model
  answers yes/no; option `judge_model`, else the model under test).
The report's scoring line says which were used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from wardround.agents.protocol import (
    ModelOutputError,
    complete_json,
    model_dialect,
    strip_thinking,
)
from wardround.evals.data import load_jsonl
from wardround.evals.task import LIVE_TRACE, EvalEnv, Sample, Score, Task, TaskDef, Trace
from wardround.evals.tasks.clinic_actors import Measurement, RetrievalPatient, diagnosis_matches
from wardround.graphs.trace import token_usage, trace

MAX_TURNS = 20
_DIAGNOSIS = re.compile(r"DIAGNOSIS\s+READY\s*:?\s*(.+)", re.I | re.S)
_TEST = re.compile(r"REQUEST\s+TEST\s*:?\s*([^\n]+)", re.I)

DOCTOR_PROMPT = """You are a doctor seeing a patient in clinic. Find the diagnosis by talking \
to the patient and ordering tests.
- Ask the patient one question at a time, in one to three sentences.
- To order a test or examination, write: REQUEST TEST: <test name>, for example \
REQUEST TEST: Chest_X-Ray.
- You may take at most {max_turns} turns (questions and tests together). This is turn \
{turn} of {max_turns}.
- When you are sure, write: DIAGNOSIS READY: <diagnosis>.
What you know before you start: {objective}"""
LAST_TURN = "This is your last turn: give your diagnosis now, as DIAGNOSIS READY: <diagnosis>."
OPENING = "The patient is seated in front of you. Begin the consultation."

PATIENT_PROMPT = """You are a patient in a doctor's office. Answer the doctor's question in \
one to three sentences, in the first person, using only these facts about you; if the facts \
do not say, say you don't know. Never name a diagnosis.
Facts: {facts}"""
JUDGE_PROMPT = """Correct diagnosis: {correct}
Doctor's diagnosis: {diagnosis}
Do these name the same condition? Answer with one word: Yes or No."""


def _clean(value: str) -> str:
    return value.strip().strip("*_`\"' -:.").strip()


def parse_doctor(text: str) -> tuple[str, str]:
    """("diagnosis", dx) | ("test", name) | ("ask", question) for one doctor turn."""
    text = strip_thinking(text)
    found = _DIAGNOSIS.search(text)
    if found:
        lines = found.group(1).strip().splitlines()
        return "diagnosis", _clean(lines[0]) if lines else ""
    test = _TEST.search(text)
    if test:
        return "test", _clean(test.group(1))
    return "ask", text


# ---------------------------------------------------------------- dataset


def case_samples(rows: list[dict[str, Any]]) -> list[Sample]:
    samples = []
    for i, row in enumerate(rows):
        case = row.get("OSCE_Examination", row)
        samples.append(
            Sample(
                id=f"agentclinic-{i:03d}",
                input=str(case.get("Objective_for_Doctor", "")),
                target={"diagnosis": str(case["Correct_Diagnosis"])},
                category="medqa",
                metadata={"case": case},
            )
        )
    return samples


async def dataset(env: EvalEnv) -> list[Sample]:
    return case_samples(load_jsonl("agentclinic/agentclinic_medqa.jsonl", env.settings))


# ---------------------------------------------------------------- actors

PatientFn = Callable[[str], Awaitable[str]]


def retrieval_patient(case: dict[str, Any]) -> PatientFn:
    actor = RetrievalPatient.from_case(case)

    async def reply(question: str) -> str:
        return actor.reply(question)

    return reply


def llm_patient(model: Any, case: dict[str, Any], usage: list[AIMessage]) -> PatientFn:
    facts = "; ".join(RetrievalPatient.from_case(case).facts)
    history: list[BaseMessage] = [SystemMessage(content=PATIENT_PROMPT.format(facts=facts))]

    async def reply(question: str) -> str:
        history.append(HumanMessage(content=f"Doctor: {question}"))
        answer = await model.ainvoke(history)
        usage.append(answer)
        text = strip_thinking(str(answer.content))
        history.append(AIMessage(content=text))
        return text

    return reply


async def run_consultation(
    doctor: Any, case: dict[str, Any], patient: PatientFn, *, max_turns: int = MAX_TURNS
) -> dict[str, Any]:
    """The dialogue loop. Returns the diagnosis ('' if none), messages, tests and turns."""
    measurement = Measurement.from_case(case)
    objective = str(case.get("Objective_for_Doctor", ""))
    dialogue: list[BaseMessage] = [HumanMessage(content=OPENING)]
    doctor_replies: list[AIMessage] = []
    tests: list[str] = []
    requests: list[str] = []
    diagnosis = ""
    turns = 0
    stuck = False
    live = LIVE_TRACE.get()
    for turn in range(1, max_turns + 1):
        if live is not None:  # what a timeout would otherwise lose
            live.messages = trace(dialogue)
            live.steps, live.tokens = turns, token_usage(doctor_replies)
            live.artifacts["tests"] = list(tests)
        system = DOCTOR_PROMPT.format(max_turns=max_turns, turn=turn, objective=objective)
        if turn == max_turns:
            system += "\n" + LAST_TURN
        reply = await doctor.ainvoke([SystemMessage(content=system), *dialogue])
        doctor_replies.append(reply)
        turns = turn
        text = strip_thinking(str(reply.content))
        dialogue.append(AIMessage(content=text))
        action, value = parse_doctor(text)
        if action == "diagnosis":
            diagnosis = value
            break
        requests.append(f"{action}:{value.strip().lower()}")
        if requests.count(requests[-1]) >= REPEAT_LIMIT:
            stuck = True
            break
        if action == "test":
            answer = measurement.reply(value)
            seen = value.lower() in (t.lower() for t in tests)
            tests.append(value)
            note = f" (already reported: {REPEATED})" if seen else ""
            dialogue.append(HumanMessage(content=f"Measurement: {answer}{note}"))
        else:
            dialogue.append(HumanMessage(content=f"Patient: {await patient(value)}"))
    forced = not diagnosis
    if forced:  # the turns ran out: one constrained call for the diagnosis it leans to
        diagnosis, reply = await _forced_diagnosis(doctor, system, dialogue)
        doctor_replies.append(reply)
    return {
        "diagnosis": diagnosis,
        "forced": forced,
        "dialogue": dialogue,
        "doctor_replies": doctor_replies,
        "tests": tests,
        "turns": turns,
        "stuck": stuck,
    }


DIAGNOSIS_SCHEMA = {
    "type": "object",
    "properties": {"diagnosis": {"type": "string", "minLength": 3, "maxLength": 120}},
    "required": ["diagnosis"],
}
REPEATED = "ask the patient something else, or give your diagnosis"
REPEAT_LIMIT = 3  # the same request this many times ends the consultation


async def _forced_diagnosis(
    doctor: Any, system: str, dialogue: list[BaseMessage]
) -> tuple[str, AIMessage]:
    """The doctor's diagnosis under a schema, after a consultation that gave none: a small
    model that keeps asking still names what it thinks (the trace says it was asked)."""
    ask = HumanMessage(content="The consultation is over. Name your single most likely diagnosis.")
    messages = [SystemMessage(content=f"{system}\n{LAST_TURN}"), *dialogue, ask]

    def validate(obj: dict[str, Any]) -> str:
        text = _clean(str(obj["diagnosis"]))
        if len(text) < 3:
            raise ValueError("name a diagnosis")
        return text

    try:
        text, reply = await complete_json(
            doctor, messages, DIAGNOSIS_SCHEMA, validate, model_dialect(doctor)
        )
    except ModelOutputError:
        return "", AIMessage(content="")
    dialogue.append(AIMessage(content=f"DIAGNOSIS READY: {text}"))
    return text, reply


# ---------------------------------------------------------------- task


def bind(env: EvalEnv, samples: list[Sample]) -> Task:
    patient_kind = env.option("patient", "retrieval")
    moderator_kind = env.option("moderator", "match")
    max_turns = int(env.option("max_turns", str(MAX_TURNS)))
    actor_model = env.roles.get("actor") or env.model
    judge_model = env.roles.get("judge") or env.model
    if patient_kind not in {"retrieval", "llm"} or moderator_kind not in {"match", "llm"}:
        raise ValueError("options: patient=retrieval|llm, moderator=match|llm")

    async def solve(sample: Sample) -> Trace:
        started = time.perf_counter()
        case = sample.metadata["case"]
        actor_usage: list[AIMessage] = []
        patient = (
            llm_patient(actor_model, case, actor_usage)
            if patient_kind == "llm"
            else retrieval_patient(case)
        )
        result = await run_consultation(env.model, case, patient, max_turns=max_turns)
        return Trace(
            answer=result["diagnosis"],
            messages=trace(result["dialogue"]),
            tool_calls=[{"name": "request_test", "args": {"test": t}} for t in result["tests"]],
            tokens=token_usage(result["doctor_replies"]),
            latency_s=time.perf_counter() - started,
            steps=result["turns"],
            artifacts={
                "tests": result["tests"],
                "actor_tokens": token_usage(actor_usage),
                "diagnosis_forced": result["forced"],
                "stuck": result["stuck"],
            },
        )

    async def score(sample: Sample, trace: Trace) -> Score:
        correct = sample.target["diagnosis"]
        if not trace.answer:
            return Score.of(False, "no diagnosis given", moderator=moderator_kind)
        if moderator_kind == "llm":
            prompt = JUDGE_PROMPT.format(correct=correct, diagnosis=trace.answer)
            verdict = strip_thinking(str((await judge_model.ainvoke(prompt)).content))
            ok = verdict.strip().lower().startswith("yes")
            return Score.of(ok, f"judge said {verdict[:20]!r}", moderator="llm")
        ok = diagnosis_matches(trace.answer, correct)
        return Score.of(ok, f"{trace.answer!r} vs {correct!r}", moderator="match")

    moderator_text = (
        "moderator: an LLM judge (yes/no)"
        if moderator_kind == "llm"
        else "moderator: normalised matching with synonyms"
    )
    patient_text = (
        "patient: an LLM given the case facts"
        if patient_kind == "llm"
        else "patient: grounded retrieval over the case facts"
    )
    return Task(
        name="agentclinic",
        samples=samples,
        solver=solve,
        scorer=score,
        scoring=f"{moderator_text}; {patient_text}; measurement from case results; "
        f"at most {max_turns} doctor turns",
        info={"patient": patient_kind, "moderator": moderator_kind, "max_turns": max_turns},
    )


TASK = TaskDef(
    name="agentclinic",
    description="AgentClinic-MedQA: 107 simulated consultations, the model is the doctor",
    dataset=dataset,
    bind=bind,
)
