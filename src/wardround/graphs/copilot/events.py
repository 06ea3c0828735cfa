"""A copilot run as a stream of plain events, the shape the HTTP API sends as SSE.

    token             {"text", "reset"?}    the answer as the model writes it
    tool_call         {"id", "name", "args"}
    tool_result       {"id", "name", "text", "refs", "status"}
    approval_required {"interrupt_id", "call_id", "tool", "resource_type", "args", "summary", "error"?}
    answer            {"text", "citations", "flagged", "supported", "plan", "injection_warning"}
                      (supported and plan: chart answers, from the planner; else null)
    error             {"message"}
    done              {"status": "complete" | "awaiting_approval" | "error"}

Under the json tool protocol the model writes one JSON object; tokens are the growing
`"answer"` string of a final-answer object, decoded as it arrives (tool-call objects are
not shown as tokens: they become `tool_call` events). A chart answer comes from the EHR QA
planner as a whole (an `answer_from_chart` tool call and result, then the answer).

Every event's data is plain JSON (dates, datetimes and decimals from tool arguments and
results as strings), so each response path can send it as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from pydantic_core import to_jsonable_python

from wardround.graphs.copilot.graph import REPLY_TAG

Event = dict[str, Any]  # {"event": name, "data": {...}}
TOOL_TEXT_CHARS = 1500

_FINAL_START = re.compile(r'"action"\s*:\s*"final_answer"')
_ANSWER_START = re.compile(r'"answer"\s*:\s*"')


def event(kind: str, /, **data: Any) -> Event:
    return {"event": kind, "data": to_jsonable_python(data, fallback=str)}


def partial_answer(raw: str, plain: bool = False) -> str | None:
    """The decoded prefix of the `"answer"` string in a final-answer object being written.

    None while the object is not (yet) a final answer. With `plain` (a model with native
    tool calls), text that is not a JSON object is its own answer.
    """
    stripped = raw.lstrip()
    if plain and stripped and not stripped.startswith(("{", "`")):
        return raw
    if not _FINAL_START.search(raw):
        return None
    start = _ANSWER_START.search(raw)
    if start is None:
        return ""
    out: list[str] = []
    i = start.end()
    while i < len(raw):
        ch = raw[i]
        if ch == '"':
            break
        if ch == "\\":
            escape = raw[i : i + 2] if raw[i + 1 : i + 2] != "u" else raw[i : i + 6]
            if len(escape) < 2 or (escape[1] == "u" and len(escape) < 6):
                break  # an escape cut in half: wait for the rest
            try:
                out.append(json.loads(f'"{escape}"'))
            except ValueError:
                out.append(escape)
            i += len(escape)
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class _Tokens:
    """Turns model output chunks (per model run) into answer deltas."""

    def __init__(self) -> None:
        self.raw: dict[str, str] = {}
        self.shown: dict[str, str] = {}
        self.last_run: str | None = None

    def feed(self, message: BaseMessage, plain: bool = False) -> Event | None:
        run = str(message.id or "")
        text = message.content if isinstance(message.content, str) else ""
        if type(message) is AIMessage:  # a whole reply (a model that did not stream)
            self.raw[run] = text
        else:
            self.raw[run] = self.raw.get(run, "") + text
        answer = partial_answer(self.raw[run], plain)
        if answer is None:
            return None
        before = self.shown.get(run, "")
        if not answer.startswith(before) or answer == before:
            return None
        self.shown[run] = answer
        reset = self.last_run is not None and self.last_run != run and before == ""
        self.last_run = run
        delta = answer[len(before) :]
        return event("token", text=delta, reset=True) if reset else event("token", text=delta)


def _tool_events(messages: list[BaseMessage]) -> list[Event]:
    out = []
    for message in messages:
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                out.append(event("tool_call", id=call["id"], name=call["name"], args=call["args"]))
        elif isinstance(message, ToolMessage):
            refs = message.artifact if isinstance(message.artifact, list) else []
            text = str(message.content)
            out.append(
                event(
                    "tool_result",
                    id=message.tool_call_id,
                    name=message.name,
                    text=text[:TOOL_TEXT_CHARS] + ("…" if len(text) > TOOL_TEXT_CHARS else ""),
                    refs=refs,
                    status=message.status,
                )
            )
    return out


def approval_events(interrupts: Any) -> list[Event]:
    return [
        event("approval_required", interrupt_id=i.id, **i.value)
        for i in interrupts
        if isinstance(i.value, dict) and i.value.get("kind") == "order"
    ]


async def run_events(graph: Any, payload: Any, config: RunnableConfig) -> AsyncIterator[Event]:
    """Run (or resume) the graph and yield its events, ending with `done`.

    `payload` is the input ({"messages": [...]}), a `Command(resume=...)`, or None to
    finish a step that did not complete. Exceptions propagate to the caller.
    """
    tokens = _Tokens()
    error: str | None = None
    waiting = False  # the run stopped at an interrupt (an order awaiting a decision)
    async for mode, chunk in graph.astream(payload, config, stream_mode=["messages", "updates"]):
        if mode == "messages":
            message, meta = chunk
            tags = meta.get("tags") or []
            ours = REPLY_TAG in tags and isinstance(message, AIMessage)
            plain = f"{REPLY_TAG}:native" in tags
            if ours and (token := tokens.feed(message, plain)) is not None:
                yield token
            continue
        for node, update in chunk.items():
            if node == "__interrupt__":
                waiting = waiting or bool(update)
                for item in approval_events(update):
                    yield item
            elif not isinstance(update, dict):
                continue
            elif node in ("agent", "act", "chart"):
                for item in _tool_events(update.get("messages") or []):
                    yield item
                error = update.get("error") or error
            elif node == "finish":
                if error:
                    yield event("error", message=error)
                else:
                    yield event(
                        "answer",
                        text=update.get("answer", ""),
                        citations=update.get("citations", []),
                        flagged=update.get("flagged", []),
                        supported=update.get("supported"),
                        plan=update.get("plan"),
                        injection_warning=bool(update.get("injection_warning")),
                    )
    # From the stream: re-reading the checkpoint here cost every request one more read.
    status = "awaiting_approval" if waiting else "error" if error else "complete"
    yield event("done", status=status)
