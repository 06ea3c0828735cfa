"""A chat model that pseudonymises what it sends and re-identifies what comes back.

`make_chat_model` wraps the model in `PseudonymisingChatModel` when `phi_pseudonymise` is on
and the endpoint is hosted (not on this machine), so every graph gets masking without
knowing. Whose identifiers to mask comes from a context variable: `in_patient_scope`
(graphs/phi_scope.py reads the Patient and sets it). A call with no patient in scope, or
whose Patient could not be read, is refused: nothing leaves unmasked.

Each egress and each re-identification is logged on `wardround.agents.phi` as a `PhiEvent`
(counts per kind and the endpoint host, never the values); graphs/copilot/audit.py writes
them to the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import Field

from wardround.agents.phi import Pseudonymiser, add_counts, load_key
from wardround.agents.phi_hosts import endpoint_host, is_on_this_machine
from wardround.agents.protocol import ModelUnavailable
from wardround.settings import Settings

log = logging.getLogger("wardround.agents.phi")
EGRESS, REIDENTIFY = "phi_egress", "phi_reidentify"
PHI_KEY_FILE = "phi.key"  # under home, when settings.phi_key is not given


class PhiRefused(ModelUnavailable):
    """Pseudonymisation is on and this call cannot be masked: it is not sent."""


@dataclass(frozen=True)
class PhiEvent:
    """One audited step: what was replaced (counts per kind), for whom, towards which host."""

    action: str
    patient_id: str
    host: str
    counts: dict[str, int]
    audit_path: Path | None


# The inner call runs without callbacks: its masked text must not reach traces or the
# streamed events a page shows; this model's own run reports the re-identified reply.
_QUIET: RunnableConfig = {"callbacks": []}

# The patient whose identifiers the current model calls mask, or why they cannot be masked.
_SCOPE: ContextVar[Pseudonymiser | PhiRefused | None] = ContextVar("phi_scope", default=None)


@contextmanager
def in_patient_scope(scope: Pseudonymiser | PhiRefused) -> Iterator[None]:
    """Model calls inside the block mask `scope`'s patient (or are refused with it)."""
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def current_scope() -> Pseudonymiser | PhiRefused | None:
    return _SCOPE.get()


def _message_masked(p: Pseudonymiser, fn: str, m: BaseMessage) -> tuple[BaseMessage, dict]:
    """`m` with its content, extra fields and tool-call args mapped by `p.mask`/`p.unmask`."""
    walk = getattr(p, fn)
    content, c1 = walk(m.content)
    extra, c2 = walk(m.additional_kwargs)
    update: dict[str, Any] = {"content": content, "additional_kwargs": extra}
    counts = [c1, c2]
    if isinstance(m, AIMessage):
        calls = []
        for call in m.tool_calls:  # the args only: names and ids pair calls with results
            args, found = walk(call["args"])
            calls.append({**call, "args": args})
            counts.append(found)
        invalid = []
        for bad in m.invalid_tool_calls:
            args, found = walk(bad.get("args"))
            invalid.append({**bad, "args": args})
            counts.append(found)
        update |= {"tool_calls": calls, "invalid_tool_calls": invalid}
    return m.model_copy(update=update), add_counts(*counts)


class PseudonymisingChatModel(BaseChatModel):
    """`inner` with the scope's patient masked on the way out and re-identified on the way
    back (message text, tool-call args, JSON replies, and the request's schemas and tools)."""

    inner: BaseChatModel
    host: str
    key: bytes = Field(repr=False)
    audit_path: Path | None = None

    def pseudonymiser(self, patient: dict[str, Any]) -> Pseudonymiser:
        """The mapping for one Patient resource (read by the caller)."""
        return Pseudonymiser(patient, self.key)

    @property
    def _llm_type(self) -> str:
        return f"pseudonymising-{self.inner._llm_type}"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        bound = self.inner.bind_tools(tools, **kwargs)
        return self.bind(**getattr(bound, "kwargs", {}))

    def _scope(self) -> Pseudonymiser:
        scope = current_scope()
        if isinstance(scope, PhiRefused):
            raise scope
        if scope is None:
            raise PhiRefused(
                f"PHI pseudonymisation is on and this model call to {self.host} names no "
                "patient (no patient scope): it was not sent"
            )
        return scope

    def _audit(self, action: str, p: Pseudonymiser, counts: dict[str, int]) -> None:
        event = PhiEvent(action, p.patient_id, self.host, counts, self.audit_path)
        log.info("%s to %s: %s", action, self.host, counts, extra={"phi_event": event})

    def _outgoing(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        p = self._scope()
        masked = [_message_masked(p, "mask", m) for m in messages]
        masked_kwargs, kw_counts = p.mask(kwargs)
        self._audit(EGRESS, p, add_counts(kw_counts, *(c for _, c in masked)))
        return p, [m for m, _ in masked], masked_kwargs

    def _incoming(self, p: Pseudonymiser, reply: BaseMessage) -> ChatResult:
        real, counts = _message_masked(p, "unmask", reply)
        self._audit(REIDENTIFY, p, counts)
        return ChatResult(generations=[ChatGeneration(message=real)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        p, masked, masked_kwargs = self._outgoing(messages, kwargs)
        reply = self.inner.invoke(masked, _QUIET, stop=stop, **masked_kwargs)
        return self._incoming(p, reply)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        p, masked, masked_kwargs = self._outgoing(messages, kwargs)
        reply = await self.inner.ainvoke(masked, _QUIET, stop=stop, **masked_kwargs)
        return self._incoming(p, reply)


_SAID_LOCAL: set[str] = set()


def pseudonymising(model: BaseChatModel, settings: Settings) -> BaseChatModel:
    """`model` wrapped when `settings.phi_pseudonymise` is on and its endpoint is hosted."""
    if not settings.phi_pseudonymise:
        return model
    url = getattr(model, "openai_api_base", None)
    host = endpoint_host(url) if url else ""
    if not url or is_on_this_machine(host, settings.phi_local_hosts):
        if host not in _SAID_LOCAL:  # said once per endpoint, not per model built
            _SAID_LOCAL.add(host)
            log.info("phi_pseudonymise is on, but the model (%s) is on this machine: "
                     "nothing is masked", host or "in process")  # fmt: skip
        return model
    key = (
        settings.phi_key.get_secret_value().encode()
        if settings.phi_key
        else load_key(settings.home / PHI_KEY_FILE)
    )
    wrapped = PseudonymisingChatModel(
        inner=model, host=host, key=key, audit_path=settings.home / "audit.jsonl"
    )
    wrapped.metadata = model.metadata  # the dialect and protocol the graphs read
    return wrapped
