"""How the copilot's model chooses: a few high-level actions, chart questions to the planner.

A small model cannot drive a free tool loop over a chart (it fills every optional argument,
searches "most recent" with today's date, or answers from nothing), so each turn starts with
one short constrained choice among high-level actions: `answer_from_chart` (the graph hands
the clinician's question to the EHR QA planner, which narrows every later decision too),
guideline lookup, image search, an order (a write tool, approved by the clinician), or a
reply without tools. The other actions then see only their own tools, never the raw reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, create_model

from wardround.agents.protocol import structured
from wardround.graphs.copilot import prompts
from wardround.tools.fhir.tools import FHIR_TOOLS

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


ChartMode = Literal["planner", "tools"]


WRITE_TOOLS = tuple(spec.name for spec in FHIR_TOOLS if spec.writes)
# The actions and the tools each may call (the chart's: none, the planner reads).
ACTION_TOOLS: dict[str, tuple[str, ...]] = {
    CHART_TOOL: (),
    "lookup_guideline": ("lookup_guideline",),
    "search_images": ("search_images",),
    "propose_order": WRITE_TOOLS,
    "reply": (),
}
ACTION_HELP: dict[str, str] = {
    CHART_TOOL: "any question about this patient or their records: results, vitals, "
    "medications, conditions, allergies, procedures, vaccines, visits, dates, trends",
    "lookup_guideline": "what a clinical guideline recommends in general (targets, intervals, "
    "doses, screening)",
    "search_images": "find medical images (X-rays, scans) that look like a description",
    "propose_order": "order, prescribe, refer or record something for this patient",
    "reply": "only a greeting or thanks (a question goes to the chart)",
}


def offered(available: set[str]) -> list[str]:
    """The actions this deployment can do (no image index: no image search)."""
    return [a for a, names in ACTION_TOOLS.items() if not names or set(names) & available]


def _choice_model(actions: Sequence[str]) -> type[BaseModel]:
    kinds: Any = Literal[tuple(actions)]  # a runtime Literal: the actions on offer
    return create_model("TurnAction", action=(kinds, Field(description="the help asked for")))


async def choose_action(model: BaseChatModel, message: str, actions: Sequence[str]) -> str:
    """One short constrained choice among `actions` (ModelOutputError if none is made)."""
    listing = "\n".join(f"- {a}: {ACTION_HELP[a]}" for a in actions)
    asked = [SystemMessage(prompts.ROUTE.format(actions=listing)), HumanMessage(message)]
    picked: Any = await structured(model, _choice_model(actions)).ainvoke(asked)
    return str(picked.action)


def model_tools(
    tools: Sequence[BaseTool], chart: ChartMode = "planner", action: str | None = None
) -> list[BaseTool]:
    """What the model may call this step: under "tools", every tool (the free loop); under
    "planner", the turn's action's tools (all but the raw reads for a turn without one)."""
    if chart == "tools":
        return list(tools)
    if action in ACTION_TOOLS:
        return [t for t in tools if t.name in ACTION_TOOLS[action]]
    return [t for t in tools if t.name not in RAW_READS]


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


_QUESTION = re.compile(
    r"\?|^\s*(what|which|when|where|who|how|is|are|was|were|has|have|had|does|did|do|"
    r"any|list|show|tell|give)\b",
    re.IGNORECASE,
)


# The message is about this patient ("this patient", "her", "his", "she", "he", "pt").
_ABOUT_PATIENT = re.compile(
    r"\b(this|the|my) (patient|pt)\b|\b(her|his|she|he|their|pt)\b", re.IGNORECASE
)


def overrule_reply(action: str, message: str) -> str:
    """Code's check on the model's choice: a question it chose to answer without tools, or a
    guideline or image search about this patient, goes to the chart. Measured: the 1.5B
    "replied" to "is the calcium trending up or down lately?" with an invented trend, and sent
    "when did we last see this patient?" to guideline lookup, answering with today's date; the
    planner answers from records, or says the chart holds nothing."""
    if action == "reply" and _QUESTION.search(message):
        return CHART_TOOL
    if action in ("lookup_guideline", "search_images") and _ABOUT_PATIENT.search(message):
        return CHART_TOOL
    return action


def unanswered_search(
    action: str | None, message: str, reply: AIMessage, turn: Sequence[AnyMessage]
) -> bool:
    """A guideline or image search turn whose model answers a question without calling its
    tool at all: measured, "is the triglycerides trending up or down lately?" went to guideline
    lookup and came back "trending up" from nothing. Such a turn goes to the chart instead."""
    searched = any(isinstance(m, AIMessage) and m.tool_calls for m in turn)
    return (
        action in ("lookup_guideline", "search_images")
        and not reply.tool_calls
        and not searched
        and bool(_QUESTION.search(message))
    )


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
