"""ChatOpenAI for servers whose chat template has no system role (Gemma's turn format)."""

from __future__ import annotations

from typing import Any

from langchain_openai import ChatOpenAI


class FoldSystemChatOpenAI(ChatOpenAI):
    """Folds system messages into the first user turn, as Gemma's own template does.

    llama.cpp's `gemma` chat format silently drops system messages; without this the tool
    instructions of the json protocol would never reach the model.
    """

    def _get_request_payload(
        self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        messages = payload.get("messages")
        if messages:
            payload["messages"] = fold_system(messages)
        return payload


def fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system = "\n\n".join(
        str(m["content"]) for m in messages if m.get("role") in ("system", "developer")
    )
    rest = [m for m in messages if m.get("role") not in ("system", "developer")]
    if not system:
        return rest
    if rest and rest[0].get("role") == "user" and isinstance(rest[0].get("content"), str):
        rest[0] = {**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest
