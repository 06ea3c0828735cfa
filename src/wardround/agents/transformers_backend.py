"""In-process backend: a Hugging Face model run by transformers, as a LangChain chat model.

MedGemma 4B is multimodal (`AutoModelForImageTextToText` with its processor); text-only
models load with `AutoModelForCausalLM`. No schema-constrained decoding here: the json
protocol relies on validation and its repair turn.

The weights are loaded straight onto the configured device (`WARDROUND_DEVICE`, default
auto) in bfloat16 where the device supports it. One model serves one request at a time: a
lock serialises concurrent `generate` calls (the eval runner sends several at once), which
keeps replies identical to batch-1 runs; for throughput serve the model with vLLM instead.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from wardround.runtime.devices import load_pretrained, preferred_dtype, resolve_device

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "user"}


def _image(url: str) -> Any:
    from PIL import Image

    if not url.startswith("data:"):
        raise ValueError("only data: URLs are accepted for images (no downloads at run time)")
    data = base64.b64decode(url.split(",", 1)[1])
    return Image.open(io.BytesIO(data)).convert("RGB")


def to_hf_messages(messages: list[BaseMessage], parts: bool = False) -> list[dict[str, Any]]:
    """LangChain messages -> transformers chat messages, each image inside its content part.

    The processor's chat template collects images from their parts; passing them again as
    `images=` fails on transformers 5.0-5.22 ("multiple values for keyword argument").
    `parts=True` turns plain text content into a text part too: the multimodal processors of
    early 5.x releases (5.0 among them) require parts in every message.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        role = _ROLES.get(message.type, "user")
        content = message.content
        if isinstance(content, str):
            text = [{"type": "text", "text": content}] if parts else content
            out.append({"role": role, "content": text})
            continue
        parts_out: list[dict[str, Any]] = []
        for part in content:
            if isinstance(part, str):
                parts_out.append({"type": "text", "text": part})
            elif part.get("type") == "text":
                parts_out.append({"type": "text", "text": part["text"]})
            elif part.get("type") == "image_url":
                parts_out.append({"type": "image", "image": _image(part["image_url"]["url"])})
        out.append({"role": role, "content": parts_out})
    return out


def has_images(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(m["content"], list) and any(p["type"] == "image" for p in m["content"])
        for m in messages
    )


class TransformersChatModel(BaseChatModel):
    """A chat model generating in this process, on the configured device."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_id: str
    max_new_tokens: int = 512
    _model: Any = PrivateAttr(default=None)
    _processor: Any = PrivateAttr(default=None)
    _multimodal: bool = PrivateAttr(default=False)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def load(
        cls, model_id: str, max_new_tokens: int = 512, device: str | None = None
    ) -> TransformersChatModel:
        """Load `model_id` (hub id or local folder) onto `device` ("auto", "cpu", "cuda:1").

        `device=None` takes the configured `WARDROUND_DEVICE`, so callers that build the model
        without a Settings object still honour it.
        """
        import transformers

        if device is None:
            from wardround.settings import Settings

            device = Settings().device
        target = resolve_device(device)
        chat = cls(model_id=model_id, max_new_tokens=max_new_tokens)
        local = os.path.isdir(model_id)
        config = transformers.AutoConfig.from_pretrained(model_id, local_files_only=local)
        chat._multimodal = hasattr(config, "vision_config")
        loader = transformers.AutoProcessor if chat._multimodal else transformers.AutoTokenizer
        chat._processor = loader.from_pretrained(model_id, local_files_only=local)
        auto = (
            transformers.AutoModelForImageTextToText
            if chat._multimodal
            else transformers.AutoModelForCausalLM
        )
        chat._model = load_pretrained(
            auto, model_id, target, preferred_dtype(target), local_files_only=local
        )
        return chat

    @property
    def _llm_type(self) -> str:
        return "transformers"

    def _inputs(self, messages: list[BaseMessage]) -> Any:
        """Tokenised prompt (and pixels) on the model's device, in the model's dtype."""
        hf_messages = to_hf_messages(messages, parts=self._multimodal)
        if has_images(hf_messages) and not self._multimodal:
            raise ValueError(f"{self.model_id} takes no images")
        inputs = self._processor.apply_chat_template(
            hf_messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        if not self._multimodal:
            # BERT-style tokenizers add them; text decoders take none. Multimodal Gemma 3
            # keeps them: they mark image tokens, which attend to each other bidirectionally.
            inputs.pop("token_type_ids", None)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs.to(self._model.device)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        import torch

        inputs = self._inputs(messages)
        prompt_len = int(inputs["input_ids"].shape[-1])
        with self._lock, torch.inference_mode():
            output = self._model.generate(
                **inputs,
                max_new_tokens=kwargs.get("max_tokens", self.max_new_tokens),
                do_sample=False,
            )
        new = output[0][prompt_len:]
        tokenizer = getattr(self._processor, "tokenizer", self._processor)
        text = tokenizer.decode(new, skip_special_tokens=True)
        for marker in stop or []:
            text = text.split(marker)[0]
        message = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": prompt_len,
                "output_tokens": int(new.shape[-1]),
                "total_tokens": prompt_len + int(new.shape[-1]),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
