"""The copilot's tools for other AI clients over MCP (`wardround serve mcp`).

Read tools are bound to one patient (`--patient`), or take a `patient_id` and are bound to
it per call; either way a record of another patient is refused. Guideline lookup and image
search come along when their indexes hold something. Every result carries the ids it rests
on (`citations`), as the copilot's answers do.

Nothing is written from an MCP call alone: a write tool puts the order in a copilot thread
(the same thread store as the HTTP API) where it waits for a clinician, who approves, edits
or rejects it through the API. The call can wait for that decision (`wait_s`) and reports
what was written; `order_status` asks again later. Over HTTP, the API token (when set) is
required as a bearer token. Every access is an audit line, as for the API, with `via: mcp`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import BaseTool
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, create_model

from wardround.fhir.client import FHIR_ID, FhirClient
from wardround.fhir.render import render_resource
from wardround.graphs.copilot.audit import ANONYMOUS, AuditLog, record_dropped
from wardround.graphs.copilot.checkpoint import open_checkpointer
from wardround.graphs.copilot.graph import copilot_graph
from wardround.graphs.copilot.orders import check_args, summarize
from wardround.graphs.copilot.toolset import CopilotTools
from wardround.settings import Settings
from wardround.tools.registry import (
    HIDDEN_ARGS,
    SPEC_PATIENT,
    chart_tools,
    needs_approval,
    patient_bound,
)

log = logging.getLogger(__name__)
_SHAPES_ONLY = cast(FhirClient, None)
_BACKENDS: weakref.WeakKeyDictionary[MCPServer, tuple[Backend, FhirClient | None]] = (
    weakref.WeakKeyDictionary()
)
USER_HEADER = "x-wardround-user"
WAIT_LIMIT_S = 600


class ToolOutput(BaseModel):
    """What a read tool returns: the compact text and the ids it rests on."""

    text: str
    citations: list[str] = Field(description="ids of the records, passages or images used")


class OrderOutput(BaseModel):
    """Where a proposed order stands."""

    status: Literal["awaiting_approval", "written", "rejected", "failed"]
    thread_id: str
    call_id: str
    summary: str
    approve_with: str = Field(description="the API call a clinician uses to decide")
    text: str = ""
    citations: list[str] = Field(default_factory=list, description="what was written")


class _NoModel(BaseChatModel):
    """The MCP server runs no model: its threads only carry orders to the clinician."""

    @property
    def _llm_type(self) -> str:
        return "none"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise RuntimeError("the MCP server does not run a model")


@dataclass
class Backend:
    """What the tools use, opened in the server's lifespan."""

    settings: Settings
    patient: str | None
    user: str
    extra: Sequence[BaseTool]
    fhir: FhirClient | None = None
    tools: CopilotTools | None = None
    graph: Any = None
    audit: AuditLog | None = None

    @asynccontextmanager
    async def opened(self, fhir: FhirClient | None = None) -> AsyncIterator[Backend]:
        """Open clients and the thread store; nested opens (each HTTP session inside the
        process-wide open of `http_app`) share the outer one."""
        if self.graph is not None:
            yield self
            return
        async with AsyncExitStack() as stack:
            stack.callback(setattr, self, "graph", None)
            if fhir is None:
                fhir = FhirClient.from_settings(self.settings)
                stack.push_async_callback(fhir.aclose)
            saver = await stack.enter_async_context(open_checkpointer(self.settings))
            self.fhir, self.tools = fhir, CopilotTools(fhir, self.extra, self.settings)
            self.audit = AuditLog(self.settings.home / "audit.jsonl")
            if isinstance(fhir, FhirClient):
                fhir.on_drop(record_dropped(self.audit))
            self.graph = copilot_graph(_NoModel(), self.tools, checkpointer=saver)
            yield self

    def who(self, ctx: Context) -> str:
        headers = _headers(ctx)
        named = (headers or {}).get(USER_HEADER, "").strip()[:100]
        if named:
            return named
        return "token" if headers is not None and _token(self.settings) else self.user

    def patient_of(self, args: dict[str, Any]) -> str:
        patient = self.patient or str(args.pop("patient_id", ""))
        if not FHIR_ID.fullmatch(patient):
            raise ToolError(f"not a FHIR patient id: {patient!r}")
        return patient

    def record(self, ctx: Context, action: str, patient: str | None, **detail: Any) -> None:
        assert self.audit is not None
        self.audit.record(user=self.who(ctx), action=action, patient=patient, via="mcp", **detail)


def _headers(ctx: Context) -> dict[str, str] | None:
    try:
        headers = ctx.headers
    except (ValueError, AttributeError):
        return None
    return {k.lower(): v for k, v in headers.items()} if headers is not None else None


def _token(settings: Settings) -> str | None:
    token: Any = getattr(settings, "api_token", None)
    if token is not None and hasattr(token, "get_secret_value"):
        token = token.get_secret_value()
    return str(token) if token else None


# ------------------------------------------------------------------ tool plumbing

Run = Callable[[Context, dict[str, Any]], Awaitable[CallToolResult]]


def _arg_model(tool: BaseTool, extra: dict[str, Any]) -> type[ArgModelBase]:
    """The tool's own argument schema (hidden arguments left out) plus `extra` fields."""
    schema = tool.args_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    hidden = HIDDEN_ARGS.get(tool.name, frozenset())
    fields: dict[str, Any] = {k: v for k, v in extra.items() if k == "patient_id"}
    for name, info in schema.model_fields.items():
        if name not in hidden:
            fields[name] = (info.annotation, info)
    fields.update({k: v for k, v in extra.items() if k != "patient_id"})
    return create_model(f"{tool.name}_arguments", __base__=ArgModelBase, **fields)


def _mcp_tool(
    tool: BaseTool,
    extra: dict[str, Any],
    output: type[BaseModel],
    run: Run,
    *,
    description: str | None = None,
) -> Tool:
    arguments = _arg_model(tool, extra)

    async def call(ctx: Context, **kwargs: Any) -> CallToolResult:
        return await run(ctx, {k: v for k, v in kwargs.items() if v is not None})

    writes = needs_approval(tool)
    return Tool(
        fn=call,
        name=tool.name,
        title=None,  # the default, said: mypy reads the model's Field(None) as required
        description=description or tool.description,
        parameters=arguments.model_json_schema(by_alias=True),
        fn_metadata=FuncMetadata(arg_model=arguments, output_model=output),
        is_async=True,
        context_kwarg="ctx",
        annotations=ToolAnnotations(
            read_only_hint=not writes, destructive_hint=False, idempotent_hint=not writes
        ),
    )


def _result(out: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=out.model_dump()
    )


def _patient_field() -> tuple[Any, Any]:
    return (str, Field(description="the patient's FHIR id", pattern=FHIR_ID.pattern))


# ------------------------------------------------------------------ reads


def read_tool(backend: Backend, tool: BaseTool, patient_bound: bool) -> Tool:
    """A FHIR read (bound to the patient) or a guideline/image search, with citations."""

    async def run(ctx: Context, args: dict[str, Any]) -> CallToolResult:
        assert backend.tools is not None
        patient = backend.patient_of(args) if patient_bound else None
        live = backend.tools.by_name(patient or SPEC_PATIENT)[tool.name]
        call = {"name": tool.name, "args": args, "id": uuid.uuid4().hex, "type": "tool_call"}
        message = await live.ainvoke(call)
        text = str(message.content)
        refs = list(message.artifact or []) if isinstance(message.artifact, list) else []
        failed = text.startswith("Error")
        backend.record(ctx, tool.name, patient, resources=refs, args=args, refused=failed or None)
        if failed:  # other patients' records, bad references, unreachable servers
            raise ToolError(text)
        return _result(ToolOutput(text=text, citations=refs), text)

    extra = {"patient_id": _patient_field()} if patient_bound and backend.patient is None else {}
    return _mcp_tool(tool, extra, ToolOutput, run)


# ------------------------------------------------------------------ writes


def _config(thread: str, user: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "user": user}}


async def order_status(backend: Backend, thread: str, call_id: str) -> OrderOutput:
    """Where the order `call_id` of `thread` stands, from the thread store."""
    state = await backend.graph.aget_state(_config(thread, ANONYMOUS))
    pending = [i.value for i in state.interrupts if isinstance(i.value, dict)]
    proposal = next((p for p in pending if p.get("call_id") == call_id), None)
    out = OrderOutput(
        status="awaiting_approval",
        thread_id=thread,
        call_id=call_id,
        summary=str((proposal or {}).get("summary", "")),
        approve_with=f"POST /api/threads/{thread}/approvals/{call_id}",
    )
    for message in state.values.get("messages", []):
        if isinstance(message, ToolMessage) and message.tool_call_id == call_id:
            refs = message.artifact if isinstance(message.artifact, list) else []
            out.text, out.citations = str(message.content), list(refs)
            out.status = (
                "failed" if message.status == "error" else "written" if refs else "rejected"
            )
    return out


async def _propose(
    backend: Backend, ctx: Context, name: str, args: dict[str, Any]
) -> tuple[str, str]:
    """Put the order in a new copilot thread, stopped at the clinician's review."""
    assert backend.tools is not None and backend.fhir is not None
    patient = backend.patient_of(args)
    tool = backend.tools.by_name(patient)[name]
    try:
        checked = check_args(args, tool)
        line = render_resource(await backend.fhir.read(f"Patient/{patient}"))
    except Exception as exc:  # bad arguments or an unknown patient: the caller's to fix
        raise ToolError(str(exc)) from None
    thread, call_id, user = uuid.uuid4().hex, f"mcp-{uuid.uuid4().hex[:16]}", backend.who(ctx)
    asked = HumanMessage(f"Order proposed over MCP by {user}: {summarize(name, checked)}")
    call = AIMessage("", tool_calls=[{"name": name, "args": checked, "id": call_id}])
    update = {"patient_id": patient, "patient": line, "messages": [asked, call]}
    config = _config(thread, user)
    await backend.graph.aupdate_state(config, update, as_node="agent")
    await backend.graph.ainvoke(None, config)  # runs to the review interrupt; writes nothing
    backend.record(ctx, "propose_order", patient, thread=thread, tool=name, args=checked)
    return thread, call_id


def write_tool(backend: Backend, tool: BaseTool) -> Tool:
    """A write tool that proposes: the order waits in a thread for a clinician's decision."""

    async def run(ctx: Context, args: dict[str, Any]) -> CallToolResult:
        wait_s = float(args.pop("wait_s", 0))
        thread, call_id = await _propose(backend, ctx, tool.name, args)
        out = await order_status(backend, thread, call_id)
        waited = 0.0
        while out.status == "awaiting_approval" and waited < wait_s:
            await asyncio.sleep(0.5)
            waited += 0.5
            out = await order_status(backend, thread, call_id)
        return _result(out, json.dumps(out.model_dump()))

    wait = (float, Field(0, ge=0, le=WAIT_LIMIT_S, description="seconds to wait for a decision"))
    extra: dict[str, Any] = {"wait_s": wait}
    if backend.patient is None:
        extra["patient_id"] = _patient_field()
    described = (
        f"{tool.description} Nothing is written until a clinician approves the order through "
        "the wardround API (the result says how); `wait_s` waits for that decision."
    )
    return _mcp_tool(tool, extra, OrderOutput, run, description=described)


def status_tool(backend: Backend) -> Tool:
    async def order_status_tool(thread_id: str, call_id: str, ctx: Context) -> OrderOutput:
        """Where an order proposed earlier stands: awaiting_approval, written (with the
        written record's id), rejected or failed."""
        state = await backend.graph.aget_state(_config(thread_id, ANONYMOUS))
        patient = state.values.get("patient_id")
        if not patient or (backend.patient is not None and patient != backend.patient):
            raise ToolError(f"no order thread {thread_id!r} for this patient")
        backend.record(ctx, "order_status", patient, thread=thread_id)
        return await order_status(backend, thread_id, call_id)

    return Tool.from_function(order_status_tool, name="order_status")


# ------------------------------------------------------------------ the server


def build_server(
    settings: Settings,
    *,
    patient: str | None = None,
    user: str = "mcp",
    extra: Sequence[BaseTool] | None = None,
    fhir: FhirClient | None = None,
) -> MCPServer:
    """The MCP server; `extra` defaults to the image and guideline tools whose indexes hold
    something, `fhir` to a client from settings (opened when a session starts)."""
    if patient is not None and not FHIR_ID.fullmatch(patient):
        raise ValueError(f"not a FHIR patient id: {patient!r}")
    if extra is None:
        from wardround.tools.registry import extra_tools

        extra = extra_tools(settings)
    backend = Backend(settings, patient, user, list(extra))
    # The schemas only: the tools that run are rebuilt per call over the opened client.
    shapes = patient_bound(chart_tools(_SHAPES_ONLY, SPEC_PATIENT))
    tools = [
        *(read_tool(backend, t, True) for t in shapes if not needs_approval(t)),
        *(read_tool(backend, t, False) for t in backend.extra),
        *(write_tool(backend, t) for t in shapes if needs_approval(t)),
        status_tool(backend),
    ]

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Backend]:
        async with backend.opened(fhir) as opened:
            yield opened

    bound = f"Patient/{patient}" if patient else "the patient named in each call"
    server = MCPServer(
        "wardround",
        instructions=(
            f"Clinical record tools for {bound}. Results carry `citations`: the ids of the "
            "records, guideline passages and images they rest on; cite them. Orders are only "
            "proposed: a clinician approves them through the wardround API before anything "
            "is written."
        ),
        tools=tools,
        lifespan=lifespan,
        log_level="WARNING",
    )
    _BACKENDS[server] = (backend, fhir)
    return server


class BearerAuth:
    """ASGI wrapper: 401 unless `Authorization: Bearer <token>` (lifespan passes through)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            scheme, _, given = headers.get(b"authorization", b"").decode().partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                given.strip().encode(), self.token
            ):
                body = json.dumps({"detail": "missing or wrong bearer token"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer, settings: Settings) -> Any:
    """The streamable HTTP app at /mcp, behind the API token when one is set."""
    app = server.streamable_http_app(streamable_http_path="/mcp")
    backend, fhir = _BACKENDS[server]
    sessions = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(started: Any) -> AsyncIterator[None]:
        # One FHIR client and one thread-store pool for the process, not one per session.
        async with backend.opened(fhir), sessions(started):
            yield

    app.router.lifespan_context = lifespan
    token = _token(settings)
    return BearerAuth(app, token) if token else app
