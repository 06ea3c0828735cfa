"""Turning what solvers return (LangChain messages, graph results) into stored traces."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from wardround.evals.task import Trace
from wardround.graphs.trace import message_fields, trace


def tool_calls_of(messages: Iterable[BaseMessage | Mapping[str, Any]]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, AIMessage):
            calls += [{"name": c["name"], "args": c["args"]} for c in m.tool_calls]
        elif isinstance(m, Mapping):
            stored = message_fields(m)
            calls += [
                {"name": c.get("name"), "args": c.get("args")}
                for c in stored.get("tool_calls") or []
            ]
    return calls


def tokens_dict(tokens: Mapping[str, Any] | None) -> dict[str, int]:
    tokens = tokens or {}
    return {
        "prompt": int(tokens.get("prompt", tokens.get("input_tokens", 0)) or 0),
        "completion": int(tokens.get("completion", tokens.get("output_tokens", 0)) or 0),
    }


def trace_from(result: Any, **extra: Any) -> Trace:
    """A Trace from any result object with answer/messages/tokens/latency_s (QAResult,
    LoopResult); attributes it lacks are left at their defaults. A graph's own error (e.g.
    a model reply that stayed invalid) is kept as artifacts["solver_error"]."""
    messages = list(getattr(result, "messages", []) or [])
    calls = getattr(result, "tool_calls", None)
    artifacts = dict(extra.pop("artifacts", {}) or {})
    if getattr(result, "error", None):
        artifacts["solver_error"] = str(result.error)
    return Trace(
        answer=str(getattr(result, "answer", "") or ""),
        messages=trace(messages),
        tool_calls=[dict(c) for c in calls] if calls else tool_calls_of(messages),
        tokens=tokens_dict(getattr(result, "tokens", None)),
        latency_s=float(getattr(result, "latency_s", 0.0) or 0.0),
        steps=int(getattr(result, "steps", 0) or len(tool_calls_of(messages))),
        citations=list(getattr(result, "citations", []) or []),
        retrieved=list(getattr(result, "retrieved", []) or []),
        artifacts=artifacts,
        **extra,
    )
