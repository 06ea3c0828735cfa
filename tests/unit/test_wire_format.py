"""What actually goes over the wire to an OpenAI-compatible server (vLLM, llama.cpp)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from fakes import TOOLS
from wardround.agents.openai_chat import FoldSystemChatOpenAI
from wardround.agents.protocol import json_tool_caller


def recording_model(cls: type[ChatOpenAI], reply: str) -> tuple[ChatOpenAI, list[dict[str, Any]]]:
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            },
        )  # fmt: skip

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    model = cls(base_url="http://server/v1", model="m", api_key="k", http_async_client=client)
    return model, bodies


@pytest.mark.parametrize(
    ("dialect", "fmt_type"), [("openai", "json_schema"), ("llamacpp", "json_object")]
)
async def test_constrained_request_shape(dialect: str, fmt_type: str) -> None:
    model, bodies = recording_model(
        ChatOpenAI, '{"action": "read_record", "args": {"reference": "Observation/1"}}'
    )
    message = await json_tool_caller(model, TOOLS, dialect).ainvoke([HumanMessage("q")])  # type: ignore[arg-type]
    assert message.tool_calls[0]["args"] == {"reference": "Observation/1"}
    assert message.usage_metadata and message.usage_metadata["input_tokens"] == 7
    fmt = bodies[0]["response_format"]
    assert fmt["type"] == fmt_type
    schema = fmt["json_schema"]["schema"] if dialect == "openai" else fmt["schema"]
    assert len(schema["anyOf"]) == len(TOOLS) + 1


async def test_gemma_turn_format_gets_system_text_in_the_first_user_turn() -> None:
    model, bodies = recording_model(FoldSystemChatOpenAI, "ok")
    await model.ainvoke([SystemMessage("Rules."), HumanMessage("Question?")])
    assert bodies[0]["messages"] == [{"role": "user", "content": "Rules.\n\nQuestion?"}]
