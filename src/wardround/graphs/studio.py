"""Graph factories for LangGraph's own server (`langgraph dev`, see langgraph.json).

LangGraph's server brings its own thread store and streaming, so these return graphs
compiled without a checkpointer. Model, FHIR client and tools are built once per process
from `Settings()` (the WARDROUND_* environment). Start a copilot thread with the input
`{"patient_id": "<id>", "messages": [{"role": "user", "content": "..."}]}`; an order
waits as an interrupt, resumed with `Command(resume={"action": "approve"})` (or edit/reject).

The factories are coroutines that build in a worker thread: building reads settings and
index folders and may start the embedded model server (a subprocess and HTTP polling), and
the server's event loop must never wait on that.

This file is loaded by path, so it imports only absolute names.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from langchain_core.runnables import RunnableConfig
from typing_extensions import TypedDict

from wardround.settings import Settings

_LOCK = threading.Lock()
_BUILT: dict[str, Any] = {}


def _parts() -> tuple[Settings, Any, Any]:
    """Settings, chat model and copilot tools, built once per process (in a worker thread)."""
    with _LOCK:
        if "parts" not in _BUILT:
            from wardround.agents.embedded import ensure_model_server
            from wardround.agents.models import make_chat_model
            from wardround.fhir.client import FhirClient
            from wardround.graphs.copilot.audit import AuditLog, record_dropped
            from wardround.graphs.copilot.toolset import CopilotTools
            from wardround.tools.registry import extra_tools

            settings = Settings()
            fhir = FhirClient.from_settings(settings)
            # Other patients' records the client dropped, for both graphs on this client.
            fhir.on_drop(record_dropped(AuditLog(settings.home / "audit.jsonl")))
            tools = CopilotTools(fhir, extra_tools(settings), settings)
            ensure_model_server(settings)
            _BUILT["parts"] = (settings, make_chat_model(settings), tools)
        return _BUILT["parts"]


def _build_copilot() -> Any:
    from wardround.graphs.copilot.audit import AuditLog
    from wardround.graphs.copilot.graph import copilot_graph, history_budget, serve_with

    settings, model, tools = _parts()
    audit = AuditLog(settings.home / "audit.jsonl")
    bound = copilot_graph(
        model,
        tools,
        audit=audit,
        history_tokens=history_budget(settings.model_ctx, settings.max_tokens),
        chart=settings.copilot_chart,
    )
    serve_with(bound.context)  # LangGraph's server runs the graph without a context
    return bound.graph


class QuestionInput(TypedDict):
    question: str
    patient_id: str


class QuestionOutput(TypedDict, total=False):
    answer: str
    citations: list[str]
    flagged: list[str]
    retrieved: list[str]
    error: str | None


def _planner_runner(model: Any, fhir: Any, similarity: Any) -> Any:
    """`run(question, patient_id) -> output dict`: the one place that calls the planner."""
    from wardround.graphs.ehr_qa.planner import PlannerContext, run_planner

    context = PlannerContext(model=model, fhir=fhir, similarity=similarity)
    return lambda question, patient_id: run_planner(question, patient_id, context)


def _build_ehr_qa() -> Any:
    from langgraph.graph import END, START, StateGraph

    from wardround.tools.text_embeddings import minilm_similarity

    _, model, tools = _parts()
    similarity = minilm_similarity()
    similarity("warm up", ["MiniLM loads here, not on the server's event loop"])
    run = _planner_runner(model, tools.fhir, similarity)

    async def planner(state: QuestionInput) -> dict[str, Any]:
        out = dict(await run(state["question"], state["patient_id"]))
        return {k: out.get(k) for k in QuestionOutput.__annotations__ if k in out}

    graph = StateGraph(QuestionOutput, input_schema=QuestionInput, output_schema=QuestionOutput)
    graph.add_node("planner", planner)
    graph.add_edge(START, "planner")
    graph.add_edge("planner", END)
    return graph.compile(name="ehr_qa")


def _once(name: str, build: Any) -> Any:
    with _LOCK:
        built = _BUILT.get(name)
    if built is None:
        built = build()
        with _LOCK:
            built = _BUILT.setdefault(name, built)
    return built


async def make_copilot(config: RunnableConfig | None = None) -> Any:
    """The copilot: one patient's chart, orders through approval."""
    return await asyncio.to_thread(_once, "copilot", _build_copilot)


async def make_ehr_qa(config: RunnableConfig | None = None) -> Any:
    """The EHR question-answering planner: input {"question", "patient_id"}."""
    return await asyncio.to_thread(_once, "ehr_qa", _build_ehr_qa)
