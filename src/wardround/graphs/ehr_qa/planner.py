"""The planner graph: patient -> manifest -> plan -> read -> (computed answer | cite -> answer).

The model makes narrow choices under schemas built from the chart: what kind of question
this is and which records it is about (enums of the chart's own codes, ranked by similarity
to the question); for questions no kind fits, which of the retrieved records answer it (an
enum of their references), then the answer from those records alone, checked for values
the records do not hold. Code does the rest: date windows, statuses, counts, ages, trends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, create_model
from typing_extensions import TypedDict

from wardround.agents.protocol import Dialect, ModelOutputError, complete_json, model_dialect
from wardround.chart import analyte
from wardround.chart.dates import find_window
from wardround.chart.faithfulness import unsupported
from wardround.chart.kinds import Kind, nothing, with_day
from wardround.chart.options import (
    NOT_IN_CHART,
    Option,
    Similarity,
    build_options,
    candidates,
    settle_choice,
)
from wardround.chart.retrieve import fetch, ids_of
from wardround.chart.steer import steer
from wardround.fhir.bounded import watch_partial
from wardround.fhir.client import FhirClient
from wardround.fhir.errors import FhirNotFound
from wardround.fhir.manifest import Manifest, build_manifest
from wardround.fhir.render import render_resource
from wardround.graphs.ehr_qa import prompts
from wardround.graphs.ehr_qa.reading import Ask, Done, compute, list_option, named_record

MAX_RECORDS = 15
MAX_NAMES = 12  # names offered in a follow-up choice (ever-questions over a whole type)
# A follow-up choice the question names no word of stands only this near (MiniLM cosine):
# "heart attack" -> Myocardial infarction 0.42, "stroke" -> Cerebrovascular accident 0.44;
# "multiple sclerosis" -> Chronic pain 0.16, "atrial fibrillation" -> Heart rate 0.28.
MIN_CHOICE_SIMILARITY = 0.35


@dataclass
class PlannerContext:
    """What every node reads at run time: the model, the FHIR server, the ranking."""

    model: BaseChatModel
    fhir: FhirClient
    similarity: Similarity
    dialect: Dialect | None = None  # None: what make_chat_model recorded on the model
    # Reuse a patient's manifest (which codes the chart holds) for this long. It only shapes
    # the options offered; every value is read fresh. 0 reads it for every question.
    manifest_ttl_s: float = 120.0

    def output_dialect(self) -> Dialect:
        return self.dialect or model_dialect(self.model)


class PlannerInput(TypedDict):
    question: str
    patient_id: str


class PlannerOutput(TypedDict, total=False):
    answer: str
    citations: list[str]
    flagged: list[str]  # cited references that were not retrieved (dropped)
    retrieved: list[str]  # references of every record the graph read
    kind: str
    about: str  # the option the plan chose
    computed: bool  # the answer was computed by code from the records
    unsupported: list[str]  # values in the answer that its citations do not hold
    steps: int  # model decisions
    partial: list[str]  # reads stopped at a bound (not all records were read): why
    messages: Annotated[list[AnyMessage], add_messages]  # the model turns, for the trace
    error: str | None


class PlannerState(PlannerInput, PlannerOutput, total=False):
    patient: dict[str, Any]
    manifest: Manifest
    options: list[Option]
    records: list[str]  # compact lines shown to the model (general path)


async def _decide(
    runtime: Runtime[PlannerContext], system: str, ask: str, schema: type[BaseModel]
) -> tuple[Any, list[AnyMessage]]:
    """One constrained decision; returns (validated value, the turns for the trace)."""
    ctx = runtime.context
    messages = [SystemMessage(system), HumanMessage(ask)]
    value, reply = await complete_json(
        ctx.model, messages, schema.model_json_schema(), schema.model_validate,
        ctx.output_dialect(),
    )  # fmt: skip
    return value, [HumanMessage(ask), reply]


def _enum(values: list[str]) -> Any:
    """A runtime Literal of `values` (for a pydantic field)."""
    return Literal[tuple(values)]


async def patient(state: PlannerState, runtime: Runtime[PlannerContext]) -> dict[str, Any]:
    fhir = runtime.context.fhir
    try:
        resource = await fhir.read(f"Patient/{state['patient_id']}")
    except FhirNotFound:
        return {"error": f"unknown patient {state['patient_id']!r} on {fhir.base_url}"}
    except ValueError as err:  # a malformed id never reaches the server
        return {"error": str(err)}
    return {"patient": resource}


_MANIFESTS: dict[tuple[str, str], tuple[float, Manifest]] = {}


async def manifest(state: PlannerState, runtime: Runtime[PlannerContext]) -> dict[str, Any]:
    """The chart's manifest; `$everything` on a whole chart is the costliest read, so a
    recent one is reused (see `PlannerContext.manifest_ttl_s`)."""
    ctx, pid = runtime.context, state["patient_id"]
    key, now = (str(ctx.fhir.base_url), pid), time.monotonic()
    cached = _MANIFESTS.get(key)
    if cached is None or now - cached[0] > ctx.manifest_ttl_s:
        if len(_MANIFESTS) > 1000:
            _MANIFESTS.clear()
        cached = _MANIFESTS[key] = (now, await build_manifest(ctx.fhir, pid))
    partial = [cached[1].partial] if cached[1].partial else []
    return {"manifest": cached[1], "partial": partial}


def _partial_note(state: PlannerState, answer: str, more: list[str] | None = None) -> str:
    """The answer, with a line saying which reads stopped at a bound, if any did."""
    notes = list(dict.fromkeys([*state.get("partial", []), *(more or [])]))
    return f"{answer}\n\nNot all records were read: {'; '.join(notes)}." if notes else answer


async def plan(state: PlannerState, runtime: Runtime[PlannerContext]) -> dict[str, Any]:
    options = build_options(state["manifest"], state["question"], runtime.context.similarity)
    labels = [o.label for o in options] + [NOT_IN_CHART]
    schema = create_model("Plan", kind=(Kind, ...), about=(_enum(labels), ...))
    ask = prompts.PLAN.format(
        options="\n".join(f"- {x}" for x in labels), question=state["question"]
    )
    try:
        value, turns = await _decide(runtime, prompts.PLAN_SYSTEM, ask, schema)
    except ModelOutputError as err:
        return {"error": str(err), "steps": state.get("steps", 0) + 1}
    return {
        "options": options,
        "kind": Kind(value.kind).value,
        "about": value.about,
        "messages": turns,
        "steps": state.get("steps", 0) + 1,
    }


async def read(state: PlannerState, runtime: Runtime[PlannerContext]) -> dict[str, Any]:
    """Fetch what the plan points at; answer by code when the kind allows it."""
    window = find_window(state["question"])
    option = next((o for o in state["options"] if o.label == state["about"]), None)
    steered = steer(state["question"], Kind(state["kind"]), window, option)
    kind = with_day(steered, window is not None and not window.year)
    fhir, pid = runtime.context.fhir, state["patient_id"]
    settled = _settled(state, kind, option)
    ask = Ask(state["question"], state["manifest"])
    ask.choose = _chooser(ask, runtime)
    capped: list[str] = []
    if option is not None and settled is None and kind is not Kind.EVER:  # not in the chart
        done: Done | None = Done(nothing().answer, [], [])
    else:
        try:
            with watch_partial() as capped:
                done = await compute(kind, settled, window, fhir, pid, state["patient"], ask)
        except ModelOutputError as err:  # the follow-up choice failed: no answer, not "No"
            return {"error": str(err), "steps": state.get("steps", 0) + 1}
    made = ask.extra.get("turns", [])
    turns = {"messages": made, "steps": state.get("steps", 0) + len(made) // 2}
    about = {"about": settled.label} if settled is not None else {}
    if done is None:  # the general path: the records the plan points at, for the model
        with watch_partial() as fetched:
            records = await fetch(fhir, pid, settled, MAX_RECORDS) if settled else []
        capped += fetched
        if records:
            return {
                "partial": [*state.get("partial", []), *capped],
                "records": [render_resource(r) for r in records],
                "retrieved": ids_of(records),
                "kind": Kind.OTHER.value,
                **about,
                **turns,
            }
        done = Done(nothing().answer, [], [])  # nothing to cite: the chart holds none of it
    return {"answer": _partial_note(state, done.answer, capped), "citations": done.citations,
            "retrieved": done.read or [], "computed": True, "unsupported": [], "kind": kind.value,
            "partial": [*state.get("partial", []), *capped], **about, **turns}  # fmt: skip


def _settled(state: PlannerState, kind: Kind, option: Option | None) -> Option | None:
    """The plan's record choice checked against the question's words: the type a list
    question names, a result it names over a record it does not, then the analyte check
    over every code in the chart."""
    question = state["question"]
    option = list_option(kind, option, question)
    if option is None:
        return None
    every = candidates(state["manifest"])
    if kind not in (Kind.CURRENT, Kind.SINCE):  # a list is of records, never of one result
        option = named_record(question, option, every)
    return settle_choice(question, option, every)


def _chooser(ask_for: Ask, runtime: Runtime[PlannerContext]) -> Any:
    """A follow-up choice among names the code has read (an enum, nearest first); its turns
    are kept on `ask_for` for the trace."""

    async def choose(question: str, names: list[str]) -> str | None:
        scores = runtime.context.similarity(question, names)
        ranked = [names[i] for i in sorted(range(len(names)), key=lambda i: -scores[i])]
        shown = [*ranked[:MAX_NAMES], NOT_IN_CHART]
        schema = create_model("Which", about=(_enum(shown), ...))
        ask = prompts.WHICH.format(options="\n".join(f"- {x}" for x in shown), question=question)
        value, turns = await _decide(runtime, prompts.WHICH_SYSTEM, ask, schema)
        ask_for.extra.setdefault("turns", []).extend(turns)
        if value.about == NOT_IN_CHART:
            return None
        near = float(scores[names.index(value.about)]) if value.about in names else 0.0
        if near < MIN_CHOICE_SIMILARITY and not analyte.names(question, value.about):
            return None  # a name neither the words nor the meaning tie to the question
        return str(value.about)

    return choose


def _lines_of(state: PlannerState, refs: list[str]) -> list[str]:
    wanted = set(refs)
    return [line for line in state["records"] if line.split(" ", 1)[0] in wanted]


async def cite(state: PlannerState, runtime: Runtime[PlannerContext]) -> dict[str, Any]:
    """The model picks which retrieved records answer the question."""
    refs = state["retrieved"]
    ref: Any = _enum(refs)
    schema = create_model("Cited", citations=(list[ref], Field(min_length=1, max_length=5)))
    label = state["about"].rsplit(" [", 1)[0]
    ask = prompts.CITE.format(
        label=label, records="\n".join(state["records"]), question=state["question"]
    )
    try:
        value, turns = await _decide(runtime, prompts.CITE_SYSTEM, ask, schema)
    except ModelOutputError as err:
        return {"error": str(err), "steps": state.get("steps", 0) + 1}
    cited = list(dict.fromkeys(value.citations))
    return {"citations": cited, "messages": turns, "steps": state.get("steps", 0) + 1}


async def answer(state: PlannerState, runtime: Runtime[PlannerContext]) -> dict[str, Any]:
    """The answer from the cited records alone; values they don't hold are repaired once."""
    lines = _lines_of(state, state["citations"])
    schema = create_model("Answer", answer=(str, Field(min_length=1)))
    ask = prompts.ANSWER.format(
        patient=render_resource(state["patient"]), records="\n".join(lines),
        question=state["question"],
    )  # fmt: skip
    evidence = [*lines, state["question"]]
    turns: list[AnyMessage] = []
    steps = state.get("steps", 0)
    for attempt in range(2):
        try:
            value, new = await _decide(runtime, prompts.ANSWER_SYSTEM, ask, schema)
        except ModelOutputError as err:
            return {"error": str(err), "steps": steps + 1, "messages": turns}
        turns, steps = turns + new, steps + 1
        missing = unsupported(value.answer, evidence)
        if not missing or attempt:
            break
        reply = cast(AIMessage, new[-1])
        ask = f"{ask}\n\nYour answer: {reply.content}\n" + prompts.UNSUPPORTED.format(
            values=", ".join(missing)
        )
    return {
        "answer": _partial_note(state, value.answer),
        "unsupported": missing,
        "messages": turns,
        "steps": steps,
    }


def _ok(state: PlannerState) -> str:
    return END if state.get("error") else "next"


def _after_read(state: PlannerState) -> str:
    return END if state.get("error") or state.get("computed") else "cite"


def build_planner_graph() -> Any:
    graph = StateGraph(
        PlannerState, context_schema=PlannerContext, input_schema=PlannerInput,
        output_schema=PlannerOutput,
    )  # fmt: skip
    for node in (patient, manifest, plan, read, cite, answer):
        graph.add_node(node.__name__, node)
    graph.add_edge(START, "patient")
    graph.add_conditional_edges("patient", _ok, {"next": "manifest", END: END})
    graph.add_edge("manifest", "plan")
    graph.add_conditional_edges("plan", _ok, {"next": "read", END: END})
    graph.add_conditional_edges("read", _after_read, {"cite": "cite", END: END})
    graph.add_conditional_edges("cite", _ok, {"next": "answer", END: END})
    graph.add_edge("answer", END)
    return graph.compile(name="ehr_qa_planner")


PLANNER = build_planner_graph()


async def run_planner(question: str, patient_id: str, context: PlannerContext) -> PlannerOutput:
    state = await PLANNER.ainvoke({"question": question, "patient_id": patient_id}, context=context)
    return cast(PlannerOutput, state)


__all__ = ["PLANNER", "PlannerContext", "PlannerInput", "PlannerOutput", "run_planner"]
