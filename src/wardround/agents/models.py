"""Backends: every preset or endpoint becomes a LangChain chat model the graphs can call."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from wardround.agents.openai_chat import FoldSystemChatOpenAI
from wardround.agents.phi_model import pseudonymising
from wardround.agents.presets import ModelPreset, get_preset
from wardround.agents.protocol import Dialect, ModelUnavailable
from wardround.settings import Settings

DEFAULT_VLLM_URL = "http://127.0.0.1:8000/v1"


class ModelSpec:
    """What a settings object resolves to: the preset (if any), backend, protocol, dialect."""

    def __init__(self, settings: Settings) -> None:
        self.explicit = settings.model_base_url is not None and settings.model_name is not None
        self.preset: ModelPreset | None = None if self.explicit else get_preset(settings.model)
        default_backend = "openai" if self.preset is None else self.preset.backend
        self.backend = settings.model_backend or default_backend
        self.protocol = settings.tool_protocol or (self.preset.protocol if self.preset else "json")
        self.name = settings.model_name or settings.model
        self.dialect: Dialect = settings.constrained_output or (
            "llamacpp"
            if self.backend == "embedded"
            else "none"
            if self.backend == "transformers"
            else "openai"
        )

    def metadata(self) -> dict[str, str]:
        return {"dialect": self.dialect, "protocol": self.protocol, "model": str(self.name)}


def _embedded_url(preset: ModelPreset, settings: Settings) -> str:
    """The user's own server for this preset, else the running embedded one."""
    if settings.model_base_url:
        return settings.model_base_url
    from wardround.agents.embedded import running_server

    record = running_server(preset, settings)
    if record is None:
        raise ModelUnavailable(
            f"the embedded model server for {preset.name} is not running: start it with "
            "`wardround stack up` (or agents.embedded.ensure_model_server)"
        )
    return record.base_url


def make_chat_model(settings: Settings) -> BaseChatModel:
    """The chat model for `settings.model` (a preset) or `model_base_url` + `model_name`,
    pseudonymising what it sends when `phi_pseudonymise` is on and the endpoint is hosted.

    Starts nothing: an embedded preset needs its server up (`ensure_model_server`), else
    ModelUnavailable says how to start it."""
    return pseudonymising(_backend_model(settings), settings)


def _backend_model(settings: Settings) -> BaseChatModel:
    spec = ModelSpec(settings)
    if spec.backend == "transformers":
        from wardround.agents.transformers_backend import TransformersChatModel

        model_id = settings.model_name or (spec.preset.model_id if spec.preset else spec.name)
        model = TransformersChatModel.load(
            model_id, max_new_tokens=settings.max_tokens, device=settings.device
        )
        model.metadata = spec.metadata()
        return model
    if spec.backend == "embedded" and not spec.explicit:
        assert spec.preset is not None
        base_url, model_name = _embedded_url(spec.preset, settings), spec.preset.name
    elif spec.explicit:
        base_url, model_name = str(settings.model_base_url), str(settings.model_name)
    else:
        assert spec.preset is not None
        base_url, model_name = settings.model_base_url or DEFAULT_VLLM_URL, spec.preset.model_id
    fold = spec.preset is not None and spec.preset.chat_format == "gemma"
    cls = FoldSystemChatOpenAI if fold else ChatOpenAI
    return cls(
        base_url=base_url,
        model=model_name,
        api_key=settings.model_api_key,
        temperature=settings.temperature,
        max_completion_tokens=settings.max_tokens,
        timeout=settings.request_timeout_s,
        # The first streamed chunk waits for the whole prompt to be read (minutes for a long
        # prompt on a CPU); langchain-openai's 120 s default cuts such streams off.
        stream_chunk_timeout=settings.request_timeout_s,
        max_retries=2,
        stream_usage=True,
        # llama-cpp-python's server reads `max_tokens`, not `max_completion_tokens`.
        extra_body={"max_tokens": settings.max_tokens} if spec.dialect == "llamacpp" else None,
        # Read by the tool-call protocol so callers need not know the server.
        metadata=spec.metadata(),
    )
