"""The free tool loop: the model picks a tool, LangGraph's ToolNode runs it, until an answer.

Bounded: after `max_steps` model turns without a final answer the loop stops and says so.
A call the model already made with the same arguments is not run again: the model is told
the result is above and to use it (small models otherwise repeat one lookup until the budget
runs out).
A model reply that stays invalid after the protocol's one repair ends the loop with an
error in the state, never an exception out of the graph.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Annotated, Any

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from wardround.agents.protocol import ModelOutputError, tool_calling_model

from .usage import token_usage, trace


class LoopState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    steps: int
    error: str | None


class LoopResult(BaseModel):
    answer: str
    final: dict[str, Any] = Field(default_factory=dict)  # all fields of the final answer object
    messages: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    steps: int
    tokens: dict[str, int]
    latency_s: float
    error: str | None = None


REPEATED = (
    "Error: you already called {name} with these arguments; its result is above. Do not "
    "repeat the call: use that result, call another tool, or give your final answer."
)


def _call_key(call: dict[str, Any]) -> str:
    return json.dumps([call["name"], call.get("args") or {}], sort_keys=True, default=str)


def repeated_calls(history: Sequence[BaseMessage], calls: Sequence[dict[str, Any]]) -> list[str]:
    """Ids of `calls` whose name and arguments match a call made earlier in `history`."""
    made = {_call_key(c) for m in history if isinstance(m, AIMessage) for c in m.tool_calls}
    return [str(c["id"]) for c in calls if _call_key(c) in made]


def _repeat_message(call: dict[str, Any]) -> ToolMessage:
    text = REPEATED.format(name=call["name"])
    return ToolMessage(text, tool_call_id=call["id"], name=call["name"], status="error")


def build_tool_loop(
    caller: Runnable[Sequence[BaseMessage], AIMessage],
    tools: Sequence[BaseTool],
    max_steps: int = 6,
) -> Any:
    """A compiled graph: agent -> (tools -> agent)* -> end."""

    async def agent(state: LoopState) -> dict[str, Any]:
        steps = state.get("steps", 0) + 1
        try:
            reply = await caller.ainvoke(state["messages"])
        except ModelOutputError as err:
            return {"steps": steps, "error": str(err)}
        except openai.BadRequestError as err:  # e.g. the conversation outgrew the context
            return {"steps": steps, "error": f"the model server refused the request: {err.message}"}
        return {"messages": [reply], "steps": steps}

    def route(state: LoopState) -> str:
        last = state["messages"][-1]
        if state.get("error") or not (isinstance(last, AIMessage) and last.tool_calls):
            return END
        if state.get("steps", 0) >= max_steps:
            return "out_of_steps"
        return "tools"

    run_tools = ToolNode(list(tools), handle_tool_errors=True)

    async def act(state: LoopState) -> dict[str, Any]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        repeats = repeated_calls(state["messages"][:-1], last.tool_calls)
        if repeats and len(repeats) == len(last.tool_calls):
            return {"messages": [_repeat_message(call) for call in last.tool_calls]}
        return await run_tools.ainvoke(state)

    def out_of_steps(state: LoopState) -> dict[str, Any]:
        return {"error": f"no final answer after {max_steps} steps"}

    graph = StateGraph(LoopState)
    graph.add_node("agent", agent)
    graph.add_node("tools", act)
    graph.add_node("out_of_steps", out_of_steps)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", "out_of_steps", END])
    graph.add_edge("tools", "agent")
    graph.add_edge("out_of_steps", END)
    return graph.compile()


async def run_tool_loop(
    prompt: str | Sequence[BaseMessage],
    tools: Sequence[BaseTool],
    *,
    model: BaseChatModel | None = None,
    caller: Runnable[Sequence[BaseMessage], AIMessage] | None = None,
    final: type[BaseModel] | None = None,
    max_steps: int = 6,
) -> LoopResult:
    """Run the loop on a prompt; collect the answer, the trace, tokens and latency.

    Give `model` (its tool protocol is the one `make_chat_model` recorded) or a ready `caller`.
    """
    started = time.perf_counter()
    if caller is None:
        if model is None:
            raise ValueError("run_tool_loop needs a model or a caller")
        caller = tool_calling_model(model, tools, final=final)
    messages = [HumanMessage(content=prompt)] if isinstance(prompt, str) else list(prompt)
    graph = build_tool_loop(caller, tools, max_steps)
    state = await graph.ainvoke(
        {"messages": list(messages), "steps": 0}, {"recursion_limit": 2 * max_steps + 5}
    )
    history: list[BaseMessage] = state["messages"]
    last = history[-1]
    done = isinstance(last, AIMessage) and not last.tool_calls and not state.get("error")
    return LoopResult(
        answer=str(last.content) if done else "",
        final=dict(last.additional_kwargs.get("final", {})) if done else {},
        messages=trace(history),
        tool_calls=[c for m in history if isinstance(m, AIMessage) for c in m.tool_calls],
        steps=state.get("steps", 0),
        tokens=token_usage(history),
        latency_s=time.perf_counter() - started,
        error=state.get("error"),
    )
