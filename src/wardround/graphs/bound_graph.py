"""A compiled graph together with the runtime context its runs get by default.

LangGraph takes a run's context as an argument of every call (`context=`). A server that
builds a graph once for many runs binds the context here, so the code that streams, resumes
or inspects threads needs no knowledge of what the nodes need; a call may still pass its own
`context` (e.g. with the requesting user set).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langgraph.pregel import Pregel


class BoundGraph:
    """`graph` whose runs get `context` unless the caller passes one; everything else
    (`aget_state`, `aupdate_state`, `get_graph`, ...) is the graph's own."""

    def __init__(self, graph: Pregel[Any, Any, Any, Any], context: Any) -> None:
        self.graph = graph
        self.context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self.graph, name)

    def _kw(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"context": self.context, **kwargs}

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return await self.graph.ainvoke(input, config, **self._kw(kwargs))

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return self.graph.invoke(input, config, **self._kw(kwargs))

    def astream(self, input: Any, config: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        return self.graph.astream(input, config, **self._kw(kwargs))

    def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
        return self.graph.stream(input, config, **self._kw(kwargs))
