"""Dates a clinician writes in a question, read by code so the model never has to copy one.

ISO dates (2023-04-05), written-out dates (April 5, 2023; 5 Apr 2023), US numeric dates
(04/05/2023) and bare years ("in 2023", "during 2021") become a `Window` of days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_MONTHS = {
    name: n
    for n, names in enumerate(
        [
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
            ("may",), ("june", "jun"), ("july", "jul"), ("august", "aug"),
            ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}  # fmt: skip
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_PATTERNS = [
    re.compile(r"\b(?P<year>\d{4})-(?P<mnum>\d{1,2})-(?P<day>\d{1,2})\b"),
    re.compile(rf"\b{_MONTH}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<year>\d{{4}})\b", re.I),
    re.compile(
        rf"\b(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+(?P<year>\d{{4}})\b", re.I
    ),
    re.compile(r"\b(?P<mnum>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})\b"),
]
_YEAR = re.compile(
    r"\b(?:in|during|for|of|throughout)\s+(?:the\s+year\s+)?(?P<year>(?:19|20)\d{2})\b", re.I
)
# A year a terse question starts with: "2019 - which shots did she get?".
_LEADING_YEAR = re.compile(r"^\s*(?P<year>(?:19|20)\d{2})(?![\d/.-]\d)\b")


@dataclass(frozen=True)
class Window:
    """Inclusive days; `start == end` for one day. `year` says the question named a year."""

    start: date
    end: date
    year: bool = False

    @property
    def day(self) -> date:
        return self.start


def _to_date(match: re.Match[str]) -> date | None:
    parts = match.groupdict()
    month = int(parts["mnum"]) if parts.get("mnum") else _MONTHS[parts["month"].lower()]
    try:
        return date(int(parts["year"]), month, int(parts["day"]))
    except ValueError:
        return None


def find_day(text: str) -> date | None:
    """The first calendar day written in `text`, in any of the supported forms."""
    found: list[tuple[int, date]] = []
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            day = _to_date(match)
            if day is not None:
                found.append((match.start(), day))
    return min(found)[1] if found else None


def find_window(text: str) -> Window | None:
    """A day if the question names one, else a whole year if it names one, else None."""
    day = find_day(text)
    if day is not None:
        return Window(day, day)
    year = _YEAR.search(text) or _LEADING_YEAR.search(text)
    if year:
        y = int(year.group("year"))
        return Window(date(y, 1, 1), date(y, 12, 31), year=True)
    return None


def without_dates(text: str) -> str:
    """`text` with its dates and named years blanked, so their digits read as no number."""
    for pattern in (*_PATTERNS, _YEAR, _LEADING_YEAR):
        text = pattern.sub(" ", text)
    return text
