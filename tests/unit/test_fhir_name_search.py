"""find_patient takes a clinician's full name in any order, on a real in-process SEKMET."""

from __future__ import annotations

import pytest

from fhir_fixtures import FhirFixture
from wardround.tools.fhir.tools import make_fhir_tools

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_find_patient_by_full_name_in_either_order(fhir: FhirFixture) -> None:
    tool = next(t for t in make_fhir_tools(fhir.client) if t.name == "find_patient")
    want = [f"Patient/{fhir.patients['handmade']}"]
    for name in ("Ada Testwell", "Testwell Ada", "Testwell, Ada"):
        args = {"name": name, "birth_date": "1960-02-29"}
        message = await tool.ainvoke(
            {"type": "tool_call", "id": "c", "name": tool.name, "args": args}
        )
        assert message.artifact == want, name
    wrong = {"name": "Ada Testwell", "birth_date": "1960-03-01"}
    message = await tool.ainvoke({"type": "tool_call", "id": "c", "name": tool.name, "args": wrong})
    assert message.artifact == []
