"""The copilot: a conversation about one patient's chart, with orders a clinician approves.

    START -> choose -> chart -> finish -> END          (a chart question: the EHR QA planner)
             choose -> agent -> finish -> END          (a reply)
                       agent -> act -> agent           (guideline and image search)
                       agent -> review -> act -> agent (write tools: interrupt() for a decision)

`choose` is the turn's one short constrained choice of action (routing.py); the planner's
cited answer ends a chart turn, and `agent` sees only the chosen action's tools. Under
`chart="tools"` there is no choice: `agent` gets every tool (the free loop).

A thread's state (messages, patient, pending decisions) lives in the checkpointer, so a
conversation survives restarts and an order waits for approval as long as it takes. The
`review` node only asks; `act` does the writing, after the decision is checkpointed, with an
identifier per proposed order (see `orders.py`) so a step run twice writes once.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Annotated, Any, Literal, Protocol, TypeGuard, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.utils import count_tokens_approximately, trim_messages
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, Field, create_model
from typing_extensions import TypedDict

from wardround.agents.protocol import ModelOutputError, tool_calling_model
from wardround.chart.options import Similarity
from wardround.fhir.client import FHIR_ID, FhirError
from wardround.fhir.render import render_resource
from wardround.graphs.bound_graph import BoundGraph
from wardround.graphs.copilot import prompts
from wardround.graphs.copilot.audit import AuditLog
from wardround.graphs.copilot.chart import chart_messages
from wardround.graphs.copilot.orders import (
    check_args,
    check_decision,
    order_key,
    resource_type,
    summarize,
)
from wardround.graphs.copilot.routing import (
    CHART_TOOL,
    WRITE_TOOLS,
    ChartMode,
    choose_action,
    model_tools,
    needs_context,
    offered,
    overrule_reply,
    previous_chart_turn,
    standalone_question,
    unanswered_search,
)
from wardround.graphs.copilot.toolset import CopilotTools
from wardround.graphs.ehr_qa.answer import answer_question
from wardround.graphs.ehr_qa.citations import check_citations
from wardround.graphs.phi_scope import PhiRefused, patient_scope
from wardround.tools.evidence import evidence_ids
from wardround.tools.registry import HIDDEN_ARGS, needs_approval

# Tag on the model call whose tokens are streamed to the clinician.
REPLY_TAG = "copilot_reply"
MAX_CITABLE = 40
OLD_TOOL_CHARS = 400
_REF = re.compile(
    r"\b(?:[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}|guideline:[^\s,;)\]]+|image:[^\s,;)\]]+)"
)


class CopilotState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    patient_id: str
    patient: str  # the Patient's compact line, read once per thread
    decisions: dict[str, dict[str, Any]]  # clinician decisions by tool-call id, this step
    answer: str
    citations: list[str]
    flagged: list[str]
    action: str | None  # this turn's action (a key of routing.ACTION_TOOLS), once per turn
    supported: bool | None  # chart answers: every value in the cited records (planner)
    plan: str | None  # chart answers: the planner's kind and records
    injection_warning: bool  # a cited record holds text addressed to an AI (quoted)
    error: str | None


@lru_cache(maxsize=256)
def _answer_model(citable: tuple[str, ...], must_cite: bool) -> type[BaseModel]:
    """The final-answer object; citations limited to references the thread retrieved, and
    required when this turn read records (an answer after reading rests on something)."""
    if not citable:
        return create_model("CopilotAnswer", answer=(str, Field(min_length=1)))
    refs: Any = Literal[tuple(citable)]  # a runtime Literal: the thread's references
    cited = (
        Field(min_length=1, max_length=8)
        if must_cite
        else Field(default_factory=list, max_length=8)
    )
    return create_model(
        "CopilotAnswer",
        answer=(str, Field(min_length=1, description="short answer with values and dates")),
        citations=(list[refs], cited),
    )


def _current_turn(messages: list[AnyMessage]) -> list[AnyMessage]:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return messages[i:]
    return messages


def _clip(message: AnyMessage, chars: int) -> AnyMessage:
    text = str(message.content)
    if not isinstance(message, ToolMessage) or len(text) <= chars:
        return message
    return message.model_copy(update={"content": text[:chars] + "\n… (clipped)"})


def _context(messages: list[AnyMessage], budget: int) -> list[BaseMessage]:
    """The recent conversation within about `budget` tokens, starting at a clinician's message.

    Tool results of the latest step keep up to half the budget; older ones a few lines, so
    a long chart listing read twice cannot push the question out of a small context.
    """
    latest = len(messages)
    while latest > 0 and isinstance(messages[latest - 1], ToolMessage):
        latest -= 1
    budget_chars = budget * 3  # ids and codes run about 3 characters per token
    clipped = [
        _clip(m, budget_chars // 2 if i >= latest else OLD_TOOL_CHARS)
        for i, m in enumerate(messages)
    ]
    trimmed = trim_messages(
        clipped,
        max_tokens=budget,
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
    )
    return trimmed or list(_current_turn(clipped))


@dataclass
class CopilotContext:
    """What a copilot run needs besides its state (LangGraph's runtime context).

    model: the chat model; tools: the conversation's tools (both required: a context without
    them, as LangGraph's server sends, stands for the one `serve_with` set); audit: where reads
    and orders are recorded; user: who is asking (LangGraph's server names its user in the
    config instead).
    """

    model: BaseChatModel | None = None
    tools: CopilotTools | None = None
    audit: AuditLog = field(default_factory=lambda: AuditLog(None))
    similarity: Similarity | None = None  # the planner's ranking; None: MiniLM, loaded once
    chart: ChartMode = "planner"  # chart questions: the planner, or the raw reads (free loop)
    max_steps: int = 8
    history_tokens: int = 1600
    user: str | None = None


# For runners that pass no context (LangGraph's own server): set once by `studio.py`.
_served: list[CopilotContext] = []


def serve_with(context: CopilotContext) -> None:
    """Make `context` the one used by runs that bring none (LangGraph's server)."""
    _served[:] = [context]


class _Ready(Protocol):
    """A CopilotContext whose model and tools are set (what every node runs with)."""

    model: BaseChatModel
    tools: CopilotTools
    audit: AuditLog
    similarity: Similarity | None
    chart: ChartMode
    max_steps: int
    history_tokens: int
    user: str | None


def _ready(context: object) -> TypeGuard[_Ready]:
    return (
        isinstance(context, CopilotContext)
        and context.model is not None
        and context.tools is not None
    )


def _ctx(runtime: Runtime[CopilotContext]) -> _Ready:
    """The run's context; LangGraph's server passes none (or an empty one): the served one."""
    given = runtime.context
    if _ready(given):
        return given
    if _served and _ready(_served[0]):
        return _served[0]
    raise RuntimeError("run the copilot with context=CopilotContext(model, tools)")


def _user(ctx: _Ready, config: RunnableConfig) -> str | None:
    """Who is asking: the context's user, else the identity the thread's runner put on the
    config (our API and MCP server: `user`; LangGraph's server: `langgraph_auth_user_id`)."""
    configurable = config.get("configurable") or {}
    value = ctx.user or configurable.get("user") or configurable.get("langgraph_auth_user_id")
    return str(value) if value is not None else None


def _thread(config: RunnableConfig) -> str:
    return str((config.get("configurable") or {}).get("thread_id") or "")


def _write_calls(message: AnyMessage, tools: dict[str, BaseTool]) -> list[Mapping[str, Any]]:
    if not isinstance(message, AIMessage):
        return []
    return [
        c for c in message.tool_calls if c["name"] in tools and needs_approval(tools[c["name"]])
    ]


def proposal(call: Mapping[str, Any], tool: BaseTool, patient_id: str) -> dict[str, Any]:
    """What the clinician is shown for one proposed order (the interrupt's value)."""
    kind = resource_type(tool)
    return {
        "kind": "order",
        "call_id": call["id"],
        "tool": call["name"],
        "resource_type": kind,
        "patient_id": patient_id,
        "args": call["args"],
        "summary": summarize(kind or call["name"], call["args"]),
    }


async def _read_patient(ctx: _Ready, patient_id: str, config: RunnableConfig) -> str:
    """The Patient's compact line (read once per thread, audited); FhirError if unreadable."""
    resource = await ctx.tools.fhir.read(f"Patient/{patient_id}")
    ctx.audit.record(
        user=_user(ctx, config),
        action="read_patient",
        patient=patient_id,
        resources=[f"Patient/{patient_id}"],
        thread=_thread(config),
    )
    return render_resource(resource)


def _question(state: CopilotState) -> str:
    turn = _current_turn(state.get("messages", []))
    return str(turn[0].content) if turn and isinstance(turn[0], HumanMessage) else ""


def _minilm() -> Similarity:
    from wardround.tools.text_embeddings import minilm_similarity  # loads torch, once

    return minilm_similarity()


async def _chart_call(
    ctx: _Ready, state: CopilotState, call: Mapping[str, Any], config: RunnableConfig
) -> list[AnyMessage]:
    """`answer_from_chart`: the turn's question (made standalone) through the EHR QA planner."""
    patient_id, messages = state["patient_id"], state.get("messages", [])
    try:
        async with patient_scope(ctx.model, ctx.tools.fhir, patient_id):
            question = await standalone_question(ctx.model, _question(state), messages[:-1])
        result = await answer_question(
            question, patient_id, model=ctx.model, fhir=ctx.tools.fhir, graph="planner",
            similarity=ctx.similarity or _minilm(),
        )  # fmt: skip
    except (ModelOutputError, PhiRefused, ValueError) as exc:
        return [_error(call, f"Error: {CHART_TOOL} failed: {exc}")]
    ctx.audit.record(
        user=_user(ctx, config), action=CHART_TOOL, patient=patient_id, kind="read",
        resources=result.retrieved, thread=_thread(config), plan=result.plan,
    )  # fmt: skip
    if result.error and not result.answer:
        return [_error(call, f"Error: {result.error}")]
    return list(chart_messages(call["id"], question, result))


async def choose(
    state: CopilotState, config: RunnableConfig, runtime: Runtime[CopilotContext]
) -> dict[str, Any]:
    """The turn's action. A follow-up of a chart answer goes to the chart by code; a model
    that cannot choose gets the chart too (the commonest ask; the planner says when the chart
    holds nothing)."""
    ctx = _ctx(runtime)
    reset: dict[str, Any] = {"action": None, "supported": None, "plan": None, "error": None}
    if ctx.chart == "tools":
        return reset
    if not FHIR_ID.fullmatch(state.get("patient_id") or ""):
        return {**reset, "error": "this thread has no patient: start it with a patient_id"}
    question, messages = _question(state), state.get("messages", [])
    if needs_context(question) and previous_chart_turn(messages[:-1]):
        return {**reset, "action": CHART_TOOL}
    actions = offered({t.name for t in ctx.tools.for_model()})
    try:
        async with patient_scope(ctx.model, ctx.tools.fhir, state["patient_id"]):
            action = overrule_reply(await choose_action(ctx.model, question, actions), question)
    except ModelOutputError:
        action = CHART_TOOL
    except PhiRefused as exc:
        return {**reset, "error": str(exc)}
    return {**reset, "action": action}


async def after_choose(state: CopilotState) -> str:
    if state.get("error"):
        return "finish"
    return "chart" if state.get("action") == CHART_TOOL else "agent"


async def chart(
    state: CopilotState, config: RunnableConfig, runtime: Runtime[CopilotContext]
) -> dict[str, Any]:
    """The chart action: the planner answers; the thread records it as a tool call."""
    call = {"id": f"chart-{uuid.uuid4().hex[:12]}", "name": CHART_TOOL, "args": {}}
    messages = await _chart_call(_ctx(runtime), state, call, config)
    update: dict[str, Any] = {"messages": [AIMessage(content="", tool_calls=[call]), *messages]}
    if not isinstance(messages[-1], AIMessage):  # no answer: the turn ends with the error
        update["error"] = str(messages[-1].content)
    return update


async def agent(
    state: CopilotState, config: RunnableConfig, runtime: Runtime[CopilotContext]
) -> dict[str, Any]:
    ctx = _ctx(runtime)
    patient_id = state.get("patient_id") or ""
    if not FHIR_ID.fullmatch(patient_id):
        return {"error": "this thread has no patient: start it with a patient_id"}
    turn = _current_turn(state.get("messages", []))
    if sum(isinstance(m, AIMessage) for m in turn) >= ctx.max_steps:
        return {"error": f"no final answer after {ctx.max_steps} steps"}
    update: dict[str, Any] = {"decisions": {}, "error": None}
    patient = state.get("patient")
    if not patient:
        try:
            patient = update["patient"] = await _read_patient(ctx, patient_id, config)
        except FhirError as exc:
            return {"error": f"cannot read Patient/{patient_id}: {exc}"}
    citable = evidence_ids(state.get("messages", []))[-MAX_CITABLE:]
    protocol = (ctx.model.metadata or {}).get("protocol", "json")
    read_now = evidence_ids(
        m for m in turn if isinstance(m, ToolMessage) and m.name not in WRITE_TOOLS
    )
    final = _answer_model(tuple(citable), bool(read_now))
    tools = model_tools(ctx.tools.for_model(), ctx.chart, state.get("action"))
    caller = tool_calling_model(ctx.model, tools, final=final).with_config(
        tags=[REPLY_TAG, f"{REPLY_TAG}:{protocol}"]
    )
    how = prompts.CHART_HOW[ctx.chart]
    system = SystemMessage(prompts.SYSTEM.format(patient=patient, how=how, today=date.today()))
    try:
        async with patient_scope(ctx.model, ctx.tools.fhir, patient_id):
            reply = await caller.ainvoke(
                [system, *_context(state.get("messages", []), ctx.history_tokens)]
            )
    except (ModelOutputError, PhiRefused) as exc:
        return {**update, "error": str(exc)}
    if unanswered_search(state.get("action"), _question(state), reply, turn):
        return {**update, "action": CHART_TOOL}  # to the chart: see routing.unanswered_search
    return {**update, "messages": [reply]}


async def route(state: CopilotState) -> str:
    """No runtime here: LangGraph also runs this edge on `update_state`, without a context.
    Only FHIR writes need approval (CopilotTools refuses any other), so their names suffice.
    Async, like every node here: LangGraph runs a plain function in a worker thread."""
    last = state["messages"][-1] if state.get("messages") else None
    if (
        not state.get("error")
        and state.get("action") == CHART_TOOL
        and isinstance(last, HumanMessage)
    ):
        return "chart"  # the agent handed a question it answered from nothing to the chart
    if state.get("error") or not (isinstance(last, AIMessage) and last.tool_calls):
        return "finish"
    return "review" if any(c["name"] in WRITE_TOOLS for c in last.tool_calls) else "act"


async def review(state: CopilotState, runtime: Runtime[CopilotContext]) -> dict[str, Any]:
    patient_id = state["patient_id"]
    tools = _ctx(runtime).tools.by_name(patient_id)
    decisions: dict[str, dict[str, Any]] = {}
    for call in _write_calls(state["messages"][-1], tools):
        tool = tools[call["name"]]
        try:  # a malformed order goes back to the model, not to the clinician
            check_args(call["args"], tool)
        except ValueError as exc:
            decisions[call["id"]] = {"action": "invalid", "reason": str(exc)}
            continue
        shown = proposal(call, tool, patient_id)
        while True:  # an invalid answer asks again, saying what was wrong
            raw = interrupt(shown)
            try:
                decision = check_decision(raw, tool)
                break
            except ValueError as exc:
                shown = {**proposal(call, tool, patient_id), "error": str(exc)}
        decisions[call["id"]] = decision.model_dump(mode="json")
    return {"decisions": decisions}


def _error(call: Mapping[str, Any], text: str) -> ToolMessage:
    return ToolMessage(text, tool_call_id=call["id"], name=call["name"], status="error")


def _decided(
    ctx: _Ready, call: Mapping[str, Any], decision: dict[str, Any], audit: dict[str, Any]
) -> ToolMessage | dict[str, Any]:
    """A write call after the clinician's decision: the message to return instead of writing,
    or the arguments to write with."""
    name = call["name"]
    if decision["action"] == "invalid":
        return _error(
            call, f"Error: {decision['reason']}. Fix the arguments and call {name} again."
        )
    ctx.audit.record(**audit, action=f"{decision['action']}_order", tool=name,
                     reason=decision.get("reason"))  # fmt: skip
    if decision["action"] == "reject":
        reason = f" ({decision['reason']})" if decision.get("reason") else ""
        text = prompts.REJECTED.format(reason=reason)
        return ToolMessage(text, tool_call_id=call["id"], name=name, artifact=[])
    return decision["args"] if decision["action"] == "edit" else call["args"]


async def _run_call(
    ctx: _Ready, state: CopilotState, call: Mapping[str, Any], config: RunnableConfig
) -> ToolMessage:
    patient_id, name = state["patient_id"], call["name"]
    tools = ctx.tools.by_name(patient_id)
    tool = tools.get(name)
    if tool is None:
        return _error(call, f"Error: there is no tool {name!r}. Use one of: {', '.join(tools)}.")
    thread = _thread(config)
    audit = {"user": _user(ctx, config), "patient": patient_id, "thread": thread}
    args = {k: v for k, v in call["args"].items() if k not in HIDDEN_ARGS.get(name, ())}
    if needs_approval(tool):
        no_decision = {"action": "reject", "reason": "no decision"}
        decided = _decided(
            ctx, call, (state.get("decisions") or {}).get(call["id"]) or no_decision, audit
        )
        if isinstance(decided, ToolMessage):
            return decided
        args = decided
        tool = ctx.tools.write_tool(patient_id, name, order_key(thread, call["id"]))
    try:
        message = await tool.ainvoke({**call, "args": args, "type": "tool_call"})
    except Exception as exc:  # a tool error goes back to the model as text
        message = _error(call, f"Error: {name} failed: {exc}")
    if name in ctx.tools.fhir_names:
        refs = message.artifact if isinstance(message.artifact, list) else []
        kind = "write" if needs_approval(tool) else "read"
        ctx.audit.record(**audit, action=name, resources=refs, kind=kind, args=args)
    return message


async def act(
    state: CopilotState, config: RunnableConfig, runtime: Runtime[CopilotContext]
) -> dict[str, Any]:
    """Run the last reply's tool calls: reads at once, writes as the clinician decided."""
    ctx = _ctx(runtime)
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    messages = await asyncio.gather(*(_run_call(ctx, state, c, config) for c in last.tool_calls))
    return {"messages": list(messages)}


async def finish(state: CopilotState) -> dict[str, Any]:
    last = state["messages"][-1] if state.get("messages") else None
    if state.get("error") or not isinstance(last, AIMessage) or last.tool_calls:
        return {"answer": "", "citations": [], "flagged": []}
    text = str(last.content)
    final = last.additional_kwargs.get("final") or {}
    cited = final.get("citations") or _REF.findall(text)
    kept, flagged = check_citations(cited, evidence_ids(state["messages"]))
    extra = {**last.additional_kwargs, "citations": kept, "flagged": flagged}
    marked = last.model_copy(update={"additional_kwargs": extra})
    return {
        "messages": [marked],
        "answer": text,
        "citations": kept,
        "flagged": flagged,
        "supported": extra.get("supported"),
        "plan": extra.get("plan"),
        "injection_warning": bool(extra.get("injection_warning")),
    }


def build_copilot() -> StateGraph[CopilotState, CopilotContext, CopilotState, CopilotState]:
    """The copilot graph, uncompiled (compile it with a checkpointer: `copilot_graph`)."""
    graph = StateGraph(CopilotState, context_schema=CopilotContext)
    # cast: LangGraph runs a node taking (state, config, runtime), but its node protocols
    # have no such signature (config or runtime, not both).
    graph.add_node("choose", cast(Any, choose))
    graph.add_node("chart", cast(Any, chart))
    graph.add_node("agent", cast(Any, agent))
    graph.add_node("review", review)
    graph.add_node("act", cast(Any, act))
    graph.add_node("finish", finish)
    graph.add_edge(START, "choose")
    graph.add_conditional_edges("choose", after_choose, ["chart", "agent", "finish"])
    graph.add_edge("chart", "finish")
    graph.add_conditional_edges("agent", route, ["act", "review", "finish", "chart"])
    graph.add_edge("review", "act")
    graph.add_edge("act", "agent")
    graph.add_edge("finish", END)
    return graph


def history_budget(model_ctx: int, max_tokens: int) -> int:
    """Tokens of conversation to send: what the context holds after the reply and the
    instructions (tool descriptions take about a third of a small context)."""
    return max(600, int((model_ctx - max_tokens) * 0.45))


def copilot_graph(
    model: BaseChatModel,
    tools: CopilotTools,
    *,
    checkpointer: BaseCheckpointSaver | None = None,
    audit: AuditLog | None = None,
    max_steps: int = 8,
    history_tokens: int = 1600,
    similarity: Similarity | None = None,
    chart: ChartMode = "planner",
) -> BoundGraph:
    """The compiled copilot with its context bound (a run may still pass its own `context`,
    e.g. with the user set). Threads need a checkpointer (LangGraph's server brings its own)."""
    context = CopilotContext(
        model, tools, audit or AuditLog(None), similarity=similarity, chart=chart,
        max_steps=max_steps, history_tokens=history_tokens,
    )  # fmt: skip
    compiled = build_copilot().compile(checkpointer=checkpointer, name="copilot")
    return BoundGraph(compiled, context)
