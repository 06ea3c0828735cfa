"""The free loop for EHR questions: the model picks read tools step by step, then answers."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import BaseTool

from wardround.fhir.client import FhirClient
from wardround.graphs.ehr_qa import prompts
from wardround.graphs.ehr_qa.citations import CitedAnswer
from wardround.graphs.tool_loop import LoopResult, run_tool_loop
from wardround.tools.evidence import REQUIRES_APPROVAL
from wardround.tools.fhir.tools import make_fhir_tools

READ_TOOLS = ("patient_manifest", "search_records", "read_record")


def read_tools(fhir: FhirClient, patient_id: str) -> list[BaseTool]:
    tools = make_fhir_tools(fhir, patient_id=patient_id)
    return [
        t for t in tools if t.name in READ_TOOLS and not (t.metadata or {}).get(REQUIRES_APPROVAL)
    ]


async def run_loop(
    question: str, patient_id: str, *, model: BaseChatModel, fhir: FhirClient, max_steps: int = 6
) -> tuple[LoopResult, dict[str, Any]]:
    """Run the loop; returns the loop result and the final answer object (answer, citations)."""
    messages = [
        SystemMessage(prompts.LOOP_SYSTEM.format(patient_id=patient_id)),
        HumanMessage(question),
    ]
    result = await run_tool_loop(
        messages, read_tools(fhir, patient_id), model=model, final=CitedAnswer, max_steps=max_steps
    )
    return result, result.final
