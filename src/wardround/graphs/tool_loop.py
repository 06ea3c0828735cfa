"""The free tool loop: the model picks a tool, LangGraph's ToolNode runs it, until an answer.

Bounded: after `max_steps` model turns without a final answer the loop stops and says so.
A call the model already made with the same arguments is not run again: the model is told
the result is above and is asked, with no tools offered, for its final answer (small models
otherwise repeat one lookup until the step budget runs out).
A model reply that stays invalid after the protocol's one repair ends the loop with an
error in the state, never an exception out of the graph.

Two ways to choose each step (`choice`): "two_step" (the default: measured better with a
small model) picks the action from an enum, then fills only that tool's arguments
(agents/two_step.py); "one_call" asks for a tool call or the answer in one constrained reply
(one schema, anyOf every tool). A final answer passes the
finish checks (graphs/finish_check.py) before it stands: unsupported values are repaired
once, then flagged; an order the task asked for must be a write tool's call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from wardround.agents.protocol import ModelOutputError, tool_calling_model
from wardround.agents.two_step import Rank, two_step_caller
from wardround.chart.kinds import Kind
from wardround.chart.steer import kind_from_words
from wardround.graphs import finish_check
from wardround.graphs.trace import token_usage, trace
from wardround.tools.evidence import WRITES_RESOURCE
from wardround.tools.registry import needs_approval

Choice = Literal["one_call", "two_step"]


class LoopState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    steps: int
    stuck: bool  # every call of the last reply repeated an earlier one
    error: str | None
    repaired: bool  # the finish check sent an answer back for unsupported values
    recounted: bool  # the finish check sent back a count question's answer for its count
    nudged: bool  # the finish check asked for the write the task asked for
    retry: bool  # the finish check sent the last answer back
    unsupported: list[str]  # values of the final answer no tool result holds (flagged)


class LoopResult(BaseModel):
    answer: str
    final: dict[str, Any] = Field(default_factory=dict)  # all fields of the final answer object
    messages: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    steps: int
    tokens: dict[str, int]
    latency_s: float
    error: str | None = None
    unsupported: list[str] = Field(default_factory=list)  # flagged by the finish check
    checks: list[str] = Field(default_factory=list)  # finish checks that sent an answer back


REPEATED = (
    "Error: you already called {name} with these arguments; its result is above. Do not "
    "repeat the call: use that result, call another tool, or give your final answer."
)


def _call_key(call: Mapping[str, Any]) -> str:
    return json.dumps([call["name"], call.get("args") or {}], sort_keys=True, default=str)


def repeated_calls(history: Sequence[BaseMessage], calls: Sequence[Mapping[str, Any]]) -> list[str]:
    """Ids of `calls` whose name and arguments match a call made earlier in `history`."""
    made = {_call_key(c) for m in history if isinstance(m, AIMessage) for c in m.tool_calls}
    return [str(c["id"]) for c in calls if _call_key(c) in made]


def _repeat_message(call: Mapping[str, Any]) -> ToolMessage:
    text = REPEATED.format(name=call["name"])
    return ToolMessage(text, tool_call_id=call["id"], name=call["name"], status="error")


CONCLUDE = (
    "You called the same tool with the same arguments again: its result will not change. "
    "Stop calling tools and give your final answer now, from the results above."
)


@dataclass(frozen=True)
class FinishCheck:
    """What the finish check compares a final answer with: the prompt's texts (values the
    person gave count as supported), the write tools, and the write the task asks for (the
    verb, or None)."""

    prompt: tuple[str, ...] = ()
    write_tools: frozenset[str] = frozenset()
    write_verb: str | None = None
    count_tools: frozenset[str] = frozenset()  # a count question: the tools that count


@dataclass(frozen=True)
class LoopContext:
    """What a loop run needs besides its state. `closer` answers without tools: the turn a
    model that repeats an identical call gets instead (None: the loop just says so)."""

    caller: Runnable[Sequence[BaseMessage], AIMessage]
    tools: ToolNode
    max_steps: int = 6
    closer: Runnable[Sequence[BaseMessage], AIMessage] | None = None
    finish: FinishCheck | None = None  # None: a final answer stands unchecked


async def agent(state: LoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
    ctx, steps = runtime.context, state.get("steps", 0) + 1
    nudge = [HumanMessage(CONCLUDE)] if state.get("stuck") and ctx.closer else []
    model = ctx.closer if nudge and ctx.closer else ctx.caller
    try:
        reply = await model.ainvoke([*state["messages"], *nudge])
    except ModelOutputError as err:
        return {"steps": steps, "error": str(err)}
    except openai.BadRequestError as err:  # e.g. the conversation outgrew the context
        return {"steps": steps, "error": f"the model server refused the request: {err.message}"}
    return {"messages": [*nudge, reply], "steps": steps, "stuck": False}


def route(state: LoopState, runtime: Runtime[LoopContext]) -> str:
    last = state["messages"][-1]
    if state.get("error"):
        return END
    if not (isinstance(last, AIMessage) and last.tool_calls):
        return "check" if runtime.context.finish else END
    if state.get("steps", 0) >= runtime.context.max_steps:
        return "out_of_steps"
    return "tools"


async def act(state: LoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
    """Run the last reply's tool calls, unless every one of them was made before."""
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    repeats = repeated_calls(state["messages"][:-1], last.tool_calls)
    if repeats and len(repeats) == len(last.tool_calls):
        return {"messages": [_repeat_message(call) for call in last.tool_calls], "stuck": True}
    return await runtime.context.tools.ainvoke(state)


def check(state: LoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
    """Send a final answer back once for a missing write, once for unsupported values."""
    ctx, history = runtime.context.finish, state["messages"]
    assert ctx is not None
    if (
        ctx.write_verb
        and not state.get("nudged")
        and not finish_check.wrote(history, ctx.write_tools)
    ):
        text = finish_check.WRITE_NEEDED.format(
            verb=ctx.write_verb, tools=", ".join(sorted(ctx.write_tools))
        )
        return {"messages": [HumanMessage(text)], "nudged": True, "retry": True}
    answer = str(history[-1].content)
    counted = finish_check.last_count(history, ctx.count_tools)
    if finish_check.miscounted(answer, counted) and not state.get("recounted"):
        assert counted is not None
        text = finish_check.MISCOUNTED.format(tool=counted[0], count=counted[1])
        return {"messages": [HumanMessage(text)], "recounted": True, "retry": True}
    missing = finish_check.unsupported_values(answer, history, ctx.prompt)
    if missing and not state.get("repaired"):
        text = finish_check.UNSUPPORTED.format(values=", ".join(missing))
        return {"messages": [HumanMessage(text)], "repaired": True, "retry": True}
    return {"unsupported": missing, "retry": False}


def after_check(state: LoopState) -> str:
    return "agent" if state.get("retry") else END


def out_of_steps(state: LoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
    return {"error": f"no final answer after {runtime.context.max_steps} steps"}


def _build() -> Any:
    graph = StateGraph(LoopState, context_schema=LoopContext)
    graph.add_node("agent", agent)
    graph.add_node("tools", act)
    graph.add_node("out_of_steps", out_of_steps)
    graph.add_node("check", check)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", "out_of_steps", "check", END])
    graph.add_conditional_edges("check", after_check, ["agent", END])
    graph.add_edge("tools", "agent")
    graph.add_edge("out_of_steps", END)
    return graph.compile(name="tool_loop")


# agent -> (tools -> agent)* -> [check -> agent]* -> end; run it with context=LoopContext(...).
TOOL_LOOP = _build()


async def run_tool_loop(
    prompt: str | Sequence[BaseMessage],
    tools: Sequence[BaseTool],
    *,
    model: BaseChatModel | None = None,
    caller: Runnable[Sequence[BaseMessage], AIMessage] | None = None,
    final: type[BaseModel] | None = None,
    max_steps: int = 6,
    choice: Choice = "two_step",
    rank: Rank | None = None,
    check: bool = True,
    task: str | None = None,
    now: datetime | None = None,
) -> LoopResult:
    """Run the loop on a prompt; collect the answer, the trace, tokens and latency.

    Give `model` (its tool protocol is the one `make_chat_model` recorded) or a ready `caller`.
    `choice`: how each step is chosen (see the module; "two_step" needs the json protocol,
    the native one always calls once); `rank` orders a long enum for the two-step arguments
    call. `check`: run the finish checks; `task`: the instruction whose order, referral or
    record must be a write tool's call (a task naming no write is offered no write tool);
    `now`: the task's time, against which a conditional write's age limit is judged.
    """
    started = time.perf_counter()
    tools = offered_tools(tools, task)
    if caller is None:
        caller = _caller(model, tools, final, choice, rank, task, now)
    messages = [HumanMessage(content=prompt)] if isinstance(prompt, str) else list(prompt)
    closer = tool_calling_model(model, [], final=final) if model is not None else None
    finish = _finish_check(messages, tools, task) if check else None
    context = LoopContext(
        caller, ToolNode(list(tools), handle_tool_errors=True), max_steps, closer, finish
    )
    state = await TOOL_LOOP.ainvoke(
        {"messages": list(messages), "steps": 0},
        {"recursion_limit": 2 * max_steps + 11},  # + two checks: a check and an agent turn each
        context=context,
    )
    history: list[BaseMessage] = state["messages"]
    last = history[-1]
    done = isinstance(last, AIMessage) and not last.tool_calls and not state.get("error")
    keys = (("write", "nudged"), ("count", "recounted"), ("repair", "repaired"))
    checks = [name for name, key in keys if state.get(key)]
    return LoopResult(
        answer=str(last.content) if done else "",
        final=dict(last.additional_kwargs.get("final", {})) if done else {},
        messages=trace(history),
        tool_calls=[dict(c) for m in history if isinstance(m, AIMessage) for c in m.tool_calls],
        steps=state.get("steps", 0),
        tokens=token_usage(history),
        latency_s=time.perf_counter() - started,
        error=state.get("error"),
        unsupported=list(state.get("unsupported") or []) if done else [],
        checks=checks,
    )


def offered_tools(tools: Sequence[BaseTool], task: str | None) -> list[BaseTool]:
    """The tools a task gets: its write tools only where the task names what they create
    (no write tool for a lookup, no vital-sign filing inside an order task)."""
    if task is None:
        return list(tools)
    wanted = finish_check.written_types(task)

    def offered(tool: BaseTool) -> bool:
        if not needs_approval(tool):
            return True
        creates = (tool.metadata or {}).get(WRITES_RESOURCE)
        return bool(wanted) and (creates is None or creates in wanted)

    return [t for t in tools if offered(t)]


def _caller(
    model: BaseChatModel | None,
    tools: Sequence[BaseTool],
    final: type[BaseModel] | None,
    choice: Choice,
    rank: Rank | None,
    task: str | None = None,
    now: datetime | None = None,
) -> Runnable[Sequence[BaseMessage], AIMessage]:
    if model is None:
        raise ValueError("run_tool_loop needs a model or a caller")
    if choice not in ("one_call", "two_step"):
        raise ValueError(f"unknown choice {choice!r} (one_call or two_step)")
    native = (model.metadata or {}).get("protocol") == "native"
    if choice == "two_step" and not native:
        condition = finish_check.write_condition(task) if task else None
        writes = frozenset(t.name for t in tools if needs_approval(t))
        return two_step_caller(
            model, tools, final=final, rank=rank, condition=condition, gated=writes, now=now
        )
    return tool_calling_model(model, tools, final=final)


def _finish_check(
    messages: Sequence[BaseMessage], tools: Sequence[BaseTool], task: str | None
) -> FinishCheck:
    writes = frozenset(t.name for t in tools if needs_approval(t))
    verb = finish_check.asks_to_write(task) if task and writes else None
    question = task or "\n".join(str(m.content) for m in messages if isinstance(m, HumanMessage))
    counts = kind_from_words(question) is Kind.COUNT
    count_tools = frozenset(t.name for t in tools if counts and (t.metadata or {}).get("counts"))
    return FinishCheck(tuple(str(m.content) for m in messages), writes, verb, count_tools)
