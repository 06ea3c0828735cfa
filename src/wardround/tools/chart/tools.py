"""The chart tools: what a clinician asks of a chart, answered by the planner's own code.

Each tool resolves its test or item to the planner's `Option`, fetches exactly those
records, hides those dated after the view's "now", and computes the answer with the
`wardround.chart` functions the planner uses. A result is one or two lines the model can
copy from, ending with the references of the records it rests on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel

from wardround.chart import kinds, record_kinds, value_kinds
from wardround.chart.dates import Window
from wardround.chart.kinds import Computed, Kind
from wardround.chart.options import NOT_IN_CHART, Option
from wardround.chart.retrieve import ALL, current_items, disorders, fetch, items_since
from wardround.chart.view import ChartView, as_of, aware
from wardround.fhir.client import FhirClient
from wardround.fhir.manifest import build_manifest
from wardround.fhir.records import fetch_records
from wardround.tools.chart.args import (
    DATED_LISTS,
    EVER_TYPES,
    arg_models,
    item_options,
    test_options,
)
from wardround.tools.evidence import tool_result
from wardround.tools.fhir.tools import ToolOutput, checked_tool

__all__ = ["CHART_TOOLS", "ChartToolScope", "make_chart_tools"]

EARLIEST = date(1900, 1, 1)
SHOWN_NAMES = 15  # names listed when a string argument matches none


@dataclass
class ChartToolScope:
    """What the chart tools run against: the client, the patient, the chart as of "now"
    (without a view, the manifest is read on first use and nothing is hidden)."""

    fhir: FhirClient
    patient_id: str
    view: ChartView | None = None

    @property
    def now(self) -> datetime | None:
        return self.view.now if self.view else None

    @property
    def today(self) -> date | None:
        return aware(self.now).date() if self.now else None

    async def options(self) -> list[Option]:
        if self.view is None:  # the chart as it stands, read once
            self.view = ChartView(await build_manifest(self.fhir, self.patient_id), None)
        return self.view.options()

    async def records(self, option: Option) -> list[dict[str, Any]]:
        return as_of(await fetch(self.fhir, self.patient_id, option, ALL), self.now)

    async def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        found = await fetch_records(self.fhir, self.patient_id, resource_type, limit=ALL)
        return as_of(found, self.now)


def _result(done: Computed, extra: str = "") -> ToolOutput:
    refs = f"\nRecords: {', '.join(done.citations)}" if done.citations else ""
    return tool_result(f"{done.answer}{extra}{refs}", done.citations)


async def _resolve(named: dict[str, Option], value: str, what: str) -> Option | None:
    """The option a name picks; None for "not recorded". A name the chart lacks is an error
    that lists the chart's names (string arguments only: enums cannot miss)."""
    if value == NOT_IN_CHART:
        return None
    lowered = {k.lower(): o for k, o in named.items()}
    found = named.get(value) or lowered.get(value.strip().lower())
    if found is None:
        shown = "; ".join(list(named)[:SHOWN_NAMES]) or "none"
        raise ValueError(f"no {what} named {value!r} in this chart; it holds: {shown}")
    return found


async def _test(scope: ChartToolScope, name: str) -> Option | None:
    return await _resolve(test_options(await scope.options()), name, "test")


def _not_recorded(name: str) -> ToolOutput:
    return tool_result(f"Not recorded: this chart holds no {name or 'such'} result.")


async def latest_value(scope: ChartToolScope, args: Any) -> ToolOutput:
    option = await _test(scope, args.test)
    if option is None:
        return _not_recorded("")
    records = await scope.records(option)
    values = kinds.readings(records, option.component)
    if records and not values:  # a status or an event: its newest record
        done = value_kinds.latest_record(records, option.name)
        return _result(done) if done else _not_recorded(option.name)
    done = kinds.latest(values, option.name)
    if len(values) < 2:
        return _result(done)
    word = kinds.trend(values, option.name).answer.split(":")[0].lower()
    before = Computed(f"{done.answer} Before it: {values[1].text} ({word}).",
                      [values[0].ref, values[1].ref])  # fmt: skip
    return _result(before)


async def value_on_date(scope: ChartToolScope, args: Any) -> ToolOutput:
    option = await _test(scope, args.test)
    if option is None:
        return _not_recorded("")
    values = kinds.readings(await scope.records(option), option.component)
    return _result(value_kinds.nearest(values, option.name, args.date))


def _span(start: date | None, end: date | None) -> str:
    if start and end:
        return f" from {start.isoformat()} to {end.isoformat()}"
    return f" since {start.isoformat()}" if start else (f" up to {end.isoformat()}" if end else "")


async def values_in_window(scope: ChartToolScope, args: Any) -> ToolOutput:
    option = await _test(scope, args.test)
    if option is None:
        return _not_recorded("")
    values = kinds.readings(await scope.records(option), option.component)
    end = args.date_to or scope.today or date.max
    cut = value_kinds.within(values, Window(args.date_from or EARLIEST, end))
    return _result(value_kinds.summary(cut, option.name, _span(args.date_from, args.date_to)))


async def current_list(scope: ChartToolScope, args: Any) -> ToolOutput:
    records = await _listed(scope, args.items)
    none = f"None: no current {args.items} are recorded for this patient."
    return _result(kinds.item_list(current_items(records), none))


async def items_since_date(scope: ChartToolScope, args: Any) -> ToolOutput:
    records = await _listed(scope, args.items)
    none = f"None: no {args.items} are recorded on or after {args.date.isoformat()}."
    return _result(kinds.item_list(items_since(records, args.date), none))


async def _listed(scope: ChartToolScope, items: str) -> list[dict[str, Any]]:
    records = await scope.of_type(DATED_LISTS[items])
    return disorders(records) if items == "disorders" else records


async def ever_had(scope: ChartToolScope, args: Any) -> ToolOutput:
    option = await _resolve(item_options(await scope.options()), args.item, "item")
    if option is not None:
        records = await scope.records(option)
        found = record_kinds.yes(records, option.name, None)
        first = record_kinds.first_record(records, option.name, option.resource_type)
        if found:
            return _result(Computed(f"{found.answer} {first.answer}", found.citations))
        return _result(record_kinds.no((option.resource_type,), len(records), True, option.name, None))  # fmt: skip
    read = [r for t in EVER_TYPES for r in await scope.of_type(t)]
    return _result(record_kinds.no(EVER_TYPES, len(read), len(read) < ALL, "", None))


async def age(scope: ChartToolScope, args: Any) -> ToolOutput:
    patient = await scope.fhir.read(f"Patient/{scope.patient_id}")
    return _result(kinds.age(patient, args.on or scope.today))


async def last_visit(scope: ChartToolScope, args: Any) -> ToolOutput:
    return _result(kinds.last_visit(await scope.of_type("Encounter")))


async def count_records(scope: ChartToolScope, args: Any) -> ToolOutput:
    records = await scope.of_type(args.record_type)
    start, end = args.date_from or EARLIEST, args.date_to or date.max
    cut = record_kinds.in_window(records, Window(start, end))
    done = kinds.count(cut, args.record_type)
    return _result(Computed(done.answer.rstrip(".") + f"{_span(args.date_from, args.date_to)}.",
                            done.citations[:10]))  # fmt: skip


Run = Callable[[ChartToolScope, Any], Awaitable[ToolOutput]]
# name -> (description, run); the argument models come from args.arg_models.
CHART_TOOLS: dict[str, tuple[str, Run]] = {
    "latest_value": (
        "The patient's most recent value of one test or measurement, and the one before it.",
        latest_value,
    ),
    "value_on_date": (
        "One test's value on a day; if none that day, the nearest before and after.",
        value_on_date,
    ),
    "values_in_window": (
        "Count, min, max, mean, first and latest of one test's values, all or between two days.",
        values_in_window,
    ),
    "current_list": (
        "The patient's current (active) medications, conditions or allergies.",
        current_list,
    ),
    "items_since": (
        "Medications, conditions, allergies, procedures or immunizations started on or after a day.",
        items_since_date,
    ),
    "ever_had": (
        "Whether the patient ever had a condition, procedure, vaccine or medication, and when first.",
        ever_had,
    ),
    "age": ("The patient's age now, or on a day.", age),
    "last_visit": ("The date and type of the patient's most recent visit.", last_visit),
    "count_records": (
        "How many records of one type the chart holds, all or between two days.",
        count_records,
    ),
}


# The planner's kinds each tool computes: the loop's first step takes the tool a question's
# words point at (chart.steer.kind_from_words) when the model chose none of these.
TOOL_KINDS: dict[str, tuple[Kind, ...]] = {
    "latest_value": (Kind.LATEST, Kind.TREND),
    "value_on_date": (Kind.ON_DATE,),
    "values_in_window": (Kind.HIGHEST, Kind.LOWEST, Kind.FIRST, Kind.THRESHOLD, Kind.COUNT),
    "current_list": (Kind.CURRENT,),
    "items_since": (Kind.SINCE,),
    "ever_had": (Kind.EVER, Kind.FIRST_DIAGNOSED, Kind.STARTED),
    "age": (Kind.AGE,),
    "last_visit": (Kind.LAST_VISIT,),
    "count_records": (Kind.COUNT,),
}


# What each counting tool counts; a count question goes to the one its words ask for
# (agents/two_step.worded_action, chart.record_kinds.counts_records).
COUNTS = {"values_in_window": "values", "count_records": "records"}


def make_chart_tools(
    fhir: FhirClient, patient_id: str, view: ChartView | None = None
) -> list[BaseTool]:
    """The chart tools bound to one patient; with `view`, arguments are enums of its chart
    and records dated after `view.now` are hidden."""
    scope = ChartToolScope(fhir, patient_id, view)
    models = arg_models(view)
    return [
        _bind(name, text, models[name], run, scope) for name, (text, run) in CHART_TOOLS.items()
    ]


def _bind(
    name: str, text: str, schema: type[BaseModel], run: Run, scope: ChartToolScope
) -> BaseTool:
    metadata: dict[str, Any] = {"chart_tool": True, "kinds": [str(k) for k in TOOL_KINDS[name]]}
    if name in COUNTS:
        metadata["counts"] = COUNTS[name]
    return checked_tool(name, text, schema, partial(run, scope), metadata)
