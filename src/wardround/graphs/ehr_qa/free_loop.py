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
from wardround.tools.registry import chart_tools, patient_bound, read_only


def read_tools(fhir: FhirClient, patient_id: str) -> list[BaseTool]:
    """The chart's read tools from the registry (a plugin registered per patient included)."""
    return read_only(patient_bound(chart_tools(fhir, patient_id)))


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
