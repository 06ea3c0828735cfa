"""A task's conditional write ("If low, then order ...", "if older than 1 year, order ...")
judged in code.

Asked "is the condition met?", a 1.5B model answers no almost always, whatever the value.
So the model only reads, under a schema, what the condition compares: the value and the
limit (a threshold), or the date of the result and the age limit (an age); code compares,
with "now" from the task's context. A value or date that no tool result holds is sent back
once; still unread, the write is not made (two_step): never a write on a number the chart
does not show.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from wardround.agents.protocol import Dialect, complete_json
from wardround.chart.faithfulness import unsupported

ConditionKind = Literal["threshold", "age"]
# "older than 1 year", "greater than 6 months old", "2 years old": the condition is an age.
_AGE = re.compile(
    r"\b(?:older|more|greater|longer)\s+than\s+(?:\d+(?:\.\d+)?|an?|one)\s+"
    r"(?:day|week|month|year)s?\b|\b(?:\d+(?:\.\d+)?|an?|one)\s+(?:day|week|month|year)s?\s+old\b",
    re.I,
)
UNIT_DAYS = {"days": 1, "weeks": 7, "months": 30, "years": 365}
COMPARISONS = ("below", "at_or_below", "above", "at_or_above")

THRESHOLD_ASK = (
    'Before calling {name}: the task makes it conditional: "{condition}" From the tool '
    "results above, give the value the condition is about (the latest result it means; null "
    "if there is none), the limit the task compares it with (for 'low': the top of the low "
    "range it gives), and on which side of the limit the condition holds. Reply with one "
    "JSON object."
)
AGE_ASK = (
    'Before calling {name}: the task makes it conditional: "{condition}" From the tool '
    "results above, give the date of the result the condition is about (YYYY-MM-DD; null if "
    "there is none) and the age limit the task gives (the number and its unit). Reply with "
    "one JSON object."
)
THRESHOLD_SCHEMA = {
    "type": "object",
    "properties": {
        "value": {"type": ["number", "null"]},
        "limit": {"type": "number"},
        "holds_when": {"type": "string", "enum": list(COMPARISONS)},
    },
    "required": ["value", "limit", "holds_when"],
}
AGE_SCHEMA = {
    "type": "object",
    "properties": {
        "recorded": {"type": ["string", "null"]},
        "limit": {"type": "number"},
        "unit": {"type": "string", "enum": list(UNIT_DAYS)},
    },
    "required": ["recorded", "limit", "unit"],
}


def condition_kind(condition: str) -> ConditionKind:
    return "age" if _AGE.search(condition) else "threshold"


def threshold_holds(reading: dict[str, Any], results: Sequence[str]) -> bool:
    """Whether the value is on the condition's side of the limit; no value: it does not."""
    value = reading.get("value")
    if value is None:
        return False
    if unsupported(f"{value:g}", results):
        raise ValueError(f"{value:g} is in no tool result: give the value a result shows")
    limit, side = float(reading["limit"]), reading["holds_when"]
    return {
        "below": value < limit,
        "at_or_below": value <= limit,
        "above": value > limit,
        "at_or_above": value >= limit,
    }[side]


def age_holds(reading: dict[str, Any], results: Sequence[str], now: datetime) -> bool:
    """Whether the result is older than the limit; no result on file counts as older (the
    write a stale result calls for is the one a missing result calls for)."""
    day = _day(reading.get("recorded"))
    if day is None:
        return True
    if not any(day.isoformat() in text for text in results):  # also inside a timestamp
        raise ValueError(f"{day} is in no tool result: give the date a result shows")
    return (now.date() - day).days > float(reading["limit"]) * UNIT_DAYS[reading["unit"]]


async def condition_holds(
    model: BaseChatModel,
    history: Sequence[BaseMessage],
    results: Sequence[str],
    *,
    condition: str,
    name: str,
    now: datetime,
    dialect: Dialect,
) -> tuple[bool, AIMessage]:
    """One constrained reading of what the condition compares, then code's verdict."""
    kind = condition_kind(condition)
    ask = (AGE_ASK if kind == "age" else THRESHOLD_ASK).format(name=name, condition=condition)
    schema = AGE_SCHEMA if kind == "age" else THRESHOLD_SCHEMA

    def verdict(reading: dict[str, Any]) -> bool:
        if kind == "age":
            return age_holds(reading, results, now)
        return threshold_holds(reading, results)

    return await complete_json(model, [*history, HumanMessage(ask)], schema, verdict, dialect)


def _day(text: object) -> date | None:
    found = re.search(r"\d{4}-\d{2}-\d{2}", str(text or ""))
    return date.fromisoformat(found.group(0)) if found else None
