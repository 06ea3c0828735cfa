"""Is every number and date in an answer found in the records it cites?

A small model can cite the right record and still write a value from the wrong line. Each
number and date the answer writes must appear in the cited records (or in the question);
anything else is reported, so the graph repairs the answer once and then flags it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")


def _number_forms(text: str) -> set[str]:
    """Numbers in `text` in a canonical form (5.50 and 5.5 match; 5 and 5.0 match)."""
    forms = set()
    for raw in _NUMBER.findall(_DATE.sub(" ", text)):
        value = float(raw)
        forms.add(f"{value:g}" if abs(value) < 1e15 else raw)
    return forms


def unsupported(answer: str, evidence: Iterable[str]) -> list[str]:
    """Numbers and dates written in `answer` that none of the `evidence` texts contain."""
    source = "\n".join(evidence)
    dates = set(_DATE.findall(source))
    numbers = _number_forms(source) | {
        d for day in dates for d in _number_forms(day.replace("-", " "))
    }
    missing = [d for d in _DATE.findall(answer) if d not in dates]
    missing += [n for n in sorted(_number_forms(answer)) if n not in numbers]
    return list(dict.fromkeys(missing))
