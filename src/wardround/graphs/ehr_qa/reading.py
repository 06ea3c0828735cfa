"""Answer a planned question by code: fetch exactly the records its kind needs, then compute.

Returns None when code cannot answer (the general path then shows records to the model).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wardround.chart import analyte, kinds, record_kinds, value_kinds
from wardround.chart.dates import Window
from wardround.chart.kinds import Computed, Kind
from wardround.chart.options import LIST_TYPES, Option, whole_type
from wardround.chart.retrieve import (
    ALL,
    asks_disorders,
    current_items,
    disorders,
    fetch,
    ids_of,
    in_year,
    items_since,
)
from wardround.chart.steer import asks_ever, asks_result
from wardround.chart.thresholds import find_threshold
from wardround.fhir.client import FhirClient
from wardround.fhir.manifest import Manifest
from wardround.fhir.records import fetch_records

VALUE_KINDS = frozenset(
    {Kind.LATEST, Kind.ON_DATE, Kind.TREND, Kind.HIGHEST, Kind.LOWEST, Kind.THRESHOLD}
)
FIRST_KINDS = frozenset({Kind.FIRST, Kind.FIRST_DIAGNOSED, Kind.STARTED})
LIST_KINDS = frozenset({Kind.COUNT, Kind.CURRENT, Kind.SINCE})
# "Disorders" asked: SNOMED's findings and situations (social history, "medication review
# due") are not among them.
# A follow-up choice: the question and names -> the name the model picks (None: none).
Choose = Callable[[str, list[str]], Awaitable[str | None]]


@dataclass
class Ask:
    """What some kinds need beyond the plan: the question's words (a limit, a type), the
    manifest (how many records each type holds), a narrow follow-up choice by the model."""

    question: str = ""
    manifest: Manifest | None = None
    choose: Choose | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Done(Computed):
    read: list[str] | None = None  # references of every record the computation looked at


def _done(result: Computed, records: list[dict[str, Any]]) -> Done:
    return Done(result.answer, result.citations, ids_of(records))


async def compute(
    kind: Kind,
    option: Option | None,
    window: Window | None,
    fhir: FhirClient,
    patient_id: str,
    patient: dict[str, Any],
    ask: Ask | None = None,
) -> Done | None:
    ask = ask or Ask()
    if option is not None and not record_kinds.named_type(option.resource_type, ask.question):
        option = None  # "ever diagnosed with epilepsy?" is not about the Episiotomy procedure
    if kind is Kind.EVER:
        return await _ever(option, window, fhir, patient_id, ask)
    if kind is Kind.HAPPENED:
        return await _happened(option, window, fhir, patient_id, ask.question) if window else None
    if kind is Kind.AGE:
        on = window.day if window and not window.year else None
        return _done(kinds.age(patient, on), [patient])
    if kind is Kind.LAST_VISIT:
        encounters = await fetch_records(fhir, patient_id, "Encounter", limit=1)
        return _done(kinds.last_visit(encounters), encounters)
    if option is None:
        return _done(kinds.nothing(), []) if kind is not Kind.OTHER else None
    if (
        kind in VALUE_KINDS
        and option.resource_type != "Observation"
        and (asks_result(ask.question) or not is_named(ask.question, option))
    ):  # "latest magnesium result", "latest eGFR?": not a saline order, not a pill
        return _done(kinds.nothing(), [])
    if kind in VALUE_KINDS:
        return await _values(kind, option, window, fhir, patient_id, ask.question)
    if kind in FIRST_KINDS:
        return await _first(option, fhir, patient_id)
    if kind in LIST_KINDS:
        records = await fetch(fhir, patient_id, option, ALL)
        if option.resource_type == "Condition" and asks_disorders(ask.question):
            records = disorders(records)
        return _done(_listed(kind, option, window, records), records)
    return None


def list_option(kind: Kind, option: Option | None, question: str) -> Option | None:
    """A list question over the type its words name ("which diagnoses since May?" is every
    condition, whatever record the plan chose), or over the chosen record's type when the
    question does not name that record ("which conditions since May?": not just the anxiety
    disorder)."""
    if kind not in LIST_KINDS or option is None:
        return option
    named = record_kinds.types_named(question, tuple(LIST_TYPES))
    if named != tuple(LIST_TYPES) and option.resource_type not in named:
        return whole_type(named[0])
    if not option.code or option.resource_type not in LIST_TYPES:
        return option
    return option if analyte.names(question, option.name) else whole_type(option.resource_type)


def is_named(question: str, option: Option) -> bool:
    """The question names the record (a coded option) or its type (a whole type)."""
    if option.code:
        return analyte.names(question, option.name)
    return record_kinds.names_type(question, option.resource_type)


def named_record(question: str, option: Option, options: list[Option]) -> Option:
    """The chart's result the question names, over a choice whose name (or, for a whole
    type, whose type) the question holds no word of: "how many times has the WBC been
    measured?" planned on all notes, "HDL on 1 Dec 2015" planned on a vaccine."""
    if option.resource_type == "Observation" and option.code:
        return option  # settle_choice checks a result against the question's qualifiers
    if is_named(question, option):
        return option
    results = [
        o for o in options
        if o.resource_type == "Observation" and o.code and analyte.names_result(question, o.name)
        and not analyte.fit(question, o.name).hard
    ]  # fmt: skip
    return max(results, key=lambda o: analyte.named_words(question, o.name)) if results else option


async def _values(
    kind: Kind,
    option: Option,
    window: Window | None,
    fhir: FhirClient,
    patient_id: str,
    question: str,
) -> Done | None:
    if not option.code:  # a whole type has no single value to read
        return None
    limit = find_threshold(question) if kind is Kind.THRESHOLD else None
    if kind is Kind.THRESHOLD and limit is None:
        return None  # no number to compare with: the general path
    records = await fetch(fhir, patient_id, option, ALL)
    values = kinds.readings(records, option.component)
    if records and not values:  # coded, but not numeric (a status, a vaccine, a panel)
        latest = value_kinds.latest_record(records, option.name) if kind is Kind.LATEST else None
        return _done(latest, records) if latest else None
    what, cut = option.name, value_kinds.within(values, window)
    if kind is Kind.LATEST:
        result = kinds.latest(values, what)
    elif kind is Kind.ON_DATE and window is not None:
        result = kinds.on_day(values, what, window.day)
    elif kind in (Kind.HIGHEST, Kind.LOWEST):
        result = value_kinds.extreme(cut, what, kind is Kind.HIGHEST, window)
    elif limit is not None:
        newest_only = window is None and not asks_ever(question)
        result = value_kinds.against(cut, what, limit, window, newest_only)
    else:
        result = kinds.trend(values, what)
    return _done(result, records)


async def _first(option: Option, fhir: FhirClient, patient_id: str) -> Done | None:
    """The earliest value of a test, onset of a condition, or prescription of a medicine."""
    if not option.code:
        return None
    records = await fetch(fhir, patient_id, option, ALL)
    if option.resource_type == "Observation":
        values = kinds.readings(records, option.component)
        if records and not values:
            return None
        return _done(value_kinds.first(values, option.name), records)
    return _done(record_kinds.first_record(records, option.name, option.resource_type), records)


async def _read_types(
    fhir: FhirClient, patient_id: str, types: tuple[str, ...], manifest: Manifest | None
) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """Every record of each type, and whether all were read: no page limit reached, and at
    least as many as the manifest counted."""
    by_type, complete = {}, True
    for rtype in types:
        found = await fetch_records(fhir, patient_id, rtype, limit=ALL)
        counted = manifest.types[rtype].count if manifest and rtype in manifest.types else 0
        complete = complete and len(found) < ALL and len(found) >= counted
        by_type[rtype] = found
    return by_type, complete


async def _ever(
    option: Option | None, window: Window | None, fhir: FhirClient, patient_id: str, ask: Ask
) -> Done:
    """Yes with the records of the chosen code; otherwise read the whole type, let the model
    choose among its names, and say No only when every record of it was read."""
    if option is not None and option.code and not analyte.names(ask.question, option.name):
        # "ever diagnosed with multiple sclerosis?" is not about the charted Chronic pain: the
        # model chooses again among the type's names (or none of them)
        option = Option(label=option.label, resource_type=option.resource_type)
    if option is not None and option.code:
        records = await fetch(fhir, patient_id, option, ALL)
        found = record_kinds.yes(records, option.name, window)
        result = found or record_kinds.no(
            (option.resource_type,), len(records), len(records) < ALL, option.name, window
        )
        return _done(result, records)
    typed = option is not None and option.resource_type in record_kinds.EVER_TYPES
    types = (option.resource_type,) if typed and option else record_kinds.types_named(ask.question)
    by_type, complete = await _read_types(fhir, patient_id, types, ask.manifest)
    records = [r for found in by_type.values() for r in found]
    names = list(dict.fromkeys(record_kinds.name_of(r) for r in records if record_kinds.is_real(r)))
    chosen = await ask.choose(ask.question, names) if ask.choose and names else None
    if chosen:
        same = [r for r in records if record_kinds.name_of(r) == chosen]
        found = record_kinds.yes(same, chosen, window)
        if found:
            return _done(found, records)
        return _done(record_kinds.no(types, len(same), complete, chosen, window), records)
    return _done(record_kinds.no(types, len(records), complete, "", window), records)


async def _happened(
    option: Option | None, window: Window, fhir: FhirClient, patient_id: str, question: str
) -> Done:
    """A day: its visits, diagnoses, procedures and vaccines. A year: the records of what
    the plan chose (a type or a code), or of every event type."""
    if window.year and option is not None and option.resource_type != "Observation":
        records = await fetch(fhir, patient_id, option, ALL)
        return _done(record_kinds.happened_on({option.resource_type: records}, window), records)
    types: tuple[str, ...] = record_kinds.EVENT_TYPES
    if window.year:  # a year holds many visits: only the types the question names
        types = record_kinds.types_named(question, types)
    by_type, _ = await _read_types(fhir, patient_id, types, None)
    records = [r for found in by_type.values() for r in found]
    return _done(record_kinds.happened_on(by_type, window), records)


def _listed(
    kind: Kind, option: Option, window: Window | None, records: list[dict[str, Any]]
) -> Computed:
    what = option.name
    if kind is Kind.COUNT:
        year = window.start.year if window and window.year else None
        return kinds.count(in_year(records, year) if year else records, what, year)
    if kind is Kind.CURRENT:
        none = "None: no current records of this kind are recorded for this patient."
        return kinds.item_list(current_items(records), none)
    assert window is not None  # SINCE without a day was routed to the general path
    since = window.day.isoformat()
    none = f"None: nothing of this kind is recorded on or after {since}."
    return kinds.item_list(items_since(records, window.day), none)
