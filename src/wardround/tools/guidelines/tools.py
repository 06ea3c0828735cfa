"""`lookup_guideline`: the LangChain tool over the guideline index.

It returns the passages as compact text (each headed by its citation id, title, section and
source) and, as the artifact, the ids "guideline:<source>#<section>" an answer may cite.
Problems (no index yet, empty query) come back as text the model can act on.
"""

from __future__ import annotations

from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field

from wardround.tools.evidence import tool_result
from wardround.tools.guidelines.index import GuidelineHit, GuidelineIndex, GuidelineIndexError
from wardround.tools.index_tool import index_tool

PASSAGE_CHARS = 700


class LookupGuidelineArgs(BaseModel):
    query: str = Field(
        min_length=2,
        max_length=300,
        description="What to look up, in plain words, e.g. 'IV potassium maximum rate'",
    )
    k: int = Field(3, ge=1, le=8, description="How many passages to return")
    source: str | None = Field(
        None, description="Only this guideline document (its key, e.g. 'potassium-repletion')"
    )


def render_hits(query: str, hits: list[GuidelineHit], chars: int = PASSAGE_CHARS) -> str:
    if not hits:
        return f"No guideline passage matches {query!r}. Try other words."
    lines = [f"{len(hits)} guideline passage(s) for {query!r}:"]
    for hit in hits:
        head = f"[{hit.ref}] {hit.title} > {hit.section}"
        if hit.citation:
            citation = hit.citation if len(hit.citation) <= 200 else hit.citation[:197] + "..."
            head += f" (source: {citation})"
        text = hit.text if len(hit.text) <= chars else hit.text[: chars - 3].rstrip() + "..."
        lines.extend([head, text])
    return "\n".join(lines)


def make_guideline_tools(index: GuidelineIndex | None) -> list[BaseTool]:
    """[lookup_guideline] over `index` (None: for its schema only); works with `invoke` and
    `ainvoke`."""

    def lookup(args: LookupGuidelineArgs) -> list[GuidelineHit]:
        if index is None:
            raise RuntimeError("lookup_guideline was made without a guideline index")
        return index.search(args.query, args.k, source=args.source)

    def render(args: LookupGuidelineArgs, hits: list[GuidelineHit]) -> tuple[str, list[str]]:
        return tool_result(render_hits(args.query, hits), [h.ref for h in hits])

    description = (
        "Look up clinical guideline recommendations (thresholds, doses, targets, "
        "monitoring intervals, screening). Returns passages with their source; cite "
        "the [guideline:...] ids you use."
    )
    return [
        index_tool(
            "lookup_guideline",
            description,
            LookupGuidelineArgs,
            lookup,
            render,
            known=(GuidelineIndexError,),
            what="guideline lookup",
        )
    ]
