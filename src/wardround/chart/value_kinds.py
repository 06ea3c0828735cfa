"""Answers over one test's values beyond the latest: extremes, the first, a limit, a status.

Every function takes readings newest first (`kinds.readings`) already cut to the question's
window, and cites the reading that decides the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
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


def against(
    values: list[Reading], what: str, limit: Threshold, window: Window | None,
    latest: bool = False,
) -> Computed:  # fmt: skip
    """Yes with the most extreme value past the limit, or No with the closest one to it;
    `latest` judges only the newest value ("is it above 140 now?")."""
    if not values:
        return Computed(f"No: no {what} result is recorded{where(window)}.")
    if latest:
        values = values[:1]
    pick = max if limit.above else min
    best = pick(values, key=lambda v: v.value)
    if limit.met(best.value):
        count = sum(limit.met(v.value) for v in values)
        of = f"the latest {what} result" if latest else (
            f"{count} of {len(values)} {what} results{where(window)}"
        )  # fmt: skip
        return Computed(f"Yes: {best.text} was {limit.words} ({of}).", [best.ref])
    word = "latest" if latest else "highest" if limit.above else "lowest"
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


def nearest(values: list[Reading], what: str, day: date) -> Computed:
    """The values on `day`; without one, the nearest before and after it."""
    same = [v for v in values if v.day == day.isoformat()]
    if same:
        return Computed(f"{'; '.join(v.text for v in same)}.", [v.ref for v in same])
    before = next((v for v in values if v.day < day.isoformat()), None)  # newest first
    after = next((v for v in reversed(values) if v.day > day.isoformat()), None)
    if before is None and after is None:
        return Computed(f"No {what} result is recorded.")
    near = [f"before: {v.text}" if v is before else f"after: {v.text}"
            for v in (before, after) if v is not None]  # fmt: skip
    return Computed(
        f"No {what} result on {day.isoformat()}; nearest {', '.join(near)}.",
        [v.ref for v in (before, after) if v is not None],
    )


def summary(values: list[Reading], what: str, span: str) -> Computed:
    """Count, minimum, maximum, mean, first and latest of the values (newest first)."""
    if not values:
        return Computed(f"No {what} result is recorded{span}.")
    low = min(values, key=lambda v: v.value)
    high = max(values, key=lambda v: v.value)
    mean = sum(v.value for v in values) / len(values)
    unit = f" {values[0].unit}" if values[0].unit else ""
    text = (
        f"{len(values)} {what} result{'s' * (len(values) > 1)}{span}: min {low.text}, "
        f"max {high.text}, mean {mean:.4g}{unit}; first {values[-1].text}, latest "
        f"{values[0].text}."
    )
    refs = [values[0].ref, values[-1].ref, low.ref, high.ref]
    return Computed(text, list(dict.fromkeys(refs)))
