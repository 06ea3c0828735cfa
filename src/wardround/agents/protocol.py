"""Tool calls for models without tool tokens (Gemma 3, MedGemma, small embedded models).

The `json` protocol: tools are described in the prompt; the model must reply with one JSON
object, either a tool call or a final answer; the server is asked for schema-constrained
output where it can do it; the reply is cleaned (thinking, code fences), validated with
pydantic, repaired once with the validation error, and returned as `AIMessage.tool_calls`
so LangGraph's `ToolNode` runs it. The `native` protocol defers to the server's parser
(vLLM `--tool-call-parser pythonic`) through `bind_tools`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal, TypeVar

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from wardround.agents.prompts import prompt

Dialect = Literal["openai", "llamacpp", "none"]
T = TypeVar("T")
FINAL = "final_answer"

# MedGemma thinks between these tokens; an unterminated block runs to the end of the reply.
_THINKING = re.compile(r"<unused94>.*?(?:<unused95>|$)", re.S)
_THINK_TAGS = re.compile(r"<think>.*?(?:</think>|$)", re.S)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)\s*```", re.S)


class ModelUnavailable(RuntimeError):
    """The model server could not be reached or answered with an error, not a reply."""


def _server_of(model: BaseChatModel) -> str:
    return str(getattr(model, "openai_api_base", None) or getattr(model, "model_name", "model"))


def _refuses_schema_shape(err: openai.APIStatusError) -> bool:
    """llama-cpp-python's server answers OpenAI's json_schema shape with an error naming
    the response_format types it knows ('text' or 'json_object')."""
    text = str(err).lower()
    return err.status_code in (400, 422, 500) and "json_object" in text


class ModelOutputError(ValueError):
    """The model's reply stayed invalid after one repair turn."""

    def __init__(self, error: str, raw: str) -> None:
        super().__init__(f"model reply is not a valid JSON object of the required shape: {error}")
        self.error = error
        self.raw = raw


def strip_thinking(text: str) -> str:
    """The reply without MedGemma's `<unused94>` thinking or `<think>` blocks."""
    return _THINK_TAGS.sub("", _THINKING.sub("", text)).strip()


def clean_reply(text: str) -> str:
    """Strip thinking and code fences; keep the outermost JSON object if prose surrounds it."""
    text = strip_thinking(text)
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        text = text[start : end + 1]
    return text


def parse_object(text: str) -> dict[str, Any]:
    try:
        # strict=False: llama.cpp's JSON grammar lets raw newlines into strings.
        value = json.loads(clean_reply(text), strict=False)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg} at position {err.pos})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def response_format(schema: dict[str, Any], dialect: Dialect, name: str = "reply") -> Any:
    """The request field that makes a server constrain its output to `schema`."""
    if dialect == "openai":  # OpenAI's shape; vLLM structured outputs accept it
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    if dialect == "llamacpp":  # llama-cpp-python turns this schema into a grammar
        return {"type": "json_object", "schema": grammar_safe(schema)}
    return None


def grammar_safe(schema: Any) -> Any:
    """The schema without regex `pattern`s: llama.cpp's grammar converter rejects escapes such
    as `\\s` (and its server process dies on them). Pydantic still checks the patterns."""
    if isinstance(schema, dict):
        return {k: grammar_safe(v) for k, v in schema.items() if k != "pattern"}
    if isinstance(schema, list):
        return [grammar_safe(v) for v in schema]
    return schema


def _hoist_defs(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Move nested `$defs` to the root so `#/$defs/...` references resolve after nesting."""
    schema = dict(schema)
    defs.update(schema.pop("$defs", {}))
    return schema


@lru_cache(maxsize=512)
def _json_schema_text(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema())


def json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema, a fresh copy each time; generated once per class (pydantic's
    generation cost a copilot turn tens of milliseconds under load)."""
    return json.loads(_json_schema_text(model))


def tool_args_model(tool: BaseTool) -> type[BaseModel]:
    schema = tool.tool_call_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema
    raise TypeError(f"tool {tool.name!r} needs a pydantic argument schema")


ToolsKey = tuple[tuple[str, type[BaseModel], str], ...]


def _tools_key(tools: Sequence[BaseTool]) -> ToolsKey:
    """What a tool list's schema and description depend on, hashable (tools are not)."""
    return tuple((t.name, tool_args_model(t), t.description) for t in tools)


def tool_choice_schema(
    tools: Sequence[BaseTool], final: type[BaseModel] | None = None
) -> dict[str, Any]:
    """One JSON schema admitting a call of any tool (with its arguments) or a final answer.

    Built once per tool list and answer model and shared: read it, don't change it."""
    return _choice_schema(_tools_key(tools), final)


@lru_cache(maxsize=256)
def _choice_schema(key: ToolsKey, final: type[BaseModel] | None) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    options: list[dict[str, Any]] = []
    for name, args_model, _ in key:
        args = _hoist_defs(json_schema_of(args_model), defs)
        options.append(
            {
                "type": "object",
                "properties": {"action": {"const": name}, "args": args},
                "required": ["action", "args"],
            }
        )
    final_props: dict[str, Any] = {"answer": {"type": "string"}}
    final_required = ["answer"]
    if final is not None:
        final_schema = _hoist_defs(json_schema_of(final), defs)
        final_props = final_schema.get("properties", {})
        final_required = list(final_schema.get("required", []))
    options.append(
        {
            "type": "object",
            "properties": {"action": {"const": FINAL}, **final_props},
            "required": ["action", *final_required],
        }
    )
    schema: dict[str, Any] = {"anyOf": options}
    if defs:
        schema["$defs"] = defs
    return schema


def describe_tools(tools: Sequence[BaseTool]) -> str:
    return _description(_tools_key(tools))


@lru_cache(maxsize=64)
def _description(key: ToolsKey) -> str:
    lines = []
    for name, args_model, description in key:
        props = json_schema_of(args_model).get("properties", {})
        args = ", ".join(
            f"{arg}: {spec.get('type', 'value')}"
            + (f" ({spec['description']})" if spec.get("description") else "")
            for arg, spec in props.items()
        )
        lines.append(f"- {name}({args}): {description.strip().splitlines()[0]}")
    return "\n".join(lines)


def as_plain_chat(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Rewrite tool-call turns as text, for chat templates that know no tool roles."""
    out: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            call = message.tool_calls[0]
            # default=str: validated arguments hold dates and datetimes, not JSON types.
            text = json.dumps({"action": call["name"], "args": call["args"]}, default=str)
            out.append(AIMessage(content=text))
        elif isinstance(message, ToolMessage):
            name = message.name or "the tool"
            out.append(HumanMessage(content=f"Result of {name}:\n{message.content}"))
        else:
            out.append(message)
    return out


def sum_usage(messages: Sequence[AIMessage]) -> UsageMetadata:
    """The token usage of several replies, added up (one reply's worth of metadata)."""
    total = UsageMetadata(input_tokens=0, output_tokens=0, total_tokens=0)
    for m in messages:
        usage = m.usage_metadata
        if usage:
            total["input_tokens"] += int(usage.get("input_tokens", 0))
            total["output_tokens"] += int(usage.get("output_tokens", 0))
            total["total_tokens"] += int(usage.get("total_tokens", 0))
    return total


async def complete_json(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    schema: dict[str, Any],
    validate: Callable[[dict[str, Any]], T],
    dialect: Dialect,
) -> tuple[T, AIMessage]:
    """Ask for one JSON object, validate it, repair once. Returns (value, last raw reply)."""
    history = list(messages)
    replies: list[AIMessage] = []
    error = ""
    for _attempt in range(2):
        try:
            reply, dialect = await _call(model, history, schema, dialect)
        except openai.LengthFinishReasonError:
            # The reply hit the token cap mid-object: treat it as invalid and repair once.
            error = "the reply was cut off at the token limit; answer more briefly"
            repair = HumanMessage(content=prompt("repair").format(error=error))
            history += [repair]
            raw = ""
            continue
        assert isinstance(reply, AIMessage)
        replies.append(reply)
        raw = reply.content if isinstance(reply.content, str) else json.dumps(reply.content)
        try:
            value = validate(parse_object(raw))
        except (ValueError, ValidationError) as err:
            error = _short_error(err)
            repair = HumanMessage(content=prompt("repair").format(error=error))
            history += [AIMessage(content=raw), repair]
            continue
        reply.usage_metadata = sum_usage(replies)
        return value, reply
    raise ModelOutputError(error, raw)


async def _call(
    model: BaseChatModel, history: list[BaseMessage], schema: dict[str, Any], dialect: Dialect
) -> tuple[AIMessage, Dialect]:
    """One request; switches to llama.cpp's request shape once if the server asks for it, and
    turns transport failures into ModelUnavailable naming the server."""
    fmt = response_format(schema, dialect)
    bound: Runnable = model.bind(response_format=fmt) if fmt else model
    try:
        reply = await bound.ainvoke(history)
    except openai.APIStatusError as err:
        if dialect == "openai" and _refuses_schema_shape(err):
            if model.metadata is not None:
                model.metadata["dialect"] = "llamacpp"  # detected once, kept for later calls
            return await _call(model, history, schema, "llamacpp")
        raise ModelUnavailable(
            f"the model server at {_server_of(model)} answered HTTP {err.status_code}: "
            f"{str(err.message)[:200]}"
        ) from None
    except (AttributeError, TypeError) as err:
        # The openai client hands back the raw text of a reply that is not JSON (an HTML
        # page from a wrong URL); LangChain then fails reading it as a completion.
        raise ModelUnavailable(
            f"the model server at {_server_of(model)} did not answer with an OpenAI chat "
            f"completion (is it an OpenAI-compatible /v1 URL?): {str(err)[:120]}"
        ) from None
    except (openai.APIConnectionError, openai.APIResponseValidationError) as err:
        raise ModelUnavailable(
            f"the model server at {_server_of(model)} is not reachable or not an "
            f"OpenAI-compatible endpoint ({type(err).__name__}: {str(err)[:120]})"
        ) from None
    assert isinstance(reply, AIMessage)
    return reply, dialect


def _short_error(err: Exception) -> str:
    """The first few validation problems, each with the offending value, for the repair turn."""
    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors()[:3]:
            where = ".".join(str(p) for p in e["loc"]) or "value"
            got = json.dumps(e.get("input"), default=str)[:80]
            parts.append(f"{where}: {e['msg'][:200]} (got {got})")
        return "; ".join(parts)
    return str(err)


def structured(
    model: BaseChatModel, schema: type[BaseModel], dialect: Dialect | None = None
) -> Runnable[Sequence[BaseMessage], BaseModel]:
    """Constrained, validated, once-repaired structured output for one decision."""
    json_schema = schema.model_json_schema()
    dialect = dialect or model_dialect(model)

    async def run(messages: Sequence[BaseMessage]) -> BaseModel:
        value, _ = await complete_json(
            model, as_plain_chat(messages), json_schema, schema.model_validate, dialect
        )
        return value

    return RunnableLambda(afunc=run, func=_no_sync, name=f"structured[{schema.__name__}]")


def _no_sync(*_: Any) -> Any:
    raise RuntimeError("use ainvoke: the json protocol is async")


def answer_text(fields: dict[str, Any]) -> str:
    """A final answer's text: its `answer` as written, or as JSON when it is not a string
    (a list of values, say)."""
    answer = fields.get("answer", "")
    return answer if isinstance(answer, str) else json.dumps(answer, default=str)


def _tool_call_validator(
    tools: Sequence[BaseTool], final: type[BaseModel] | None
) -> Callable[[dict[str, Any]], AIMessage]:
    by_name = {tool.name: tool for tool in tools}

    def validate(obj: dict[str, Any]) -> AIMessage:
        action = obj.get("action")
        if action == FINAL:
            fields = {k: v for k, v in obj.items() if k != "action"}
            if final is not None:
                fields = final.model_validate(fields).model_dump()
            elif not isinstance(fields.get("answer"), str):
                raise ValueError('a final answer needs a string "answer"')
            return AIMessage(content=answer_text(fields), additional_kwargs={"final": fields})
        if action not in by_name:
            names = ", ".join([*by_name, FINAL])
            raise ValueError(f'"action" must be one of: {names}; got {action!r}')
        args = obj.get("args") or {}
        if not isinstance(args, dict):
            raise ValueError('"args" must be an object')
        checked = tool_args_model(by_name[action]).model_validate(args)
        call = {
            "name": action,
            "args": checked.model_dump(exclude_none=True),
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "tool_call",
        }
        return AIMessage(content="", tool_calls=[call])

    return validate


def json_tool_caller(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    dialect: Dialect | None = None,
    final: type[BaseModel] | None = None,
) -> Runnable[Sequence[BaseMessage], AIMessage]:
    """A runnable: conversation in, `AIMessage` out (with `tool_calls`, or a final answer)."""
    schema = tool_choice_schema(tools, final)
    dialect = dialect or model_dialect(model)
    instructions = prompt("json_tools").replace("{tools}", describe_tools(tools))
    validate = _tool_call_validator(tools, final)

    async def run(messages: Sequence[BaseMessage]) -> AIMessage:
        history = as_plain_chat(messages)
        if history and isinstance(history[0], SystemMessage):
            history[0] = SystemMessage(content=f"{history[0].content}\n\n{instructions}")
        else:
            history.insert(0, SystemMessage(content=instructions))
        message, raw = await complete_json(model, history, schema, validate, dialect)
        message.usage_metadata = raw.usage_metadata
        message.response_metadata = {**raw.response_metadata, "raw": raw.content}
        return message

    return RunnableLambda(afunc=run, func=_no_sync, name="json_tool_caller")


def model_dialect(model: BaseChatModel) -> Dialect:
    """The constrained-output dialect `make_chat_model` recorded on the model ("none" if unknown)."""
    return (model.metadata or {}).get("dialect", "none")


def tool_calling_model(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    protocol: str | None = None,
    dialect: Dialect | None = None,
    final: type[BaseModel] | None = None,
) -> Runnable[Sequence[BaseMessage], AIMessage]:
    """The model as a tool caller; protocol and dialect default to what the model records."""
    protocol = protocol or (model.metadata or {}).get("protocol", "json")
    dialect = dialect or model_dialect(model)
    if protocol == "native":
        return model.bind_tools(list(tools))
    if protocol != "json":
        raise ValueError(f"unknown tool protocol {protocol!r} (json or native)")
    return json_tool_caller(model, tools, dialect, final)
