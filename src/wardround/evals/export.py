"""Finished eval traces as chat-format JSONL to train on (`wardround eval export`).

Two formats, one line per sample, both `{"messages": [...], "tools": [...]}`:

- `openai`: OpenAI's fine-tuning format: roles system/user/assistant/tool, an assistant
  turn that calls tools carries `tool_calls` [{id, type: "function", function: {name,
  arguments}}] with the arguments as a JSON string, and each result is a `tool` message
  with that call's `tool_call_id`.
- `hf`: Hugging Face's messages format, what `tokenizer.apply_chat_template(messages,
  tools=tools)` takes: the same turns, arguments as a JSON object.

`tools` are the function specs the solver offered (kept in the trace, `artifacts["tools"]`),
else the specs of the tools the trace called, looked up by name. A trace of the text
protocol (MedAgentBench's original) has no tools: its turns are plain text. By default only
correct samples are written: a failed trace teaches the failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from wardround.evals.results import SampleRecord
from wardround.graphs.trace import message_fields

Format = Literal["openai", "hf"]
FORMATS: tuple[Format, ...] = ("openai", "hf")
ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def tool_specs(tools: Sequence[BaseTool]) -> list[dict[str, Any]]:
    """OpenAI-style function specs ({type: function, function: {name, description,
    parameters}}), as both formats take them."""
    return [convert_to_openai_tool(t) for t in tools]


@lru_cache(maxsize=1)
def known_specs() -> dict[str, dict[str, Any]]:
    """Specs of every tool we ship, by name: the registry's and MedAgentBench's nine."""
    from wardround.evals.tasks.mab_tools import OrderLog, make_mab_tools
    from wardround.tools.registry import tool_specs as registry_tools

    tools = [*registry_tools(), *make_mab_tools(None, OrderLog())]
    return {spec["function"]["name"]: spec for spec in tool_specs(tools)}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def _call(call: dict[str, Any], call_id: str, fmt: Format) -> dict[str, Any]:
    args = call.get("args") or {}
    arguments: Any = json.dumps(args, default=str) if fmt == "openai" else args
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }


def chat_messages(stored: Iterable[dict[str, Any]], fmt: Format) -> list[dict[str, Any]]:
    """A stored conversation in the format's roles and tool-call shape, cut after its last
    assistant turn (a trace that ran out of steps ends on a tool result)."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # ids of calls whose results are still to come, in order
    for n, message in enumerate(map(message_fields, stored)):
        role = ROLES.get(str(message.get("role")))
        if role is None:
            continue
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            ids = [str(c.get("id") or f"call_{n}_{i}") for i, c in enumerate(calls)]
            turn: dict[str, Any] = {
                "role": "assistant",
                "tool_calls": [_call(c, i, fmt) for c, i in zip(calls, ids, strict=True)],
            }
            if fmt == "hf":
                turn["content"] = ""
            out.append(turn)
            pending = ids
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or (pending[0] if pending else f"call_{n}"))
            pending = [i for i in pending if i != call_id]
            turn = {
                "role": "tool",
                "tool_call_id": call_id,
                "content": _text(message.get("content")),
            }
            if fmt == "hf" and message.get("name"):
                turn["name"] = message["name"]
            out.append(turn)
        else:
            out.append({"role": role, "content": _text(message.get("content"))})
    while out and out[-1]["role"] != "assistant":
        out.pop()
    return out


def tools_of(record: SampleRecord) -> list[dict[str, Any]]:
    offered = record.trace.artifacts.get("tools")
    if isinstance(offered, list) and offered:
        return offered
    names = dict.fromkeys(str(c.get("name")) for c in record.trace.tool_calls)
    specs = known_specs()
    return [specs[name] for name in names if name in specs]


def example(record: SampleRecord, fmt: Format) -> dict[str, Any] | None:
    """One training line, or None when the trace holds no assistant turn."""
    messages = chat_messages(record.trace.messages, fmt)
    if not any(m["role"] == "assistant" for m in messages):
        return None
    return {"messages": messages, "tools": tools_of(record)}


def wanted(record: SampleRecord, include_all: bool) -> bool:
    return include_all or (record.correct and record.error is None)


def export_records(
    records: Iterable[SampleRecord], out: Path, fmt: Format, *, include_all: bool = False
) -> int:
    """Write one JSON line per exported sample to `out` (replacing it); returns the count."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    lines = [
        json.dumps(line, ensure_ascii=False)
        for record in records
        if wanted(record, include_all) and (line := example(record, fmt)) is not None
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(out)
    return len(lines)
