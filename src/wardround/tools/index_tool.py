"""The shape shared by the tools over a local index (guidelines, images).

A search embeds its query on the CPU, so the async form runs it in a worker thread and the
event loop stays free for other graph branches. Whatever goes wrong comes back as text the
model can act on: bad arguments, the index's own errors, and anything else, named.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from wardround.tools.evidence import cited_tool, invalid_arguments, tool_result

Args = TypeVar("Args", bound=BaseModel)
Found = TypeVar("Found")


def index_tool(
    name: str,
    description: str,
    schema: type[Args],
    search: Callable[[Args], Found],
    render: Callable[[Args, Found], tuple[str, list[str]]],
    *,
    known: tuple[type[Exception], ...],
    what: str,
) -> BaseTool:
    """A content-and-artifact tool: `search` on the validated arguments, then `render`.

    An error of a `known` type reads "Error: <message>"; any other error of `search` reads
    "Error: <what> failed (<type>: <message>)".
    """

    def run(**kwargs: Any) -> tuple[str, list[str]]:
        try:
            args = schema.model_validate(kwargs)
            found = search(args)
        except ValidationError as exc:
            return tool_result(invalid_arguments(name, exc))
        except known as exc:
            return tool_result(f"Error: {exc}")
        except Exception as exc:  # a tool error is text for the model, never a crashed graph
            return tool_result(f"Error: {what} failed ({type(exc).__name__}: {exc})")
        return render(args, found)

    async def arun(**kwargs: Any) -> tuple[str, list[str]]:
        return await asyncio.to_thread(run, **kwargs)

    return cited_tool(name, description, schema, coroutine=arun, func=run)
