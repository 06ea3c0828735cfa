"""One tool registry: a registered tool reaches every consumer that asks the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool, StructuredTool

from bench.tool_selection import bench_tools
from wardround.graphs.copilot.toolset import CopilotTools
from wardround.settings import Settings
from wardround.tools import registry
from wardround.tools.evidence import REQUIRES_APPROVAL


def _units(fhir: object, patient_id: str, settings: Settings | None) -> list[BaseTool]:
    def convert(mg_dl: float) -> str:
        """Glucose from mg/dL to mmol/L."""
        return f"{mg_dl / 18.016:.1f} mmol/L"

    return [StructuredTool.from_function(convert, name="convert_glucose")]


@pytest.fixture
def registered() -> Iterator[None]:
    registry.register("units", _units)
    yield
    registry._builders.pop("units")


def test_a_registered_tool_reaches_every_consumer(registered: None, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    extra = registry.extra_tools(settings)  # what the API, MCP server and Studio load
    assert [t.name for t in extra] == ["convert_glucose"]  # no index yet: only the new tool
    copilot = CopilotTools(fhir=None, extra=extra)  # type: ignore[arg-type]
    assert "convert_glucose" in {t.name for t in copilot.for_model()}
    assert "convert_glucose" in {t.name for t in bench_tools()}
    assert "convert_glucose" in {t.name for t in registry.tool_specs()}


def test_a_registered_tool_is_in_the_apis_tool_list(registered: None, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from fakes import ScriptedChatModel
    from wardround.fhir.client import FhirClient
    from wardround.server.app import create_app

    settings = Settings(home=tmp_path)
    fhir = FhirClient("http://127.0.0.1:9/fhir")  # never called: the list is built at start
    app = create_app(settings, model=ScriptedChatModel(replies=[]), fhir=fhir)
    with TestClient(app) as client:
        tools = client.get("/api/health").json()["tools"]
    assert "convert_glucose" in tools and "search_records" in tools


def test_specs_hold_every_agent_tool_and_writes_need_approval() -> None:
    specs = {t.name: t for t in registry.tool_specs()}
    assert {"patient_manifest", "search_records", "read_record", "search_images",
            "lookup_guideline", "create_medication_request"} <= set(specs)  # fmt: skip
    writes = {n for n, t in specs.items() if (t.metadata or {}).get(REQUIRES_APPROVAL)}
    assert writes == {"create_observation", "create_medication_request", "create_service_request"}
    assert not {t.name for t in registry.read_only(list(specs.values()))} & writes


def test_a_failing_optional_group_is_left_out(tmp_path: Path) -> None:
    def broken(*_: object) -> list[BaseTool]:
        raise RuntimeError("index is corrupt")

    registry.register("broken", broken)
    try:
        assert registry.extra_tools(Settings(home=tmp_path)) == []
    finally:
        registry._builders.pop("broken")


def _chart_note(fhir: object, patient_id: str, settings: Settings | None) -> list[BaseTool]:
    def chart_note_count() -> str:
        """How many notes the chart holds (a per-patient plugin)."""
        return f"notes of {patient_id}"

    return [StructuredTool.from_function(chart_note_count, name="chart_note_count")]


@pytest.fixture
def per_patient() -> Iterator[None]:
    registry.register("notes", _chart_note, per_patient=True)
    yield
    registry._builders.pop("notes")


async def test_a_per_patient_tool_reaches_the_copilot_the_loop_and_mcp(
    per_patient: None, tmp_path: Path
) -> None:
    from wardround.fhir.client import FhirClient
    from wardround.graphs.ehr_qa.free_loop import read_tools
    from wardround.server.mcp_server import build_server

    fhir = FhirClient("http://127.0.0.1:9/fhir")  # never called: tools are only listed
    copilot = CopilotTools(fhir)
    assert "chart_note_count" in copilot.by_name("p1")
    assert "find_patient" not in copilot.by_name("p1"), "patient-bound: no cross-chart search"
    loop = {t.name for t in read_tools(fhir, "p1")}
    assert "chart_note_count" in loop and "search_records" in loop
    assert not loop & {"find_patient", "create_service_request"}, "the loop only reads"
    server = build_server(Settings(home=tmp_path), patient="p1", extra=[], fhir=fhir)
    names = {t.name for t in await server.list_tools()}
    assert {"chart_note_count", "search_records", "create_service_request"} <= names
    await fhir.aclose()
