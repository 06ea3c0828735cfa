"""Answers over one test's values beyond the latest: extremes, the first, a limit, a status.

Every function takes readings newest first (`kinds.readings`) already cut to the question's
window, and cites the reading that decides the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wardround.chart.dates import Window
from wardround.chart.kinds import Computed, Reading
from wardround.chart.thresholds import Threshold
from wardround.fhir.fields import concept_text, reference_of, resource_date


def within(values: list[Reading], window: Window | None) -> list[Reading]:
    if window is None:
        return values
    start, end = window.start.isoformat(), window.end.isoformat()
    return [v for v in values if start <= v.day <= end]


def where(window: Window | None) -> str:
    """` in 2021`, ` on 2021-03-04`, or nothing."""
    if window is None:
        return ""
    return f" in {window.start.year}" if window.year else f" on {window.day.isoformat()}"


def extreme(values: list[Reading], what: str, highest: bool, window: Window | None) -> Computed:
    if not values:
        return Computed(f"No {what} result is recorded{where(window)}.")
    pick = max if highest else min
    best = pick(values, key=lambda v: v.value)  # ties: the newest (values are newest first)
    word = "highest" if highest else "lowest"
    return Computed(
        f"{best.text} (the {word} of {len(values)} {what} results{where(window)}).", [best.ref]
    )


def first(values: list[Reading], what: str) -> Computed:
    if not values:
        return Computed(f"No {what} result is recorded.")
    oldest = values[-1]
    return Computed(f"{oldest.text} (the first {what} result).", [oldest.ref])


def against(values: list[Reading], what: str, limit: Threshold, window: Window | None) -> Computed:
    """Yes with the most extreme value past the limit, or No with the closest one to it."""
    if not values:
        return Computed(f"No: no {what} result is recorded{where(window)}.")
    pick = max if limit.above else min
    best = pick(values, key=lambda v: v.value)
    if limit.met(best.value):
        count = sum(limit.met(v.value) for v in values)
        return Computed(
            f"Yes: {best.text} was {limit.words} ({count} of {len(values)} {what} results"
            f"{where(window)}).",
            [best.ref],
        )
    word = "highest" if limit.above else "lowest"
    return Computed(
        f"No: the {word} {what}{where(window)} was {best.text}, not {limit.words}.", [best.ref]
    )


def value_text(resource: dict[str, Any]) -> str | None:
    """A non-numeric result's value: a coded answer, text, or yes/no."""
    if "valueCodeableConcept" in resource:
        return concept_text(resource["valueCodeableConcept"])
    if isinstance(resource.get("valueString"), str):
        return resource["valueString"].strip() or None
    if isinstance(resource.get("valueBoolean"), bool):
        return "yes" if resource["valueBoolean"] else "no"
    return None


def latest_record(records: Sequence[dict[str, Any]], what: str) -> Computed | None:
    """The newest of records without numbers: a status (smoking) or a dated event (a vaccine).

    Returns None when the newest record has neither a value nor a date to report.
    """
    dated = [(d, r) for r in records if (d := resource_date(r))]
    if not dated:
        return None
    day, newest = max(dated, key=lambda pair: pair[0])
    if newest.get("resourceType") == "Observation":
        shown = value_text(newest)
        if shown is None:
            return None
        return Computed(f"{shown} on {day}.", [reference_of(newest)])
    return Computed(f"{day} ({what}).", [reference_of(newest)])
