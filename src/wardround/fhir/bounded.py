"""Bounded reads: what a capped read returns, and how a partial read is made known.

Every read the client makes is bounded: pages of `page_size` records (`_count`), at most
`max_records` records per read, response bodies of at most `max_body_bytes`. A read that
stops at a cap while the server had more returns a `Records` list with `truncated` set,
logs a warning and notes it with `note_partial`, so a caller that watches (`watch_partial`,
e.g. the planner for one question) can say "not all records were read" instead of
answering from part of the chart as if it were all of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["ReadState", "Records", "note_partial", "watch_partial"]

log = logging.getLogger(__name__)


class Records(list[dict[str, Any]]):
    """The resources of one read; `truncated` says the server had more than were returned
    (a cap was reached: `why` says which), so counts over them are lower bounds."""

    truncated: bool = False
    why: str | None = None

    def __init__(
        self,
        items: Iterable[dict[str, Any]] = (),
        *,
        truncated: bool = False,
        why: str | None = None,
    ):
        super().__init__(items)
        self.truncated = truncated
        self.why = why


@dataclass
class ReadState:
    """How a streamed read went: records seen, whether it stopped at a cap (and why), and
    whether `$everything` was replaced by per-type searches."""

    records: int = 0
    pages: int = 0
    truncated: bool = False
    why: str | None = None
    fell_back: bool = False

    def stop(self, why: str) -> None:
        self.truncated, self.why = True, why
        note_partial(why)


_PARTIAL: ContextVar[list[str] | None] = ContextVar("wardround_partial_reads", default=None)


@contextmanager
def watch_partial() -> Iterator[list[str]]:
    """Collect, in a list, what each read capped within this block (and the tasks it starts)."""
    notes: list[str] = []
    token = _PARTIAL.set(notes)
    try:
        yield notes
    finally:
        _PARTIAL.reset(token)


def note_partial(why: str) -> None:
    """Log a capped read and add it to the watching block's list, if any."""
    log.warning("partial read: %s", why)
    notes = _PARTIAL.get()
    if notes is not None and why not in notes:
        notes.append(why)
