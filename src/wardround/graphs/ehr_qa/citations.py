"""Answers may cite only records the graph retrieved; anything else is dropped and flagged."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field


class CitedAnswer(BaseModel):
    """The final answer object the model must produce."""

    answer: str = Field(description="the answer to the question, short, with values and dates")
    citations: list[str] = Field(
        default_factory=list, description="references of the records the answer rests on"
    )


def check_citations(cited: Iterable[str], retrieved: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split cited references into (kept: retrieved ones, in order; flagged: the rest)."""
    allowed = set(retrieved)
    kept: list[str] = []
    flagged: list[str] = []
    for ref in dict.fromkeys(str(c).strip() for c in cited):
        (kept if ref in allowed else flagged).append(ref)
    return kept, flagged
