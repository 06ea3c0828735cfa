"""The original MedAgentBench text protocol: one action per reply, at most 8 rounds.

The model is asked, in one user message that lists the functions of funcs_v1.json, to reply
with exactly one of `GET url?params`, `POST url` followed by a JSON body, or
`FINISH([answers])`. A GET is run against the FHIR server and its result (one page, the
searchset Bundle as JSON) comes back as the next user message; a POST is acknowledged and
captured, never sent, as the original harness does; anything else ends the task. The prompt
below is our wording of the original's, with its structure kept: role, the three formats,
one call per reply, the function list, context, question.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from wardround.agents.protocol import strip_thinking
from wardround.evals.task import Trace
from wardround.fhir.client import FhirClient
from wardround.fhir.errors import FhirError
from wardround.fhir.fields import reference_of
from wardround.graphs.trace import token_usage, trace

MAX_ROUNDS = 8

PROMPT = """You are a skilled user of FHIR functions who helps clinicians. You are given a \
question and a list of functions you may call. To answer the question, make one or more \
function calls.

1. To call a GET function, reply exactly in this form:
GET url?param_name1=param_value1&param_name2=param_value2...

2. To call a POST function, reply exactly in this form:
POST url
[the payload as JSON]

3. When you have the answers to all the questions and have done every task asked for, end \
the conversation exactly in this form (the list must be valid JSON):
FINISH([answer1, answer2, ...])

Each reply must take one of these three forms and make only one call. Do not write anything \
else in a reply.

These are the functions you may call, in JSON. Use {api_base} as the api_base.
{functions}

Context: {context}
Question: {question}"""

AFTER_GET = (
    "The GET request returned:\n{data}\nCall FINISH once you have the answers to all the "
    "questions and have done every task asked for."
)
AFTER_POST = (
    "POST request accepted. Call FINISH once you have the answers to all the questions and "
    "have done every task asked for."
)
BAD_POST = "Invalid POST request: the lines after the first are not one JSON object."
GET_ERROR = "Error in sending the GET request: {error}"


def prompt_for(
    *, api_base: str, functions: list[dict[str, Any]], context: str, question: str
) -> str:
    return PROMPT.format(
        api_base=api_base, functions=json.dumps(functions), context=context, question=question
    )


@dataclass(frozen=True)
class Action:
    kind: Literal["GET", "POST", "FINISH", "invalid"]
    url: str = ""
    body: dict[str, Any] | None = None
    text: str = ""


def parse_action(reply: str) -> Action:
    """The reply as the original harness reads it (code fences dropped, thinking too)."""
    text = strip_thinking(reply).replace("```tool_code", "").replace("```", "").strip()
    if text.startswith("GET"):
        lines = text[3:].strip().splitlines()
        return Action("GET", url=lines[0].strip() if lines else "", text=text)
    if text.startswith("POST"):
        head, _, rest = text.partition("\n")
        try:
            body = json.loads(rest)
        except json.JSONDecodeError:
            body = None
        body = body if isinstance(body, dict) else None
        return Action("POST", url=head[4:].strip(), body=body, text=text)
    if text.startswith("FINISH("):
        return Action("FINISH", text=text)
    return Action("invalid", text=text)


def _path_of(url: str, client: FhirClient) -> tuple[str, list[tuple[str, str]]]:
    """(path under the FHIR base, query pairs) of a URL on the client's server."""
    parts, base = urlsplit(url), urlsplit(client.base_url)
    if parts.netloc and parts.netloc != base.netloc:
        raise ValueError(f"{url} is not on the FHIR server {client.base_url}")
    path = "/".join(p for p in parts.path.split("/") if p)
    prefix = "/".join(p for p in base.path.split("/") if p)
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        raise ValueError(f"{url} is not under {client.base_url}")
    # A literal "+" (in "+00:00") stays a plus: the original sent the URL as written.
    query = parse_qsl(parts.query.replace("+", "%2B"))
    return path[len(prefix) :].strip("/"), [(k, v) for k, v in query if k != "_format"]


async def run_get(client: FhirClient, url: str) -> tuple[str, list[str]]:
    """One GET as the original harness sends it: one page of a search, or one read."""
    path, query = _path_of(url, client)
    if not path:
        raise ValueError("the URL names no resource type")
    if "/" in path:
        resource = await client.read(path)
        return json.dumps(resource), [reference_of(resource)]
    found = await client.search(path, query, max_pages=1)
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": f"{client.base_url}/{reference_of(r)}", "resource": r} for r in found
        ],
    }
    return json.dumps(bundle), [reference_of(r) for r in found]


@dataclass
class _Run:
    history: list[BaseMessage]
    posts: list[dict[str, Any]] = field(default_factory=list)
    read: list[str] = field(default_factory=list)

    def tell(self, text: str) -> None:
        self.history.append(HumanMessage(content=text))

    async def act(self, action: Action, client: FhirClient) -> None:
        if action.kind == "GET":
            try:
                data, refs = await run_get(client, action.url)
            except (FhirError, ValueError) as err:
                self.tell(GET_ERROR.format(error=err))
                return
            self.read += [r for r in refs if r not in self.read]
            self.tell(AFTER_GET.format(data=data))
        elif action.body is None:
            self.tell(BAD_POST)
        else:
            entry = {"method": "POST", "url": action.url, "body": action.body}
            self.posts.append({**entry, "resourceType": action.body.get("resourceType")})
            self.tell(AFTER_POST)


async def run_text_protocol(
    model: BaseChatModel, prompt: str, client: FhirClient, *, max_rounds: int = MAX_ROUNDS
) -> Trace:
    """Up to `max_rounds` replies; the trace's answer is the FINISH(...) text, if any."""
    started = time.perf_counter()
    run = _Run(history=[HumanMessage(content=prompt)])
    answer, error, rounds = "", None, 0
    for rounds in range(1, max_rounds + 1):  # noqa: B007 (rounds is kept after the loop)
        reply = await model.ainvoke(run.history)
        run.history.append(reply if isinstance(reply, AIMessage) else AIMessage(str(reply.content)))
        action = parse_action(str(reply.content))
        if action.kind == "FINISH":
            answer = action.text
            break
        if action.kind == "invalid":
            error = "invalid action: the reply is not GET, POST or FINISH"
            break
        await run.act(action, client)
    else:
        error = f"no FINISH after {max_rounds} rounds"
    artifacts: dict[str, Any] = {"posts": run.posts, "protocol": "original"}
    if error:
        artifacts["solver_error"] = error
    return Trace(
        answer=answer,
        messages=trace(run.history),
        tokens=token_usage(run.history),
        latency_s=time.perf_counter() - started,
        steps=rounds,
        retrieved=run.read,
        artifacts=artifacts,
    )
