"""What a question asks, as a choice among kinds, and the code that answers each kind.

The model decides *what* is asked (a kind and which records); code does what code is good
at: picking the newest record, matching a day, counting, comparing two values, filtering
current items, and the age arithmetic. Each answer names the records it rests on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from wardround.fhir.fields import age_on, concept_text, reference_of, resource_date
from wardround.fhir.render import quantity_text


class Kind(StrEnum):
    # Names in plain words: a small model maps a question to the name that reads like it.
    LATEST = "latest_value"
    ON_DATE = "value_on_date"
    TREND = "trend"
    COUNT = "how_many"
    CURRENT = "list_current"
    SINCE = "list_since_date"
    AGE = "age"
    LAST_VISIT = "last_visit"
    HIGHEST = "highest_value"
    LOWEST = "lowest_value"
    FIRST = "first_value"
    FIRST_DIAGNOSED = "first_diagnosed"
    STARTED = "medication_started"
    EVER = "ever_had"
    THRESHOLD = "above_or_below"
    HAPPENED = "what_happened"
    OTHER = "other"


# What the model reads when it chooses a kind (prompts.PLAN_SYSTEM lists them in this order).
KIND_HELP: dict[Kind, str] = {
    Kind.LATEST: "the most recent value or status of one test, measurement or record (e.g. "
    "potassium, smoking status, the last flu shot; no date named)",
    Kind.ON_DATE: "the value of one test or measurement on a date the question names",
    Kind.TREND: "whether a result went up or down between its last two measurements",
    Kind.COUNT: "how many records of something there are (optionally in a year)",
    Kind.CURRENT: "which items are current or active now (medications, allergies, problems)",
    Kind.SINCE: "which items started on or after a given date (e.g. diagnoses since)",
    Kind.AGE: "the patient's age, now or on a given date",
    Kind.LAST_VISIT: "the date of the most recent encounter or visit",
    Kind.HIGHEST: "the highest (maximum, peak) value of one test, ever or in a year named",
    Kind.LOWEST: "the lowest (minimum) value of one test, ever or in a year named",
    Kind.FIRST: "the first (earliest) value of one test or measurement",
    Kind.FIRST_DIAGNOSED: "when a condition was first diagnosed (its earliest onset)",
    Kind.STARTED: "when a medication was started (its first prescription)",
    Kind.EVER: "yes or no: whether the patient ever had a condition, procedure, vaccine or "
    "medication (optionally in a year named)",
    Kind.THRESHOLD: "yes or no: whether a value was above or below a number the question "
    "names (optionally in a year named)",
    Kind.HAPPENED: "what happened on a date or in a year named: visits and their reasons, "
    "diagnoses, procedures, vaccines",
    Kind.OTHER: "anything else",
}
# Kinds that need a day in the question; without one they go to the general path.
NEEDS_DAY = frozenset({Kind.ON_DATE, Kind.SINCE})
# A kind that takes no date, asked with one day named, is its dated sibling: "what was the
# potassium on 3 May 2021" is not about the latest potassium, whatever the plan says.
DATED = {Kind.LATEST: Kind.ON_DATE, Kind.CURRENT: Kind.SINCE}


def with_day(kind: Kind, has_day: bool) -> Kind:
    """The kind to answer, given whether the question names one day."""
    if has_day:
        return DATED.get(kind, kind)
    return Kind.OTHER if kind in NEEDS_DAY else kind


@dataclass(frozen=True)
class Reading:
    """One numeric value of a result, with the record it comes from."""

    day: str  # YYYY-MM-DD
    at: str  # the full dateTime, for ordering
    value: float
    unit: str
    ref: str

    @property
    def text(self) -> str:
        return f"{quantity_text({'value': self.value, 'unit': self.unit})} on {self.day}"


@dataclass
class Computed:
    """An answer computed by code, and the references of the records it rests on."""

    answer: str
    citations: list[str] = field(default_factory=list)


def readings(resources: Sequence[dict[str, Any]], component: str | None = None) -> list[Reading]:
    """Numeric values, newest first; `component` reads that component's code (e.g. systolic
    pressure inside a blood pressure panel) instead of the record's own value."""
    out = []
    for r in resources:
        holder = _component(r, component) if component else r
        q = (holder or {}).get("valueQuantity") or {}
        day = resource_date(r)
        if isinstance(q.get("value"), int | float) and day:
            at = str(r.get("effectiveDateTime") or day)
            unit = str(q.get("unit") or q.get("code") or "")
            out.append(Reading(day, at, float(q["value"]), unit, reference_of(r)))
    # Equal times: the larger reference first, a fixed rule so reruns cite the same record.
    return sorted(out, key=lambda x: (x.at, x.ref), reverse=True)


def _component(resource: dict[str, Any], code: str) -> dict[str, Any] | None:
    for comp in resource.get("component") or []:
        if any(c.get("code") == code for c in (comp.get("code") or {}).get("coding") or []):
            return comp
    return None


def latest(values: list[Reading], what: str) -> Computed:
    if not values:
        return nothing()
    return Computed(f"{values[0].text}.", [values[0].ref])


def on_day(values: list[Reading], what: str, day: date) -> Computed:
    same = [v for v in values if v.day == day.isoformat()]
    if not same:
        return Computed(f"No {what} result is recorded on that day ({day.isoformat()}).")
    shown = "; ".join(v.text for v in same)
    return Computed(f"{shown}.", [v.ref for v in same])


def trend(values: list[Reading], what: str) -> Computed:
    if len(values) < 2:
        return Computed(f"There are fewer than two {what} results, so there is no trend.")
    new, old = values[0], values[1]
    word = "increased" if new.value > old.value else "decreased" if new.value < old.value else None
    change = f"{word.capitalize()}" if word else "Stayed the same"
    return Computed(f"{change}: from {old.text} to {new.text}.", [old.ref, new.ref])


def count(resources: Sequence[dict[str, Any]], what: str, year: int | None = None) -> Computed:
    days = sorted(d for r in resources if (d := resource_date(r)))
    where = f" in {year}" if year else ""
    if not resources:
        return Computed(f"No {what} records are recorded{where}.")
    span = f" ({days[0]} to {days[-1]})" if days else ""
    return Computed(f"{len(resources)} {what} records{where}{span}.", _refs(resources))


def item_list(names_refs: list[tuple[str, str]], none: str) -> Computed:
    """The distinct names; `none` is the answer when there are none."""
    names = list(dict.fromkeys(name for name, _ in names_refs))
    if not names:
        return Computed(none)
    return Computed(f"{'; '.join(names)}.", list(dict.fromkeys(ref for _, ref in names_refs)))


def age(patient: dict[str, Any], on: date | None) -> Computed:
    born = _iso_day(patient.get("birthDate"))
    if born is None:
        return Computed("The patient's birth date is not recorded.")
    died = _iso_day(str(patient.get("deceasedDateTime") or "")[:10])
    day = on or died or date.today()
    if day < born:
        return Computed(f"The patient was not yet born on {day.isoformat()}.")
    years = age_on(born, day)
    return Computed(
        f"{years} years old on {day.isoformat()} (born {born.isoformat()}).",
        [reference_of(patient)],
    )


def last_visit(encounters: Sequence[dict[str, Any]]) -> Computed:
    dated = [(d, r) for r in encounters if (d := resource_date(r))]
    if not dated:
        return Computed("No encounters are recorded for this patient.")
    day, encounter = max(dated, key=lambda pair: pair[0])
    kind = concept_text((encounter.get("type") or [None])[0]) or "encounter"
    return Computed(f"{day} ({kind}).", [reference_of(encounter)])


def nothing() -> Computed:
    return Computed("Nothing is recorded in this patient's chart that answers this question.")


def _iso_day(text: Any) -> date | None:
    try:
        return date.fromisoformat(str(text)[:10]) if text else None
    except ValueError:
        return None


def _refs(resources: Sequence[dict[str, Any]]) -> list[str]:
    return [reference_of(r) for r in resources]
