"""Answer a planned question by code: fetch exactly the records its kind needs, then compute.

Returns None when code cannot answer (the general path then shows records to the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wardround.fhir.client import FhirClient
from wardround.fhir.records import fetch_records
from wardround.graphs.ehr_qa import kinds
from wardround.graphs.ehr_qa.dates import Window
from wardround.graphs.ehr_qa.kinds import Computed, Kind
from wardround.graphs.ehr_qa.options import Option
from wardround.graphs.ehr_qa.retrieve import ALL, current_items, fetch, ids_of, in_year, items_since

VALUE_KINDS = frozenset({Kind.LATEST, Kind.ON_DATE, Kind.TREND})


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
) -> Done | None:
    if kind is Kind.AGE:
        on = window.day if window and not window.year else None
        return _done(kinds.age(patient, on), [patient])
    if kind is Kind.LAST_VISIT:
        encounters = await fetch_records(fhir, patient_id, "Encounter", limit=1)
        return _done(kinds.last_visit(encounters), encounters)
    if option is None:
        return _done(kinds.nothing(), []) if kind is not Kind.OTHER else None
    if kind in VALUE_KINDS:
        return await _values(kind, option, window, fhir, patient_id)
    if kind in (Kind.COUNT, Kind.CURRENT, Kind.SINCE):
        records = await fetch(fhir, patient_id, option, ALL)
        return _done(_listed(kind, option, window, records), records)
    return None


async def _values(
    kind: Kind, option: Option, window: Window | None, fhir: FhirClient, patient_id: str
) -> Done | None:
    if not option.code:  # a whole type has no single value to read
        return None
    records = await fetch(fhir, patient_id, option, ALL)
    values = kinds.readings(records, option.component)
    if records and not values:  # coded, but not numeric (a text result, a panel)
        return None
    if kind is Kind.LATEST:
        result = kinds.latest(values, option.name)
    elif kind is Kind.ON_DATE and window is not None:
        result = kinds.on_day(values, option.name, window.day)
    else:
        result = kinds.trend(values, option.name)
    return _done(result, records)


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
