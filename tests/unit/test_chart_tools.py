"""The chart tools on a real in-process FHIR server: enums from the chart, "now" from the task."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from langchain_core.tools import BaseTool

from fhir_fixtures import FhirFixture
from wardround.chart.options import NOT_IN_CHART
from wardround.chart.view import build_view
from wardround.tools.chart.tools import CHART_TOOLS, make_chart_tools
from wardround.tools.registry import chart_tools, read_only, tool_specs

pytestmark = pytest.mark.asyncio(loop_scope="module")

A1C = "Hemoglobin A1c/Hemoglobin.total in Blood"


async def tools_as_of(fhir: FhirFixture, now: datetime | None) -> dict[str, BaseTool]:
    pid = fhir.patients["handmade"]
    view = await build_view(fhir.client, pid, now)
    return {t.name: t for t in make_chart_tools(fhir.client, pid, view)}


async def call(tool: BaseTool, **args: object) -> tuple[str, list[str]]:
    message = await tool.ainvoke({"name": tool.name, "args": args, "id": "c1", "type": "tool_call"})
    return str(message.content), list(message.artifact or [])


def enum_of(tool: BaseTool, arg: str) -> list[str]:
    prop = tool.tool_call_schema.model_json_schema()["properties"][arg]
    return prop["enum"] if "enum" in prop else [prop["const"]]  # one value: a const


async def test_test_and_item_arguments_are_enums_of_what_the_chart_holds(fhir: FhirFixture) -> None:
    tools = await tools_as_of(fhir, None)
    tests = enum_of(tools["latest_value"], "test")
    assert A1C in tests and tests[-1] == NOT_IN_CHART
    assert "Tobacco smoking status" in tests and "Body weight" not in tests  # not charted
    items = enum_of(tools["ever_had"], "item")
    assert "Diabetes mellitus type 2 [Condition]" in items and "Colonoscopy [Procedure]" in items
    types = enum_of(tools["count_records"], "record_type")
    assert "Encounter" in types and "Patient" not in types and "CarePlan" not in types


async def test_latest_is_the_newest_record_before_now(fhir: FhirFixture) -> None:
    newest, older = "6.1 % on 2023-11-12", "7.4 % on 2022-05-01"
    text, refs = await call((await tools_as_of(fhir, None))["latest_value"], test=A1C)
    assert text.startswith(f"{newest}. Before it: {older} (decreased)") and len(refs) == 2
    before = await tools_as_of(fhir, datetime(2023, 6, 1, tzinfo=UTC))
    text, refs = await call(before["latest_value"], test=A1C)
    assert text.startswith(f"{older}.") and newest not in text and len(refs) == 1
    text, _ = await call(before["values_in_window"], test=A1C)
    assert text.startswith("1 Hemoglobin A1c") and newest not in text


async def test_now_shapes_the_enums_and_the_age(fhir: FhirFixture) -> None:
    early = await tools_as_of(fhir, datetime(2021, 1, 1, tzinfo=UTC))
    assert A1C not in enum_of(early["latest_value"], "test")  # first measured in 2022
    text, _ = await call(early["age"])
    assert text.startswith("60 years old on 2021-01-01")  # born 1960-02-29
    text, _ = await call(early["last_visit"])
    assert text.startswith("No encounters")


async def test_window_nearest_lists_and_not_recorded(fhir: FhirFixture) -> None:
    tools = await tools_as_of(fhir, None)
    text, _ = await call(tools["values_in_window"], test=A1C)
    assert "2 Hemoglobin A1c" in text and "min 6.1 %" in text and "mean 6.75 %" in text
    text, _ = await call(tools["value_on_date"], test=A1C, date="2023-01-01")
    assert "nearest before: 7.4 % on 2022-05-01, after: 6.1 % on 2023-11-12" in text
    text, refs = await call(tools["current_list"], items="allergies")
    assert text.startswith("Allergy to peanut.") and refs[0].startswith("AllergyIntolerance/")
    text, _ = await call(tools["latest_value"], test=NOT_IN_CHART)
    assert text.startswith("Not recorded")
    text, _ = await call(tools["ever_had"], item="Diabetes mellitus type 2 [Condition]")
    assert text.startswith("Yes: Diabetes mellitus type 2") and "First diagnosed on" in text


async def test_without_a_view_names_are_checked_when_run(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    tools = {t.name: t for t in make_chart_tools(fhir.client, pid)}
    assert (
        tools["latest_value"].tool_call_schema.model_json_schema()["properties"]["test"]["type"]
        == "string"
    )
    text, _ = await call(tools["latest_value"], test="hemoglobin a1c/hemoglobin.total in blood")
    assert text.startswith("6.1 % on 2023-11-12")
    text, _ = await call(tools["latest_value"], test="LDL")
    assert text.startswith("Error: no test named 'LDL' in this chart; it holds:")


async def test_the_registry_offers_the_chart_tools_first(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    view = await build_view(fhir.client, pid, None)
    names = [t.name for t in read_only(chart_tools(fhir.client, pid, view=view))]
    assert names[: len(CHART_TOOLS)] == list(CHART_TOOLS)
    assert "search_records" in names  # raw FHIR search stays for the rest
    assert set(CHART_TOOLS) <= {t.name for t in tool_specs()}
