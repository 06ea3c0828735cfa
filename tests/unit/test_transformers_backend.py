"""The in-process transformers backend on tiny randomly initialised models (no hub).

A Llama for text, and a `Gemma3ForConditionalGeneration` with its `Gemma3Processor` (the
classes of MedGemma 4B) for image requests.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from wardround.agents.models import make_chat_model
from wardround.agents.protocol import ModelOutputError, structured
from wardround.agents.transformers_backend import TransformersChatModel, to_hf_messages
from wardround.doctor.tiny_models import TINY_IMAGE_TOKENS, make_tiny_gemma3
from wardround.runtime.devices import (
    DeviceUnavailable,
    accelerate_available,
    dtype_for,
    host_ram_warning,
    placement_kwargs,
    resolve_device,
)
from wardround.settings import Settings

NO_GPU = not torch.cuda.is_available()

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from wardround.tools.text_embeddings import minilm_path

    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def test_generates_with_usage(tiny_model_dir: Path) -> None:
    settings = Settings(model_backend="transformers", model_name=str(tiny_model_dir), max_tokens=6)
    model = make_chat_model(settings)
    reply = model.invoke([SystemMessage("Be brief."), HumanMessage("Latest potassium?")])
    assert isinstance(reply.content, str)
    usage = reply.usage_metadata or {}
    assert usage["input_tokens"] > 5 and 1 <= usage["output_tokens"] <= 6
    assert model.metadata == {"dialect": "none", "protocol": "json", "model": str(tiny_model_dir)}


class Pick(BaseModel):
    resource_type: str


async def test_random_model_output_fails_validation_cleanly(tiny_model_dir: Path) -> None:
    settings = Settings(model_backend="transformers", model_name=str(tiny_model_dir), max_tokens=4)
    model = make_chat_model(settings)
    with pytest.raises(ModelOutputError):
        await structured(model, Pick).ainvoke([HumanMessage("Which type holds labs?")])


def _image_url(size: tuple[int, int] = (40, 30), color: str = "red") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_question(text: str = "what is this image ?") -> HumanMessage:
    return HumanMessage(
        content=[{"type": "text", "text": text},
                 {"type": "image_url", "image_url": {"url": _image_url()}}]
    )  # fmt: skip


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> TransformersChatModel:
    directory = make_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3"))
    return TransformersChatModel.load(str(directory), max_new_tokens=3, device="cpu")


def test_images_travel_inside_their_content_part() -> None:
    msgs = to_hf_messages([_image_question("What is this?")])
    parts = msgs[0]["content"]
    assert parts[0] == {"type": "text", "text": "What is this?"}
    assert parts[1]["type"] == "image" and parts[1]["image"].size == (40, 30)
    with pytest.raises(ValueError, match="data: URLs"):
        to_hf_messages(
            [HumanMessage(content=[{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])]
        )


def test_image_request_end_to_end(gemma3: TransformersChatModel) -> None:
    reply = gemma3.invoke([SystemMessage("be brief ."), _image_question()])
    usage = reply.usage_metadata or {}
    assert isinstance(reply.content, str) and 1 <= usage["output_tokens"] <= 3
    text_only = gemma3.invoke([SystemMessage("be brief ."), HumanMessage("what is this image ?")])
    # The image became begin/end markers around its soft tokens in the prompt.
    extra = usage["input_tokens"] - (text_only.usage_metadata or {})["input_tokens"]
    assert extra == TINY_IMAGE_TOKENS + 2


def test_token_type_ids_reach_generate(gemma3: TransformersChatModel) -> None:
    seen: list[dict[str, Any]] = []
    real_generate = gemma3._model.generate

    def recording_generate(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return real_generate(**kwargs)

    gemma3._model.generate = recording_generate
    try:
        gemma3.invoke([_image_question()])
    finally:
        del gemma3._model.generate
    token_types = seen[0]["token_type_ids"]
    image_token = gemma3._model.config.image_token_id
    assert torch.equal(token_types == 1, seen[0]["input_ids"] == image_token)
    assert int(token_types.sum()) == TINY_IMAGE_TOKENS
    assert seen[0]["pixel_values"].dtype == gemma3._model.dtype


def test_token_type_ids_change_what_image_tokens_see(gemma3: TransformersChatModel) -> None:
    """Without them image tokens attend causally, and the next-token logits move."""
    inputs = gemma3._inputs([_image_question()])
    without = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    with torch.inference_mode():
        full = gemma3._model(**inputs).logits[0, -1]
        causal = gemma3._model(**without).logits[0, -1]
    assert float((full - causal).abs().max()) > 1e-5


def test_text_decoders_get_no_token_type_ids(tiny_model_dir: Path) -> None:
    model = TransformersChatModel.load(str(tiny_model_dir), max_new_tokens=2, device="cpu")
    assert "token_type_ids" not in model._inputs([HumanMessage("Latest potassium?")])
    with pytest.raises(ValueError, match="takes no images"):
        model.invoke([_image_question()])


def test_loads_on_the_asked_device_in_its_dtype(gemma3: TransformersChatModel) -> None:
    params = list(gemma3._model.parameters())
    assert {p.device.type for p in params} == {"cpu"}
    assert {p.dtype for p in params} == {torch.float32}  # half precision is slow on CPUs


@pytest.mark.skipif(not NO_GPU, reason="needs a machine without CUDA")
def test_device_setting_is_honoured(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeviceUnavailable, match="torch sees 0 CUDA device"):
        TransformersChatModel.load(str(tiny_model_dir), device="cuda")
    # Built without a device, the backend takes the configured WARDROUND_DEVICE.
    monkeypatch.setenv("WARDROUND_DEVICE", "cuda:1")
    settings = Settings(model_backend="transformers", model_name=str(tiny_model_dir))
    assert settings.device == "cuda:1"
    with pytest.raises(DeviceUnavailable, match="'cuda:1'"):
        make_chat_model(settings)


def test_device_names() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") in (expected, "mps")
    assert resolve_device(" CPU ") == "cpu"
    with pytest.raises(DeviceUnavailable, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_bfloat16_where_supported() -> None:
    assert dtype_for("cuda", bf16_supported=True) is torch.bfloat16
    assert dtype_for("cuda", bf16_supported=False) is torch.float16  # T4, V100
    assert dtype_for("mps", bf16_supported=True) is torch.bfloat16
    assert dtype_for("cpu", bf16_supported=True) is torch.float32


def test_weights_load_onto_the_device_directly() -> None:
    assert placement_kwargs("cuda:0", has_accelerate=True) == {"device_map": {"": "cuda:0"}}
    assert placement_kwargs("cuda:0", has_accelerate=False) == {}
    assert host_ram_warning("cpu") is None
    if not accelerate_available():
        assert "pip install accelerate" in (host_ram_warning("cuda:0") or "")


@pytest.mark.skipif(not accelerate_available(), reason="device_map needs accelerate")
def test_device_map_places_the_model(tmp_path: Path) -> None:
    directory = make_tiny_gemma3(tmp_path / "g3")
    model = TransformersChatModel.load(str(directory), max_new_tokens=2, device="cpu")
    assert {p.device.type for p in model._model.parameters()} == {"cpu"}
    assert model.invoke([_image_question()]).usage_metadata


def test_concurrent_requests_take_turns(gemma3: TransformersChatModel) -> None:
    """One in-process model generates for one request at a time (a lock, not batching)."""
    done = threading.Event()

    def ask() -> None:
        gemma3.invoke([_image_question()])
        done.set()

    with gemma3._lock:
        worker = threading.Thread(target=ask)
        worker.start()
        assert not done.wait(1.0), "generate ran while another request held the model"
    worker.join(30)
    assert done.is_set()
