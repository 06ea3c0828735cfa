"""An OpenAI-compatible chat server on loopback that answers after a fixed latency.

It stands in for vLLM or llama.cpp where only timing and the HTTP path matter: throughput
benches, fault drills, and tests that drive a real `ChatOpenAI` client. Replies come from a
`responder(messages) -> str`, so they are deterministic for a given conversation.

As its own process (the caller keeps its CPU to itself), answering as a scripted AgentClinic
doctor: `python -m wardround.testing.chat_simulator --port P --latency 0.2 --doctor answers.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from wardround.testing.loopback import LoopbackServer

Responder = Callable[[list[dict[str, Any]]], str]


def message_text(content: Any) -> str:
    """The text of an OpenAI message's content (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def _completion(messages: list[dict[str, Any]], reply: str, n: int, model: str) -> dict[str, Any]:
    """A chat.completion response; token counts are words, enough for usage accounting."""
    prompt_tokens = sum(len(message_text(m.get("content")).split()) for m in messages)
    completion_tokens = len(reply.split())
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def simulator_app(
    responder: Responder,
    *,
    latency_s: float = 0.2,
    model: str = "sim",
    bodies: list[dict[str, Any]] | None = None,
) -> FastAPI:
    """`/v1/models` and `/v1/chat/completions`; `app.state` counts completions and the
    most requests in flight at once. Each request body is appended to `bodies` when given
    (what a hosted model would have been sent)."""
    app = FastAPI()
    app.state.completions = 0
    app.state.in_flight = 0
    app.state.max_in_flight = 0

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "sim"}]}

    @app.post("/v1/chat/completions")
    async def complete(body: dict[str, Any]) -> dict[str, Any]:
        if bodies is not None:
            bodies.append(body)
        app.state.in_flight += 1
        app.state.max_in_flight = max(app.state.max_in_flight, app.state.in_flight)
        try:
            await asyncio.sleep(latency_s)
            messages = body.get("messages") or []
            reply = responder(messages)
        finally:
            app.state.in_flight -= 1
        app.state.completions += 1
        return _completion(messages, reply, app.state.completions, body.get("model", model))

    return app


class SimulatorServer(LoopbackServer):
    """The simulator on a free loopback port in a background thread; `base_url` ends in /v1."""

    def __init__(
        self,
        responder: Responder,
        *,
        latency_s: float = 0.2,
        bodies: list[dict[str, Any]] | None = None,
    ) -> None:
        self.app = simulator_app(responder, latency_s=latency_s, bodies=bodies)
        # Many concurrent clients: a deep accept queue, no 503s from uvicorn's own limit.
        super().__init__(self.app, backlog=512, limit_concurrency=1000)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def doctor_responder(diagnoses: dict[str, str], *, tests: int = 1) -> Callable[[Any], str]:
    """A scripted AgentClinic doctor: one question, `tests` test requests, then the diagnosis
    of the case whose objective the system prompt holds. Replies depend only on the
    conversation (OpenAI message dicts or LangChain messages), so any process may answer."""

    def turns(messages: Any) -> list[tuple[str, str]]:
        out = []
        for m in messages:
            if isinstance(m, dict):
                out.append((str(m.get("role")), str(m.get("content"))))
            else:
                out.append((m.type, str(m.content)))
        return out

    def respond(messages: Any) -> str:
        said = turns(messages)
        done = sum(1 for role, _ in said if role in ("ai", "assistant"))
        system = next((text for role, text in said if role == "system"), "")
        if done == 0:
            return "What brings you in today, and when did it start?"
        if done <= tests:
            return "REQUEST TEST: Complete_Blood_Count"
        for objective, dx in diagnoses.items():
            if objective in system:
                return f"DIAGNOSIS READY: {dx}"
        return "DIAGNOSIS READY: Unknown condition"

    return respond


def main(argv: list[str] | None = None) -> None:
    """Serve the simulator as its own process, answering as the scripted doctor."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--doctor", required=True, help="JSON {objective: diagnosis}")
    args = parser.parse_args(argv)
    with open(args.doctor, encoding="utf-8") as handle:
        answers = json.load(handle)
    app = simulator_app(doctor_responder(answers), latency_s=args.latency)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off", backlog=512
    )


if __name__ == "__main__":
    main()
