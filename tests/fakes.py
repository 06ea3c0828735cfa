"""The unit tests' scripted chat model (`wardround.testing.scripted_chat`, shared with the
benches) and toy tools.

`TOOLS` are two toy tools for the tool-call protocol tests; `cited_tool_call` checks a real
tool's contract and builds a call to it.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, tool

from wardround.testing.scripted_chat import ScriptedChatModel

__all__ = ["TOOLS", "ScriptedChatModel", "cited_tool_call", "read_record", "search_records"]


@tool
def search_records(resource_type: str, code: str | None = None) -> str:
    """Search the patient's records of one FHIR type, optionally for one code."""
    return f"found {resource_type} {code}"


@tool
def read_record(reference: str) -> str:
    """Read one record by reference, e.g. Observation/abc."""
    return f"read {reference}"


TOOLS = [search_records, read_record]


def cited_tool_call(tool: BaseTool, name: str, **args: Any) -> dict[str, Any]:
    """A call to `tool` as a graph sends it, so `invoke` returns a ToolMessage; first checks
    the tool is `name` and returns its citations as the message's artifact."""
    assert tool.name == name
    assert tool.response_format == "content_and_artifact"
    return {"type": "tool_call", "id": "1", "name": name, "args": args}
