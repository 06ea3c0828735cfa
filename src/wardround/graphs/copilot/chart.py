""" "Answer from the chart": the copilot hands a chart question to the EHR QA planner.

The model's `answer_from_chart` call gets the planner's answer as its result (so the records
it read are citable later and the history stays well formed), followed by a final answer
carrying the planner's citations, its `supported` flag and its plan; the turn ends there.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, ToolMessage

from wardround.graphs.copilot.routing import CHART_TOOL
from wardround.graphs.ehr_qa.answer import QAResult


def chart_messages(call_id: str, question: str, result: QAResult) -> list[AIMessage | ToolMessage]:
    """The thread's record of one planner run: the call's result (its records), then the
    final answer (the planner's own words: a small model restating it could only lose)."""
    shown = result.answer if not result.error else f"Error: {result.error}"
    lines = [shown, *(f"plan: {result.plan}",) * bool(result.plan)]
    read = ToolMessage(
        "\n".join(lines),
        tool_call_id=call_id,
        name=CHART_TOOL,
        artifact=list(result.retrieved),
        status="error" if result.error else "success",
    )
    final = AIMessage(content=result.answer, additional_kwargs=chart_final(question, result))
    return [read, final]


def chart_final(question: str, result: QAResult) -> dict[str, Any]:
    """What the final answer of a chart turn carries besides its text."""
    return {
        "route": CHART_TOOL,
        "question": question,
        "final": {"citations": list(result.citations)},
        "supported": result.supported,
        "plan": result.plan,
        "computed": result.computed,
        **({"unsupported": result.unsupported} if result.unsupported else {}),
        # A cited record holds text addressed to an AI: shown quoted, with a warning.
        **({"injection_warning": True} if result.injection_warning else {}),
    }
