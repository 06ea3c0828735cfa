"""The chart tools' arguments, built from one chart: which tests, items and record types exist.

With a `ChartView`, a test or item argument is an enum of the chart's own names (plus the
choice that it is not recorded), so a small model under a grammar can only name what exists.
Without one (schemas shared across patients: MCP, the copilot's model-facing list) the same
arguments are strings, resolved against the chart's manifest when the tool runs.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from wardround.chart.options import NOT_IN_CHART, Option
from wardround.chart.view import ChartView

# What a list question names, and the record type it reads.
CURRENT_LISTS = {
    "medications": "MedicationRequest",
    "conditions": "Condition",
    "disorders": "Condition",  # conditions that are disorders: no findings or situations
    "allergies": "AllergyIntolerance",
}
DATED_LISTS = {**CURRENT_LISTS, "procedures": "Procedure", "immunizations": "Immunization"}
EVER_TYPES = ("Condition", "Procedure", "Immunization", "MedicationRequest")


def test_options(options: list[Option]) -> dict[str, Option]:
    """Results and measurements by name (the label without its `[Observation]`)."""
    found: dict[str, Option] = {}
    for o in options:
        if o.resource_type == "Observation" and o.code:
            found.setdefault(o.name, o)
    return found


def item_options(options: list[Option]) -> dict[str, Option]:
    """Coded conditions, procedures, immunizations and medications by label (`name [Type]`)."""
    return {o.label: o for o in options if o.resource_type in EVER_TYPES and o.code}


def _enum(values: list[str]) -> Any:
    return Literal[tuple(dict.fromkeys([*values, NOT_IN_CHART]))]


def _field(kind: Any, description: str, **extra: Any) -> Any:
    return (kind, Field(description=description, **extra))


def _optional_date(description: str) -> Any:
    return (date | None, Field(None, description=description))


def arg_models(view: ChartView | None) -> dict[str, type[BaseModel]]:
    """Each chart tool's argument model, enums from `view` (strings without one)."""
    options = view.options() if view else []
    tests: Any = _enum(sorted(test_options(options))) if view else str
    items: Any = _enum(sorted(item_options(options))) if view else str
    types = sorted(set(view.manifest.types) - {"Patient"}) if view else []
    record_type: Any = Literal[tuple(types)] if types else str
    test = _field(tests, "the test or measurement, named as the chart names it")
    return {
        "latest_value": create_model("LatestValueArgs", test=test),
        "value_on_date": create_model(
            "ValueOnDateArgs", test=test, date=_field(date, "the day, YYYY-MM-DD")
        ),
        "values_in_window": create_model(
            "ValuesInWindowArgs",
            test=test,
            date_from=_optional_date("first day, YYYY-MM-DD, only if the question names one"),
            date_to=_optional_date("last day, YYYY-MM-DD, only if the question names one"),
        ),
        "current_list": create_model(
            "CurrentListArgs",
            items=_field(Literal[tuple(CURRENT_LISTS)], "what to list"),
        ),
        "items_since": create_model(
            "ItemsSinceArgs",
            items=_field(Literal[tuple(DATED_LISTS)], "what to list"),
            date=_field(date, "the first day, YYYY-MM-DD"),
        ),
        "ever_had": create_model(
            "EverHadArgs",
            item=_field(items, "the condition, procedure, vaccine or medication"),
        ),
        "age": create_model(
            "AgeArgs", on=_optional_date("a day, YYYY-MM-DD, only if the question names one")
        ),
        "last_visit": create_model("LastVisitArgs"),
        "count_records": create_model(
            "CountRecordsArgs",
            record_type=_field(record_type, "the record type, e.g. Encounter for visits"),
            date_from=_optional_date("first day, YYYY-MM-DD, only if the question names one"),
            date_to=_optional_date("last day, YYYY-MM-DD, only if the question names one"),
        ),
    }
