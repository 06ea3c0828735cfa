"""The free loop for EHR questions: the model picks read tools step by step, then answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import BaseTool

from wardround.chart.view import ChartView, build_view
from wardround.fhir.client import FhirClient
from wardround.graphs.ehr_qa import prompts
from wardround.graphs.ehr_qa.citations import CitedAnswer
from wardround.graphs.tool_loop import LoopResult, run_tool_loop
from wardround.tools.registry import chart_tools, patient_bound, read_only


def read_tools(fhir: FhirClient, patient_id: str, view: ChartView | None = None) -> list[BaseTool]:
    """The chart's read tools from the registry (the chart tools, enums from `view`, the raw
    FHIR reads, a plugin registered per patient)."""
    return read_only(patient_bound(chart_tools(fhir, patient_id, view=view)))


async def run_loop(
    question: str,
    patient_id: str,
    *,
    model: BaseChatModel,
    fhir: FhirClient,
    max_steps: int = 6,
    now: datetime | None = None,
    **loop: Any,
) -> tuple[LoopResult, dict[str, Any]]:
    """Run the loop over the chart as of `now` (None: as it stands); returns the loop result
    and the final answer object (answer, citations). `loop`: run_tool_loop's options."""
    view = await build_view(fhir, patient_id, now)
    messages = [
        SystemMessage(prompts.LOOP_SYSTEM.format(patient_id=patient_id)),
        HumanMessage(question),
    ]
    result = await run_tool_loop(
        messages,
        read_tools(fhir, patient_id, view),
        model=model,
        final=CitedAnswer,
        max_steps=max_steps,
        **loop,
    )
    return result, result.final
