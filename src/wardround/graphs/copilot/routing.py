"""How the copilot's model chooses: a few high-level actions, chart questions to the planner.

A small model cannot drive a free tool loop over a chart (it fills every optional argument,
searches "most recent" with today's date), so the model is not shown the raw FHIR reads. It
makes one constrained choice among high-level actions: `answer_from_chart` (which takes no
arguments: the graph hands the clinician's question to the EHR QA planner, which narrows
every later decision too), guideline lookup, image search, an order (a write tool, approved
by the clinician), or a reply without tools (the final answer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from wardround.agents.protocol import structured
from wardround.graphs.copilot import prompts

CHART_TOOL = "answer_from_chart"
# Reads the model is not offered: chart questions go through the planner instead. They stay
# runnable, so a thread from before (or a caller scripting them) still works.
RAW_READS = frozenset({"patient_manifest", "search_records", "read_record"})
# A follow-up leans on the turn before ("and the one before?", "what about LDL?").
_FOLLOW_UP = re.compile(
    r"^\s*(and|also|what about|how about)\b"
    r"|\b(it|its|those|them|the one|one before|before that|the previous|same|again)\b",
    re.IGNORECASE,
)


class ChartArgs(BaseModel):
    """No arguments: the graph passes the clinician's question (made standalone) on."""


async def _not_here(**_: Any) -> Any:
    raise RuntimeError("answer_from_chart is run by the copilot graph, not as a tool")


CHART_SPEC = StructuredTool(
    name=CHART_TOOL,
    description="Answer the clinician's question about this patient's records (values, "
    "results, vitals, medications, conditions, procedures, vaccines, visits, dates, trends) "
    "from the chart, with citations.",
    args_schema=ChartArgs,
    coroutine=_not_here,
)


ChartMode = Literal["planner", "tools"]


def model_tools(tools: Sequence[BaseTool], chart: ChartMode = "planner") -> list[BaseTool]:
    """The actions the copilot's model chooses among: under "planner", the chart and the rest
    but raw reads; under "tools", every tool as it is (the free loop)."""
    if chart == "tools":
        return list(tools)
    return [CHART_SPEC, *(t for t in tools if t.name not in RAW_READS)]


class Standalone(BaseModel):
    question: str = Field(min_length=3, max_length=400)


def previous_chart_turn(messages: Sequence[AnyMessage]) -> tuple[str, str] | None:
    """The last earlier chart question of the thread and its answer, if any."""
    for message in reversed(messages):
        if isinstance(message, AIMessage) and message.additional_kwargs.get("route") == CHART_TOOL:
            asked = message.additional_kwargs.get("question")
            if asked:
                return str(asked), str(message.content)
    return None


def needs_context(question: str) -> bool:
    """Code decides whether a question may lean on the one before; the model only rewrites."""
    return bool(_FOLLOW_UP.search(question))


async def standalone_question(
    model: BaseChatModel, question: str, earlier: Sequence[AnyMessage]
) -> str:
    """`question` rewritten to stand alone when it follows up an earlier chart question."""
    before = previous_chart_turn(earlier)
    if before is None or not needs_context(question):
        return question
    asked, answered = before
    ask = prompts.STANDALONE.format(previous=asked, answer=answered[:300], question=question)
    value: Any = await structured(model, Standalone).ainvoke([HumanMessage(ask)])
    return str(value.question).strip() or question
