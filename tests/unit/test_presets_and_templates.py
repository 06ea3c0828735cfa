"""Presets, the vLLM command and the Gemma 3 pythonic chat template."""

from __future__ import annotations

import jinja2
import pytest

from wardround.agents.models import ModelSpec
from wardround.agents.openai_chat import fold_system
from wardround.agents.presets import PRESETS, get_preset
from wardround.agents.vllm import template_path, vllm_argv
from wardround.settings import DEFAULT_MODEL, Settings


def test_presets_cover_production_and_embedded_models() -> None:
    assert get_preset("medgemma-4b").model_id == "google/medgemma-1.5-4b-it"
    assert get_preset("gemma-3-27b").model_id == "google/gemma-3-27b-it"
    assert {p.backend for p in PRESETS.values()} == {"openai", "embedded"}
    assert get_preset(DEFAULT_MODEL).backend == "embedded"
    with pytest.raises(ValueError, match="known presets"):
        get_preset("gpt-17")


def test_vllm_command_is_identical_for_medgemma_and_its_base() -> None:
    a, b = vllm_argv(get_preset("medgemma-27b")), vllm_argv(get_preset("gemma-3-27b"))
    assert a[2] == "google/medgemma-27b-text-it" and b[2] == "google/gemma-3-27b-it"
    assert a[3:] == b[3:]
    assert "--tool-call-parser" in a and a[a.index("--tool-call-parser") + 1] == "pythonic"
    assert template_path().exists()
    with pytest.raises(ValueError):
        vllm_argv(get_preset("smollm2-135m"))


def test_model_spec_resolves_dialects() -> None:
    assert ModelSpec(Settings(model="smollm2-135m")).dialect == "llamacpp"
    assert ModelSpec(Settings(model="medgemma-4b")).dialect == "openai"
    explicit = ModelSpec(Settings(model_base_url="http://h:1/v1", model_name="x"))
    assert explicit.preset is None and explicit.name == "x"


def _render(messages: list[dict], tools: list[dict] | None = None) -> str:
    env = jinja2.Environment()
    env.filters["tojson"] = lambda v: __import__("json").dumps(v)
    template = env.from_string(template_path().read_text())
    return template.render(
        messages=messages, tools=tools, bos_token="<bos>", add_generation_prompt=True
    )


def test_pythonic_template_renders_tools_calls_and_results() -> None:
    tool = {
        "type": "function",
        "function": {"name": "read_record", "parameters": {"type": "object"}},
    }
    text = _render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Latest potassium?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "function": {
                            "name": "read_record",
                            "arguments": {"reference": "Observation/1"},
                        }
                    }
                ],
            },
            {
                "role": "tool",
                "name": "read_record",
                "content": "Observation/1 2024-01-02 Potassium 3.1 mmol/L",
            },
        ],
        tools=[tool],
    )
    assert text.startswith("<bos><start_of_turn>user\nBe brief.")
    assert '"name": "read_record"' in text
    assert '<start_of_turn>model\n[read_record(reference="Observation/1")]<end_of_turn>' in text
    assert "Function result of read_record:\nObservation/1" in text
    assert text.endswith("<start_of_turn>model\n")
    assert "system" not in text.replace("Be brief.", "")


def test_fold_system_into_first_user_turn() -> None:
    folded = fold_system([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert folded == [{"role": "user", "content": "S\n\nU"}]
