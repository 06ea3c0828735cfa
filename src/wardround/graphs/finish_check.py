"""Checks on a loop's final answer before it stands: values the tools returned, and writes
done as writes.

- A finish writing numbers or dates that appear in no tool result (nor in the prompt) is
  sent back once with those values named; a second such finish stands, flagged. The check
  is the planner's own (`wardround.chart.faithfulness.unsupported`).
- A task that tells the agent to order, refer or record something is done by calling a
  write tool. A finish without one is sent back once, saying so. Conditional instructions
  ("if low, order ...") are not nudged: no order may be the right answer (the two-step
  choice judges the condition, `write_condition`, before such a write: in code from what the
  model reads when the task gives "now", agents/condition.py, else by the model's yes/no).
- A count question ("how many ...") answered after a counting tool must give the count that
  tool's last result leads with; a finish with another number is sent back once with the
  count named (a small model copies the number of records listed, not the total).
- A task that names no write at all is read-only: the loop offers it no write tools
  (`mentions_write`), so a lookup cannot file an order on the way; one that names only
  orders gets no tool that files an observation, and one that names only a record no
  order tool (`written_types`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from wardround.chart.faithfulness import unsupported

_WRITE_WORDS = re.compile(
    r"\b(order|place|prescribe|refer|referral|record|document|request|schedule|administer)\b",
    re.I,
)
# What each write word creates: an order or referral is a request, a record an Observation.
_ORDERS = ("MedicationRequest", "ServiceRequest")
_CREATES = {
    **dict.fromkeys(
        ("order", "place", "prescribe", "refer", "referral", "request", "schedule", "administer"),
        _ORDERS,
    ),
    **dict.fromkeys(("record", "document"), ("Observation",)),
}
_SERVICE = re.compile(
    r"\b(lab|labs|test|tests|level|panel|referral|refer|consult\w*|imaging|x-?ray|scan)\b", re.I
)
_DRUG = re.compile(
    r"\b(medication|medicine|drug|dose|dosing|replacement|repletion|prescri\w*|ndc|tablets?|"
    r"iv|oral|infusion)\b",
    re.I,
)
_CONDITION = re.compile(r"\b(if|unless|whether|when)\b", re.I)

UNSUPPORTED = (
    "These values in your answer appear in no tool result: {values}. Check them against the "
    "results above (call a tool if you need one) and give your final answer again, using "
    "only values and dates the results show."
)
MISCOUNTED = (
    "The {tool} result above counts {count}, and your answer does not give that number. "
    "Give your final answer again with the count the result shows."
)
_LEADING_COUNT = re.compile(r"\s*(\d+)\b")
_DATES = re.compile(r"\d{4}-\d{2}-\d{2}(?:T[\d:.+\-Z]+)?")
WRITE_NEEDED = (
    "The task asks you to {verb}, and that is done by calling a write tool ({tools}), not "
    "by writing it in the answer. Call the write tool now, then give your final answer."
)


def mentions_write(instruction: str) -> bool:
    """Whether the instruction names an order, referral or record at all (if only on a
    condition); one that names none is read-only."""
    return _WRITE_WORDS.search(instruction) is not None


def written_types(instruction: str) -> frozenset[str]:
    """The FHIR resource types the instruction's write words create (empty: read-only); an
    order that names only a test or referral is a ServiceRequest, only a drug a
    MedicationRequest ("order a new HbA1C lab test" is no prescription)."""
    words = {m.lower() for m in _WRITE_WORDS.findall(instruction)}
    types = {t for w in words for t in _CREATES[w]}
    if set(_ORDERS) <= types:
        service, drug = _SERVICE.search(instruction), _DRUG.search(instruction)
        if service and not drug:
            types.discard("MedicationRequest")
        elif drug and not service:
            types.discard("ServiceRequest")
    return frozenset(types)


def write_condition(instruction: str) -> str | None:
    """The sentences of the instruction that make a write conditional ("If low, then order
    replacement IV magnesium ..."), or None when no write is conditional."""
    sentences = re.split(r"(?<=[.!?])\s+", instruction.strip())
    found = [s for s in sentences if _CONDITION.search(s) and _WRITE_WORDS.search(s)]
    return " ".join(found) or None


def asks_to_write(instruction: str) -> str | None:
    """The verb of an unconditional order/refer/record instruction, or None."""
    found = _WRITE_WORDS.search(instruction)
    if found is None or _CONDITION.search(instruction):
        return None
    return found.group(1).lower()


def tool_results(history: Sequence[BaseMessage]) -> list[str]:
    return [str(m.content) for m in history if isinstance(m, ToolMessage)]


def unsupported_values(
    answer: str, history: Sequence[BaseMessage], prompt: Sequence[str]
) -> list[str]:
    """Numbers and dates in `answer` found in no tool result of `history` and not in `prompt`."""
    return unsupported(answer, [*tool_results(history), *prompt])


def last_count(
    history: Sequence[BaseMessage], count_tools: frozenset[str]
) -> tuple[str, int] | None:
    """(tool, count) of the last result of a counting tool: the number its text leads with
    ("7 Sodium ... results", "160 Encounter records"; "No ..." is 0), or None."""
    for m in reversed(history):
        if isinstance(m, ToolMessage) and m.name in count_tools:
            text = str(m.content)
            if text.startswith("Error"):
                continue
            found = _LEADING_COUNT.match(text)
            if found or text.startswith("No "):
                return str(m.name), int(found.group(1)) if found else 0
    return None


def miscounted(answer: str, counted: tuple[str, int] | None) -> bool:
    """Whether the answer leaves out the count the counting tool gave."""
    if counted is None:
        return False
    numbers = re.findall(r"(?<![\d.])\d+(?![\d])", _DATES.sub(" ", answer))
    return str(counted[1]) not in numbers and not (counted[1] == 0 and "no " in answer.lower())


def wrote(history: Sequence[BaseMessage], write_tools: frozenset[str]) -> bool:
    return any(
        c["name"] in write_tools for m in history if isinstance(m, AIMessage) for c in m.tool_calls
    )
