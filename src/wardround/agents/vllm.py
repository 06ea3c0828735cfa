"""The exact `vllm serve` command for a preset: the same flags and template for every model,
so that a measured difference between MedGemma and Gemma 3 comes from the model."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from wardround.agents.presets import ModelPreset

TEMPLATE = "gemma3_pythonic.jinja"


def template_path() -> Path:
    with as_file(files("wardround.agents").joinpath("templates", TEMPLATE)) as path:
        return Path(path)


def vllm_argv(
    preset: ModelPreset, *, port: int = 8000, host: str = "127.0.0.1", max_model_len: int = 16384
) -> list[str]:
    if preset.backend != "openai":
        raise ValueError(f"preset {preset.name!r} is not served by vLLM (backend {preset.backend})")
    argv = [
        "vllm", "serve", preset.model_id,
        "--host", host,
        "--port", str(port),
        "--dtype", "bfloat16",
        "--max-model-len", str(max_model_len),
        "--seed", "0",
        "--enable-auto-tool-choice",
        "--tool-call-parser", "pythonic",
        "--chat-template", str(template_path()),
    ]  # fmt: skip
    if preset.multimodal:
        argv += ["--limit-mm-per-prompt", '{"image": 4}']
    return argv
