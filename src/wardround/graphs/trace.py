"""Traces and token counts read off a conversation, the same way for every graph.

One message shape everywhere a conversation is stored (eval results, QA and loop results):
{"role": "human" | "ai" | "tool" | "system", "content", and where they apply "name",
"tool_calls" [{"name", "args", "id"}], "tool_call_id", "artifact" (the record ids a tool
returned), "status" ("error"), "usage" (the model's token counts), "citations", and on chart answers "supported" and "plan"}.
`message_fields` also reads the shape older results files hold (LangChain's
{"type", "data"}), so reports rebuild from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from pydantic_core import to_jsonable_python


def token_usage(messages: Iterable[BaseMessage]) -> dict[str, int]:
    prompt = completion = 0
    for message in messages:
        if isinstance(message, AIMessage) and message.usage_metadata:
            prompt += int(message.usage_metadata.get("input_tokens", 0))
            completion += int(message.usage_metadata.get("output_tokens", 0))
    return {"prompt": prompt, "completion": completion}


def message_record(message: BaseMessage) -> dict[str, Any]:
    """One message in the stored shape (see the module docstring)."""
    data: dict[str, Any] = {"role": message.type, "content": message.content}
    if isinstance(message, AIMessage):
        if message.tool_calls:
            data["tool_calls"] = [
                {"name": c["name"], "args": c["args"], "id": c.get("id")}
                for c in message.tool_calls
            ]
        if message.usage_metadata:
            data["usage"] = dict(message.usage_metadata)
        if "citations" in message.additional_kwargs:
            data["citations"] = list(message.additional_kwargs["citations"])
        # A chart answer's check, plan and injection warning (the planner's).
        for key in ("supported", "plan", "injection_warning"):
            if key in message.additional_kwargs:
                data[key] = message.additional_kwargs[key]
    if isinstance(message, ToolMessage):
        data.update(name=message.name, tool_call_id=message.tool_call_id)
        if message.artifact is not None:
            data["artifact"] = message.artifact
        if message.status == "error":
            data["status"] = "error"
    # Plain JSON whatever a real run put in it: dates in tool arguments, decimals in results.
    return to_jsonable_python(data, fallback=str)


def trace(messages: Iterable[BaseMessage | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages in the stored shape; already stored ones are read with `message_fields`."""
    return [message_fields(m) if isinstance(m, Mapping) else message_record(m) for m in messages]


def message_fields(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message in the current shape, whichever shape it was stored in."""
    if "role" in stored:
        return dict(stored)
    data = dict(stored.get("data") or {})
    fields: dict[str, Any] = {
        "role": stored.get("type", data.get("type")),
        "content": data.get("content", ""),
    }
    for key in ("name", "tool_call_id", "artifact", "status"):
        if data.get(key) is not None:
            fields[key] = data[key]
    if data.get("tool_calls"):
        fields["tool_calls"] = [
            {"name": c.get("name"), "args": c.get("args"), "id": c.get("id")}
            for c in data["tool_calls"]
        ]
    if fields.get("status") == "success":
        del fields["status"]
    return fields


def stored_refs(messages: Iterable[Mapping[str, Any]], skip: tuple[str, ...] = ()) -> list[str]:
    """Record ids the tool messages of a stored conversation carried, in order, once each;
    tools whose names start with one of `skip` are left out."""
    seen: dict[str, None] = {}
    for message in map(message_fields, messages):
        name = str(message.get("name", ""))
        if message.get("role") != "tool" or (skip and name.startswith(skip)):
            continue
        artifact = message.get("artifact")
        for ref in artifact if isinstance(artifact, list) else []:
            if isinstance(ref, str):
                seen.setdefault(ref, None)
    return list(seen)
