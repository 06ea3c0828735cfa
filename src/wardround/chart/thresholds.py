"""A limit a question compares a value with ("above 200", "under 7.5%"), read by code.

The model never copies the number: it only says the question is about a limit; the number
and its direction come from the question's own words, dates taken out first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wardround.chart.dates import without_dates

_ABOVE = r"above|over|greater than|more than|higher than|exceed(?:ed|s|ing)?|>=?|≥|at least"
_BELOW = r"below|under|less than|lower than|<=?|≤|at most"
_LIMIT = re.compile(
    rf"(?P<word>{_ABOVE}|{_BELOW})\s*(?:a value of\s+|the value\s+)?(?P<num>\d+(?:\.\d+)?)",
    re.I,
)
_INCLUSIVE = {"at least", ">=", "≥", "at most", "<=", "≤"}


@dataclass(frozen=True)
class Threshold:
    above: bool  # True: the question asks about values above the limit
    limit: float
    inclusive: bool = False

    def met(self, value: float) -> bool:
        if self.inclusive:
            return value >= self.limit if self.above else value <= self.limit
        return value > self.limit if self.above else value < self.limit

    @property
    def words(self) -> str:
        side = "above" if self.above else "below"
        shown = f"{self.limit:g}"
        return (
            f"at least {shown}"
            if self.inclusive and self.above
            else (f"at most {shown}" if self.inclusive else f"{side} {shown}")
        )


def find_threshold(question: str) -> Threshold | None:
    """The first comparison with a number in `question`, ignoring numbers inside dates."""
    found = _LIMIT.search(without_dates(question))
    if not found:
        return None
    word = found.group("word").lower()
    above = re.fullmatch(_ABOVE, word, re.I) is not None
    return Threshold(above, float(found.group("num")), word in _INCLUSIVE)
