"""`answer_question`: run either EHR QA graph and return one result object."""

from __future__ import annotations

import time
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field

from wardround.chart.faithfulness import unsupported as unsupported_in
from wardround.chart.options import Similarity
from wardround.fhir.client import FhirClient
from wardround.fhir.injection import has_marked, strip_marked
from wardround.graphs.ehr_qa.citations import check_citations
from wardround.graphs.phi_scope import patient_scoped
from wardround.graphs.tool_loop import Choice
from wardround.graphs.trace import stored_refs, token_usage, trace

GraphName = Literal["planner", "loop"]
# The default graph: the one that scored better on the EHR QA eval (see README).
DEFAULT_GRAPH: GraphName = "planner"
MAX_QUESTION_CHARS = 2000
INJECTION_WARNING = (
    "Warning: a cited record holds text addressed to an AI. It is quoted record text, not a "
    "clinical finding, and it was not followed."
)


class QAResult(BaseModel):
    question: str
    patient_id: str
    graph: str
    answer: str
    citations: list[str]
    flagged_citations: list[str] = Field(default_factory=list)
    retrieved: list[str] = Field(default_factory=list)
    plan: str | None = None  # the planner's kind and records, e.g. "latest: Potassium"
    computed: bool = False  # the answer was computed by code from the cited records
    unsupported: list[str] = Field(default_factory=list)  # values not in the citations
    steps: int
    tokens: dict[str, int]
    latency_s: float
    error: str | None = None
    injection_warning: bool = False  # a cited record holds text addressed to an AI (quoted)
    messages: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def supported(self) -> bool:
        """Every value the answer writes is in its cited records (computed ones by design)."""
        return not self.error and not self.unsupported and bool(self.citations or self.computed)

    def public(self) -> dict[str, Any]:
        """The `ask --json` object."""
        return {
            "answer": self.answer,
            "citations": self.citations,
            "supported": self.supported,
            **({"unsupported": self.unsupported} if self.unsupported else {}),
            "plan": self.plan,
            "computed": self.computed,
            "steps": self.steps,
            "tokens": self.tokens,
            "latency_s": round(self.latency_s, 3),
            **({"error": self.error} if self.error else {}),
            **({"injection_warning": True} if self.injection_warning else {}),
        }


def check_question(question: str) -> str:
    text = question.strip()
    if not text:
        raise ValueError("the question is empty: ask something about the patient")
    if len(text) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question is {len(text)} characters; at most {MAX_QUESTION_CHARS}")
    return text


async def _planner(
    question: str, patient_id: str, model: BaseChatModel, fhir: FhirClient, similarity: Similarity
) -> QAResult:
    from wardround.graphs.ehr_qa.planner import PlannerContext, run_planner

    started = time.perf_counter()
    state = await run_planner(question, patient_id, PlannerContext(model, fhir, similarity))
    history = state.get("messages", [])
    kept, flagged = check_citations(state.get("citations", []), state.get("retrieved", []))
    plan = f"{state['kind']}: {state['about']}" if "kind" in state else None
    answer, warned, extra = _injection_guard(state, history)
    return QAResult(
        question=question,
        patient_id=patient_id,
        graph="planner",
        answer=answer,
        citations=kept,
        flagged_citations=flagged,
        retrieved=state.get("retrieved", []),
        plan=plan,
        computed=state.get("computed", False),
        unsupported=list(dict.fromkeys([*state.get("unsupported", []), *extra])),
        injection_warning=warned,
        steps=state.get("steps", 0),
        tokens=token_usage(history),
        latency_s=time.perf_counter() - started,
        error=state.get("error"),
        messages=trace(history),
    )


def _injection_guard(state: Any, history: list[Any]) -> tuple[str, bool, list[str]]:
    """The planner's answer, with a warning first when the records it was written from hold
    text addressed to an AI (quoted by the renderer, `fhir.injection`), and the answer's
    values that only such text holds: an instruction in a note is never a finding."""
    answer = str(state.get("answer", ""))
    prompts = [m for m in history if isinstance(m, HumanMessage)]
    shown = str(prompts[-1].content) if prompts and not state.get("computed") else ""
    if not answer or not has_marked(shown):
        return answer, False, []
    only_injected = [
        v
        for v in unsupported_in(answer, [strip_marked(shown)])
        if v not in unsupported_in(answer, [shown])
    ]
    return f"{INJECTION_WARNING}\n\n{answer}", True, only_injected


async def _loop(
    question: str,
    patient_id: str,
    model: BaseChatModel,
    fhir: FhirClient,
    max_steps: int,
    choice: Choice = "two_step",
    rank: Similarity | None = None,
) -> QAResult:
    from wardround.graphs.ehr_qa.free_loop import run_loop

    started = time.perf_counter()
    result, final = await run_loop(
        question, patient_id, model=model, fhir=fhir, max_steps=max_steps, choice=choice,
        rank=rank,
    )  # fmt: skip
    retrieved = stored_refs(result.messages)
    kept, flagged = check_citations(final.get("citations", []), retrieved)
    return QAResult(
        question=question,
        patient_id=patient_id,
        graph="loop",
        answer=result.answer,
        citations=kept,
        flagged_citations=flagged,
        retrieved=retrieved,
        unsupported=result.unsupported,
        steps=result.steps,
        tokens=result.tokens,
        latency_s=time.perf_counter() - started,
        error=result.error,
        messages=result.messages,
    )


@patient_scoped  # a pseudonymising model masks this patient (docs/safety.md)
async def answer_question(
    question: str,
    patient_id: str,
    *,
    model: BaseChatModel,
    fhir: FhirClient,
    graph: GraphName = DEFAULT_GRAPH,
    similarity: Similarity | None = None,
    max_steps: int = 6,
    choice: Choice = "two_step",
) -> QAResult:
    """Answer a question about one patient; citations are always among the retrieved records.

    The loop graph takes `choice` (run_tool_loop's: "one_call" or "two_step") and ranks long
    enums for the two-step arguments call with `similarity` when one is given.

    Raises ValueError for an empty or oversized question or an unknown graph.
    """
    question = check_question(question)
    if graph == "planner":
        if similarity is None:
            from wardround.tools.text_embeddings import minilm_similarity  # loads torch

            similarity = minilm_similarity()
        return await _planner(question, patient_id, model, fhir, similarity)
    if graph == "loop":
        return await _loop(question, patient_id, model, fhir, max_steps, choice, similarity)
    raise ValueError(f"unknown graph {graph!r} (planner or loop)")
