"""The `two_step` tool choice: pick the action from an enum, then fill only its arguments.

One long free call (every tool's arguments under one anyOf schema) asks a small model to
decide and to write at once; it fills every optional argument it sees. Here each turn is
two short constrained calls: (1) `{"action": <tool name | final_answer>}`; (2) that tool's
arguments under its own schema (defaults not shown; a long enum cut to the values nearest
the question, all listed in the prompt), or the final answer with its citations an enum of
the references the tools returned. Optional arguments whose value appears in neither the
question nor any tool result are dropped: a guessed code or a made-up date filter is worse
than none.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from wardround.agents.condition import condition_holds
from wardround.agents.prompts import prompt
from wardround.agents.protocol import (
    FINAL,
    Dialect,
    ModelOutputError,
    answer_text,
    as_plain_chat,
    complete_json,
    json_schema_of,
    model_dialect,
    sum_usage,
    tool_args_model,
)
from wardround.chart.dates import find_window
from wardround.chart.kinds import Kind
from wardround.chart.options import settle_name
from wardround.chart.record_kinds import counts_records
from wardround.chart.retrieve import asks_disorders
from wardround.chart.steer import kind_from_words

# question, values -> one score per value (higher: nearer); e.g. MiniLM cosine similarity.
Rank = Callable[[str, Sequence[str]], Sequence[float]]
TOP_K = 12  # enum values shown (and allowed) in the arguments call
MAX_CITED = 5
ARGS_ASK = "Now the arguments for {name} ({description}). Reply with one JSON object of them."
FINAL_ASK = "Now your final answer. Reply with one JSON object."
GATE_ASK = (
    'Before calling {name}: the task makes it conditional: "{condition}" Going by the tool '
    "results above, is the condition for calling {name} met now? Reply with one JSON object."
)
GATE_SCHEMA = {"type": "object", "properties": {"met": {"type": "boolean"}}, "required": ["met"]}


def word_rank(question: str, values: Sequence[str]) -> list[float]:
    """Shared words, a stand-in when no embedding ranking is given."""
    words = set(re.findall(r"[a-z0-9]+", question.lower()))
    return [len(words & set(re.findall(r"[a-z0-9]+", v.lower()))) for v in values]


def action_schema(tools: Sequence[BaseTool]) -> dict[str, Any]:
    names = [t.name for t in tools]
    return {
        "type": "object",
        "properties": {"action": {"enum": [*names, FINAL]}},
        "required": ["action"],
    }


def _plain(schema: Any) -> Any:
    """The schema without defaults and titles: nothing for the model to copy."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k not in ("default", "title")}
    if isinstance(schema, list):
        return [_plain(v) for v in schema]
    return schema


def _narrow(values: list[Any], question: str, rank: Rank, top_k: int) -> list[Any]:
    """The `top_k` values nearest the question, in their order; the last value is kept (the
    chart tools' enums end with the choice that nothing fits)."""
    if len(values) <= top_k + 1:
        return values
    scores = list(rank(question, [str(v) for v in values[:-1]]))
    best = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_k]
    return [values[i] for i in sorted(best)] + [values[-1]]


def args_schema(
    tool: BaseTool, question: str, rank: Rank = word_rank, top_k: int = TOP_K
) -> dict[str, Any]:
    """The arguments call's schema: the tool's own, defaults dropped, long enums narrowed."""
    schema = _plain(json_schema_of(tool_args_model(tool)))
    for prop in schema.get("properties", {}).values():
        if isinstance(prop.get("enum"), list):
            prop["enum"] = _narrow(prop["enum"], question, rank, top_k)
    return schema


def final_schema(final: type[BaseModel] | None, refs: Sequence[str]) -> dict[str, Any]:
    """The final answer's schema; its `citations` (if any) an enum of references seen."""
    if final is None:
        return {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
        }
    schema = _plain(json_schema_of(final))
    props = schema.get("properties", {})
    if "citations" in props:
        items = {"enum": list(refs)} if refs else {"type": "string"}
        props["citations"] = {"type": "array", "items": items, "maxItems": MAX_CITED}
    return schema


def question_of(messages: Sequence[BaseMessage]) -> str:
    """What the person asked: the human turns that are not our own prompts."""
    return "\n".join(str(m.content) for m in messages if isinstance(m, HumanMessage))


def seen_refs(messages: Sequence[BaseMessage]) -> list[str]:
    refs: dict[str, None] = {}
    for m in messages:
        if isinstance(m, ToolMessage) and isinstance(m.artifact, list):
            refs.update(dict.fromkeys(str(r) for r in m.artifact))
    return list(refs)


def _mentioned(value: Any, text: str, unit: str | None = None) -> bool:
    """A date counts as mentioned when its year is (questions write dates many ways); any
    other value as a whole word (a whole float as its integer), followed by its unit where
    the argument has one ("older than 1 year" does not mention 1 hour)."""
    if isinstance(value, date | datetime):
        return str(value.year) in text
    if isinstance(value, float) and value.is_integer():  # 1.0 is mentioned as "1"
        value = int(value)
    word = re.escape(str(value).lower())
    end = rf"\s*-?\s*{re.escape(unit.lower().rstrip('s'))}s?\b" if unit else r"(?![\w.\-])"
    return re.search(rf"(?<![\w.\-]){word}{end}", text) is not None


def prune_optional(
    args: dict[str, Any],
    required: Sequence[str],
    evidence: str,
    units: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`args` without the optional ones whose value the evidence never mentions (with the
    argument's unit, where `units` gives one)."""
    text, units = evidence.lower(), units or {}
    return {k: v for k, v in args.items() if k in required or _mentioned(v, text, units.get(k))}


def units_of(tool: BaseTool) -> dict[str, str]:
    """The `unit` its arguments' schema gives (json_schema_extra), by argument name; read
    from the tool's own model (langchain's call schema drops the extras)."""
    model = tool.args_schema
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return {}
    props = json_schema_of(model).get("properties", {})
    return {k: str(p["unit"]) for k, p in props.items() if isinstance(p.get("unit"), str)}


def worded_action(action: str, tools: Sequence[BaseTool], question: str) -> str:
    """The first action: a chart tool computing the kind the question's words decide
    ("how old" is `age`, "last seen" `last_visit`), when the model chose none of those; a
    count goes to the tool counting what the words count (results of a test, or visits)."""
    kind = kind_from_words(question)
    fits = [t.name for t in tools if kind and str(kind) in (t.metadata or {}).get("kinds", ())]
    if kind is Kind.COUNT:  # a test's results or records of a type, by the words
        counted = "records" if counts_records(question) else "values"
        fits = [t.name for t in tools if (t.metadata or {}).get("counts") == counted] or fits
    return action if not fits or action in fits else fits[0]


def year_window(args: dict[str, Any], tool: BaseTool, question: str) -> dict[str, Any]:
    """A chart tool's date range from the year the question names ("visits in 2013"), when
    the model gave no date: the planner reads the same window (`chart.dates.find_window`)."""
    props = json_schema_of(tool_args_model(tool)).get("properties", {})
    window = find_window(question)
    if not window or not window.year or {"date_from", "date_to"} - set(props):
        return args
    if args.get("date_from") or args.get("date_to"):
        return args
    return {**args, "date_from": window.start.isoformat(), "date_to": window.end.isoformat()}


def settle_names(args: dict[str, Any], tool: BaseTool, question: str) -> dict[str, Any]:
    """A chart tool's enum arguments with the value the question's words name (see
    `chart.options.settle_name`), out of the tool's whole enum, not the narrowed one."""
    props = json_schema_of(tool_args_model(tool)).get("properties", {})
    settled = dict(args)
    for key, value in args.items():
        values = props.get(key, {}).get("enum")
        if isinstance(value, str) and isinstance(values, list) and value in values:
            settled[key] = settle_name(question, value, [str(v) for v in values])
        listed = isinstance(values, list) and "disorders" in values
        if listed and settled[key] == "conditions" and asks_disorders(question):
            settled[key] = "disorders"  # "conditions (disorders)": the planner's reading
    return settled


def _evidence(messages: Sequence[BaseMessage]) -> str:
    """What the person wrote and what the tools returned (not our instructions)."""
    return "\n".join(
        str(m.content)
        for m in messages
        if isinstance(m, HumanMessage | ToolMessage | SystemMessage)
    )


def _describe(tools: Sequence[BaseTool]) -> str:
    return "\n".join(f"- {t.name}: {t.description.strip().splitlines()[0]}" for t in tools)


def _listing(schema: dict[str, Any]) -> str:
    """The enum values the arguments call allows, one per line, so the model reads them."""
    lines = []
    for name, prop in schema.get("properties", {}).items():
        if isinstance(prop.get("enum"), list) and len(prop["enum"]) > 3:
            lines.append(f"{name}, one of:\n" + "\n".join(f"- {v}" for v in prop["enum"]))
    return "\n".join(lines)


def two_step_caller(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    *,
    final: type[BaseModel] | None = None,
    dialect: Dialect | None = None,
    rank: Rank | None = None,
    top_k: int = TOP_K,
    condition: str | None = None,
    gated: frozenset[str] = frozenset(),
    now: datetime | None = None,
) -> Runnable[Sequence[BaseMessage], AIMessage]:
    """A runnable like `json_tool_caller` (conversation in, `AIMessage` out) that decides in
    two constrained calls. With a `condition` (the task's "if low, order ..."), choosing a
    `gated` tool (a write) first asks whether the condition holds; if not, the step is the
    final answer instead: a small model orders on any value once it has read one. With the
    task's `now`, code decides from the value and limit the model reads (agents/condition.py);
    without it, the model answers yes or no."""
    by_name = {t.name: t for t in tools}
    dialect = dialect or model_dialect(model)
    ranker = rank or word_rank
    instructions = prompt("two_step_action").replace("{tools}", _describe(tools))
    pick = action_schema(tools)

    def valid_action(obj: dict[str, Any]) -> str:
        if obj.get("action") not in pick["properties"]["action"]["enum"]:
            raise ValueError(
                f'"action" must be one of: {", ".join(pick["properties"]["action"]["enum"])}'
            )
        return str(obj["action"])

    async def run(messages: Sequence[BaseMessage]) -> AIMessage:
        history = as_plain_chat(messages)
        if history and isinstance(history[0], SystemMessage):
            history[0] = SystemMessage(content=f"{history[0].content}\n\n{instructions}")
        else:
            history.insert(0, SystemMessage(content=instructions))
        action, first = await complete_json(model, history, pick, valid_action, dialect)
        question = question_of(messages)
        if not any(isinstance(m, ToolMessage) for m in messages):
            action = worded_action(action, tools, question)
        gate: list[AIMessage] = []
        if condition and action in gated:
            holds, raw = await _holds(history, action, messages)
            gate, action = [raw], action if holds else FINAL
        history += [AIMessage(content=json.dumps({"action": action}))]
        if action == FINAL:
            reply = await _final(history, seen_refs(messages))
        else:
            reply = await _call(history, by_name[action], question, _evidence(messages))
        reply.usage_metadata = sum_usage([first, *gate, reply])
        return reply

    async def _holds(
        history: list[BaseMessage], name: str, messages: Sequence[BaseMessage]
    ) -> tuple[bool, AIMessage]:
        assert condition is not None
        if now is not None:
            results = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
            try:
                return await condition_holds(
                    model, history, results, condition=condition, name=name, now=now,
                    dialect=dialect,
                )  # fmt: skip
            except ModelOutputError:  # the condition stays unread: no write on it
                return False, AIMessage(content="")
        ask = HumanMessage(GATE_ASK.format(name=name, condition=condition))
        return await complete_json(
            model, [*history, ask], GATE_SCHEMA, lambda obj: bool(obj["met"]), dialect
        )

    async def _final(history: list[BaseMessage], refs: list[str]) -> AIMessage:
        schema = final_schema(final, refs)

        def validate(obj: dict[str, Any]) -> dict[str, Any]:
            fields = (
                final.model_validate(obj).model_dump() if final else {"answer": str(obj["answer"])}
            )
            if named := _tools_named(_strings(fields.get("answer")), by_name):
                raise ValueError(
                    f"{', '.join(named)} is a tool, not an answer: the answer holds what was "
                    "asked for (a value, or nothing found)"
                )
            return fields

        fields, raw = await complete_json(
            model, [*history, HumanMessage(FINAL_ASK)], schema, validate, dialect
        )
        message = AIMessage(content=answer_text(fields), additional_kwargs={"final": fields})
        message.usage_metadata, message.response_metadata = raw.usage_metadata, {"raw": raw.content}
        return message

    async def _call(
        history: list[BaseMessage], tool: BaseTool, question: str, evidence: str
    ) -> AIMessage:
        schema = args_schema(tool, question, ranker, top_k)
        ask = ARGS_ASK.format(name=tool.name, description=tool.description.strip().splitlines()[0])
        listing = _listing(schema)
        text = f"{ask}\n{listing}" if listing else ask
        args_model = tool_args_model(tool)

        def validate(obj: dict[str, Any]) -> dict[str, Any]:
            return args_model.model_validate(obj).model_dump(exclude_none=True)

        args, raw = await complete_json(
            model, [*history, HumanMessage(text)], schema, validate, dialect
        )
        if (tool.metadata or {}).get("chart_tool"):
            args = settle_names(args, tool, question)
        kept = prune_optional(args, schema.get("required", []), evidence, units_of(tool))
        if (tool.metadata or {}).get("chart_tool"):
            kept = year_window(kept, tool, question)
        call = {
            "name": tool.name,
            "args": kept,
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "tool_call",
        }
        message = AIMessage(content="", tool_calls=[call])
        message.usage_metadata, message.response_metadata = raw.usage_metadata, {"raw": raw.content}
        return message

    return RunnableLambda(afunc=run, func=_no_sync, name="two_step_caller")


def _tools_named(texts: Sequence[str], names: Iterable[str]) -> list[str]:
    """The tool names written in answer texts ("FINISH([order_medication])")."""
    return sorted(n for n in names if any(re.search(rf"\b{re.escape(n)}\b", t) for t in texts))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()]
    return [v.strip() for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _no_sync(*_: Any) -> Any:
    raise RuntimeError("use ainvoke: the two-step choice is async")
