"""Shift the dates in a text by whole days, keeping the way each one is written.

Used by the pseudonymiser (agents/phi.py): a per-patient offset hides when things happened
while keeping every interval between them. ISO dates (and the date of a FHIR dateTime),
ISO year-months (shifted by whole months), US M/D/YYYY, and written dates ("May 1, 2023",
"1 May 2023", "Sept. 3rd 2021") are shifted; bare years are not (too easily a number).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta

_MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]  # fmt: skip
_MONTH = r"(Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
_ORD = r"(st|nd|rd|th)?"

ISO = re.compile(r"(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?!\d)")
YEAR_MONTH = re.compile(r"(?<![\d-])(\d{4})-(\d{2})(?![\d-])")
US = re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})/(\d{4})(?![\d/])")
MDY = re.compile(rf"\b{_MONTH}(\.?\s+)(\d{{1,2}}){_ORD}(,?\s+)(\d{{4}})\b", re.I)
DMY = re.compile(rf"\b(\d{{1,2}}){_ORD}(\s+){_MONTH}(\.?,?\s+)(\d{{4}})\b", re.I)
PATTERNS = (ISO, YEAR_MONTH, US, MDY, DMY)
DAYS_PER_MONTH = 30.4375


def _valid(year: int, month: int, day: int) -> date | None:
    if not 1800 <= year <= 2200:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _month_name(written: str, month: int) -> str:
    """`month`'s name in the style of `written` (full or abbreviated, its case)."""
    full = _MONTHS[month - 1]
    name = full if written.lower() in _MONTHS else full[:3]  # "Sept" comes back as "Sep"
    if written.isupper() and len(written) > 1:
        return name.upper()
    return name.capitalize() if written[:1].isupper() else name


def _ordinal(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _month_of(written: str) -> int:
    head = written.lower()[:3]
    return next(i for i, name in enumerate(_MONTHS, start=1) if name.startswith(head))


def _iso(m: re.Match[str], days: int) -> str | None:
    found = _valid(int(m[1]), int(m[2]), int(m[3]))
    return (found + timedelta(days=days)).isoformat() if found else None


def _year_month(m: re.Match[str], days: int) -> str | None:
    year, month = int(m[1]), int(m[2])
    if not (1 <= month <= 12 and _valid(year, month, 1)):
        return None
    total = year * 12 + month - 1 + round(days / DAYS_PER_MONTH)
    return f"{total // 12:04d}-{total % 12 + 1:02d}"


def _us(m: re.Match[str], days: int) -> str | None:
    found = _valid(int(m[3]), int(m[1]), int(m[2]))
    if found is None:
        return None
    new = found + timedelta(days=days)
    month = f"{new.month:02d}" if len(m[1]) == 2 else str(new.month)
    day = f"{new.day:02d}" if len(m[2]) == 2 else str(new.day)
    return f"{month}/{day}/{new.year}"


def _mdy(m: re.Match[str], days: int) -> str | None:
    found = _valid(int(m[6]), _month_of(m[1]), int(m[3]))
    if found is None:
        return None
    new = found + timedelta(days=days)
    suffix = _ordinal(new.day) if m[4] else ""
    return f"{_month_name(m[1], new.month)}{m[2]}{new.day}{suffix}{m[5]}{new.year}"


def _dmy(m: re.Match[str], days: int) -> str | None:
    found = _valid(int(m[6]), _month_of(m[4]), int(m[1]))
    if found is None:
        return None
    new = found + timedelta(days=days)
    suffix = _ordinal(new.day) if m[2] else ""
    return f"{new.day}{suffix}{m[3]}{_month_name(m[4], new.month)}{m[5]}{new.year}"


SHIFTERS: dict[re.Pattern[str], Callable[[re.Match[str], int], str | None]] = {
    ISO: _iso, YEAR_MONTH: _year_month, US: _us, MDY: _mdy, DMY: _dmy,
}  # fmt: skip


def date_spans(text: str, days: int) -> list[tuple[int, int, str]]:
    """(start, end, shifted) for every date in `text`; overlapping finds are resolved by the
    caller (the longest wins)."""
    spans = []
    for pattern, shift in SHIFTERS.items():
        for m in pattern.finditer(text):
            new = shift(m, days)
            if new is not None:
                spans.append((m.start(), m.end(), new))
    return spans


Span = tuple[int, int, str, str]  # start, end, replacement, kind


def apply_spans(text: str, spans: list[Span]) -> tuple[str, dict[str, int]]:
    """`text` with the spans replaced (earliest first, the longer of two overlapping ones),
    and how many of each kind were replaced."""
    out, counts, at = [], dict[str, int](), 0
    for start, end, new, kind in sorted(spans, key=lambda s: (s[0], s[0] - s[1])):
        if start < at:
            continue  # overlaps one already taken
        out += [text[at:start], new]
        counts[kind] = counts.get(kind, 0) + 1
        at = end
    out.append(text[at:])
    return "".join(out), counts


def shift_dates(text: str, days: int) -> str:
    """`text` with every date moved by `days` (negative: back)."""
    return apply_spans(text, [(s, e, new, "date") for s, e, new in date_spans(text, days)])[0]
