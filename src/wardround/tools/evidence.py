"""The contract every tool keeps: text for the model, plus the ids of the records it used.

Tools are LangChain tools built with `response_format="content_and_artifact"`: they return
`(text, ids)`, so `ToolMessage.content` is what the model reads and `ToolMessage.artifact`
is the list of record references ("Observation/abc", "guideline:<source>#<section>",
"image:<id>") that an answer may cite. Graphs collect citations from artifacts only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ValidationError

# Key in `BaseTool.metadata` marking write tools that a graph must put through approval.
REQUIRES_APPROVAL = "requires_approval"
# Key in a write tool's metadata: the FHIR resource type it creates.
WRITES_RESOURCE = "writes_resource"


def tool_result(text: str, ids: Iterable[str] = ()) -> tuple[str, list[str]]:
    """Pack a tool's answer; ids keep their first-seen order, without duplicates."""
    return text, list(dict.fromkeys(ids))


def evidence_ids(messages: Iterable[BaseMessage]) -> list[str]:
    """All record ids the tool messages of a conversation carried, in order, deduplicated."""
    seen: dict[str, None] = {}
    for message in messages:
        if isinstance(message, ToolMessage) and isinstance(message.artifact, list):
            for ref in message.artifact:
                seen.setdefault(str(ref), None)
    return list(seen)


def validation_problems(error: ValidationError, limit: int = 5) -> str:
    """A pydantic error as one line a model or a person can act on: `where: what; ...`."""
    problems = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "arguments"
        problems.append(f"{where}: {str(item.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(problems)


def invalid_arguments(tool_name: str, error: Exception) -> str:
    """What a tool tells the model when its arguments do not validate."""
    problems = validation_problems(error) if isinstance(error, ValidationError) else str(error)
    return f"Error: invalid arguments for {tool_name}: {problems}. Fix them and call again."


def cited_tool(
    name: str,
    description: str,
    schema: type[BaseModel],
    *,
    coroutine: Callable[..., Awaitable[tuple[str, list[str]]]],
    func: Callable[..., tuple[str, list[str]]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> BaseTool:
    """A tool keeping this contract (its `(text, ids)` become content and artifact) whose
    arguments are `schema`; arguments that do not validate come back to the model as text."""
    return StructuredTool.from_function(
        func=func,
        coroutine=coroutine,
        name=name,
        description=description,
        args_schema=schema,
        response_format="content_and_artifact",
        handle_validation_error=partial(invalid_arguments, name),
        metadata=metadata,
    )
