"""The json tool-call protocol against a scripted model: cleaning, validation, repair."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel

from fakes import TOOLS, ScriptedChatModel
from wardround.agents.protocol import (
    ModelOutputError,
    clean_reply,
    json_tool_caller,
    response_format,
    structured,
    tool_choice_schema,
)

QUESTION = [HumanMessage("What is the latest HbA1c?")]


async def test_plain_json_becomes_a_tool_call_toolnode_can_run() -> None:
    model = ScriptedChatModel(
        replies=[
            '{"action": "search_records", "args": {"resource_type": "Observation", "code": "4548-4"}}'
        ]
    )
    message = await json_tool_caller(model, TOOLS, "llamacpp").ainvoke(QUESTION)
    assert message.tool_calls[0]["name"] == "search_records"
    assert message.tool_calls[0]["args"] == {"resource_type": "Observation", "code": "4548-4"}
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode(TOOLS))
    graph.add_edge(START, "tools")
    result = await graph.compile().ainvoke({"messages": [*QUESTION, message]})
    assert result["messages"][-1].content == "found Observation 4548-4"


async def test_fenced_json_and_thinking_are_cleaned() -> None:
    reply = (
        "<unused94>thought: the user wants a lab, so search observations<unused95>"
        'Sure!\n```json\n{"action": "read_record", "args": {"reference": "Observation/x1"}}\n```'
    )
    message = await json_tool_caller(ScriptedChatModel(replies=[reply]), TOOLS, "none").ainvoke(
        QUESTION
    )
    assert message.tool_calls[0]["args"] == {"reference": "Observation/x1"}


def test_clean_reply_handles_unterminated_thinking() -> None:
    assert clean_reply("<unused94>still thinking and never stopped") == ""
    assert clean_reply('prefix {"a": 1} suffix') == '{"a": 1}'


async def test_final_answer_is_content_without_tool_calls() -> None:
    model = ScriptedChatModel(replies=['{"action": "final_answer", "answer": "6.1 %"}'])
    message = await json_tool_caller(model, TOOLS, "openai").ainvoke(QUESTION)
    assert message.tool_calls == []
    assert message.content == "6.1 %"


async def test_invalid_json_is_repaired_once_with_the_error() -> None:
    model = ScriptedChatModel(
        replies=[
            '{"action": "search_records", "args": {"code": "4548-4"}}',  # missing resource_type
            '{"action": "search_records", "args": {"resource_type": "Observation"}}',
        ]
    )
    message = await json_tool_caller(model, TOOLS, "llamacpp").ainvoke(QUESTION)
    assert message.tool_calls[0]["args"] == {"resource_type": "Observation"}
    repair_turn = model.calls[1]["messages"][-1].content
    assert "resource_type" in repair_turn and "Field required" in repair_turn
    assert message.usage_metadata["input_tokens"] == 20  # both attempts are counted


async def test_still_invalid_after_repair_raises_a_clear_error() -> None:
    model = ScriptedChatModel(
        replies=["I think it is diabetes.", '{"action": "fly_to_moon", "args": {}}']
    )
    with pytest.raises(ModelOutputError) as err:
        await json_tool_caller(model, TOOLS, "llamacpp").ainvoke(QUESTION)
    assert "fly_to_moon" in str(err.value)
    assert err.value.raw == '{"action": "fly_to_moon", "args": {}}'
    assert len(model.calls) == 2


async def test_constrained_output_request_per_dialect() -> None:
    for dialect, expected_type in [("llamacpp", "json_object"), ("openai", "json_schema")]:
        model = ScriptedChatModel(replies=['{"action": "final_answer", "answer": "ok"}'])
        await json_tool_caller(model, TOOLS, dialect).ainvoke(QUESTION)
        fmt = model.calls[0]["kwargs"]["response_format"]
        assert fmt["type"] == expected_type
        schema = fmt["schema"] if dialect == "llamacpp" else fmt["json_schema"]["schema"]
        actions = [opt["properties"]["action"]["const"] for opt in schema["anyOf"]]
        assert actions == ["search_records", "read_record", "final_answer"]
    model = ScriptedChatModel(replies=['{"action": "final_answer", "answer": "ok"}'])
    await json_tool_caller(model, TOOLS, "none").ainvoke(QUESTION)
    assert "response_format" not in model.calls[0]["kwargs"]


async def test_tools_are_described_in_the_system_prompt() -> None:
    model = ScriptedChatModel(replies=['{"action": "final_answer", "answer": "ok"}'])
    await json_tool_caller(model, TOOLS, "none").ainvoke(
        [SystemMessage("You are a clinician."), *QUESTION]
    )
    system = model.calls[0]["messages"][0].content
    assert system.startswith("You are a clinician.")
    assert "search_records(resource_type: string" in system and "read_record(" in system


class Pick(BaseModel):
    resource_type: str
    limit: int


async def test_structured_output_validates_and_repairs() -> None:
    model = ScriptedChatModel(
        replies=[
            '{"resource_type": "Observation", "limit": "many"}',
            '{"resource_type": "Observation", "limit": 3}',
        ]
    )
    value = await structured(model, Pick, "llamacpp").ainvoke(QUESTION)
    assert value == Pick(resource_type="Observation", limit=3)


class Inner(BaseModel):
    system: str


def test_choice_schema_hoists_nested_definitions() -> None:
    @tool
    def coded(code: Inner) -> str:
        """Take a coded value."""
        return code.system

    schema = tool_choice_schema([coded])
    assert "Inner" in schema["$defs"]
    assert json.dumps(schema).count("#/$defs/Inner") == 1


def test_response_format_none_dialect() -> None:
    assert response_format({"type": "object"}, "none") is None


def test_llamacpp_schema_drops_regex_patterns_pydantic_still_checks() -> None:
    schema = {
        "properties": {"code": {"type": "string", "pattern": "^\\S+$"}},
        "anyOf": [{"pattern": "x"}],
    }
    fmt = response_format(schema, "llamacpp")
    assert "pattern" not in json.dumps(fmt)
    assert response_format(schema, "openai")["json_schema"]["schema"] == schema


async def test_reply_cut_off_at_the_token_cap_is_repaired() -> None:
    import openai
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate(
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 1, "completion_tokens": 512, "total_tokens": 513}}
    )  # fmt: skip
    cut = openai.LengthFinishReasonError(completion=completion)

    class Cut(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            if not self.calls:
                self.calls.append({"messages": list(messages), "kwargs": kwargs})
                raise cut
            return super()._generate(messages, stop, run_manager, **kwargs)

    model = Cut(replies=['{"action": "final_answer", "answer": "ok"}'])
    message = await json_tool_caller(model, TOOLS, "llamacpp").ainvoke(QUESTION)
    assert message.content == "ok"
    assert "cut off" in model.calls[1]["messages"][-1].content


def test_raw_newlines_inside_strings_are_accepted() -> None:
    from wardround.agents.protocol import parse_object

    raw = '{"answer": "line one' + chr(10) + 'line two"}'
    assert parse_object(raw) == {"answer": "line one" + chr(10) + "line two"}


def test_tool_calls_with_dates_become_plain_text() -> None:
    """Validated arguments carry datetime objects; replaying the turn must not fail on them."""
    from datetime import UTC, datetime

    from langchain_core.messages import AIMessage

    from wardround.agents.protocol import as_plain_chat

    when = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    call = {
        "name": "create_service_request",
        "args": {"occurrence": when},
        "id": "c1",
        "type": "tool_call",
    }
    (text,) = as_plain_chat([AIMessage(content="", tool_calls=[call])])
    assert "2026-01-02 03:04:00+00:00" in str(text.content)
