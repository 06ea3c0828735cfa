"""A scripted chat model: replies in order, or by a rule; records its input.

For tests and benches that exercise everything but a language model (graphs, the API, the
thread store, FHIR). `replies` pops scripted replies one per call (each text, an AIMessage,
or a function of the messages sent, for replies that must quote ids a FHIR server
assigned); `respond` answers every call with a function of the conversation (stateless, so
safe under concurrency and across API workers); `chunk_chars` > 0 streams each reply in
pieces, like a served model. Streaming runs in the event loop, as an HTTP model client does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    replies: list[Any] = Field(default_factory=list)
    respond: Callable[[Sequence[BaseMessage]], str] | None = None
    chunk_chars: int = 0
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        if self.respond is not None:
            text = self.respond(messages)
            words_in = sum(len(str(m.content).split()) for m in messages)
            words_out = len(text.split())
            message = AIMessage(content=text)
            message.usage_metadata = UsageMetadata(
                input_tokens=words_in, output_tokens=words_out, total_tokens=words_in + words_out
            )
            return message
        self.calls.append({"messages": list(messages)})
        if not self.replies:
            raise AssertionError("the scripted model ran out of replies")
        reply = self.replies.pop(0)
        if callable(reply):
            reply = reply(list(messages))
        message = reply if isinstance(reply, AIMessage) else AIMessage(content=reply)
        message.usage_metadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        return message

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self._reply(messages)
        if self.respond is None:
            self.calls[-1]["kwargs"] = kwargs
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # In the event loop: LangChain's default runs `_generate` in a worker thread.
        return self._generate(messages, stop, None, **kwargs)

    def _chunks(self, message: BaseMessage) -> Iterator[ChatGenerationChunk]:
        text = str(message.content)
        step = self.chunk_chars or max(1, len(text))
        pieces = [text[i : i + step] for i in range(0, len(text), step)] or [""]
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1  # usage rides on the last chunk, as servers send it
            usage = message.usage_metadata if last and isinstance(message, AIMessage) else None
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece, usage_metadata=usage))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        result = self._generate(messages, stop, run_manager, **kwargs)
        for chunk in self._chunks(result.generations[0].message):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # Through `_agenerate`, so a subclass that waits there (a gated model) waits here too.
        result = await self._agenerate(messages, stop, run_manager, **kwargs)
        for chunk in self._chunks(result.generations[0].message):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
