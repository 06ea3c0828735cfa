"""The copilot's HTTP API and chat page: `create_app(settings)` -> a FastAPI app.

Everything the app needs (FHIR client, thread store, model, tools, audit log) is built in
its lifespan from `Settings`, unless passed in (tests pass an in-process FHIR server and a
scripted model). Errors are answered as `{"detail": "<message>"}` with a 4xx status for what
the client can fix and 502/503 for an upstream that failed; never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from starlette.exceptions import HTTPException as StarletteHTTPException

from wardround.fhir.client import FhirClient
from wardround.fhir.errors import FhirAuthError, FhirError, FhirNotFound, FhirUnavailable
from wardround.graphs.copilot import AuditLog, CopilotTools, copilot_graph, open_checkpointer
from wardround.graphs.copilot.audit import record_dropped
from wardround.graphs.copilot.graph import history_budget
from wardround.server.cds_hooks import install_cds_hooks
from wardround.server.routes import router
from wardround.server.service import ApiError, CopilotService
from wardround.server.smart import install_smart, smart_dependencies
from wardround.settings import Settings
from wardround.tools import registry

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def api_token(settings: Settings) -> str | None:
    token: Any = getattr(settings, "api_token", None)
    if token is not None and hasattr(token, "get_secret_value"):
        token = token.get_secret_value()
    return str(token) if token else None


def audit_path(settings: Settings) -> Path:
    return settings.home / "audit.jsonl"


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for item in exc.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(problems)


def _fhir_status(exc: FhirError) -> tuple[int, str]:
    if isinstance(exc, FhirNotFound):
        return 404, str(exc)
    if isinstance(exc, FhirUnavailable):
        return 503, f"the FHIR server is unavailable: {exc}"
    if isinstance(exc, FhirAuthError):
        return 502, f"the FHIR server refused our credentials: {exc}"
    if exc.status in (400, 422):
        return 400, str(exc)
    return 502, f"the FHIR server failed: {exc}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _detail(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _detail(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _detail(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(FhirError)
    async def fhir_error(_: Request, exc: FhirError) -> JSONResponse:
        return _detail(*_fhir_status(exc))

    @app.exception_handler(ValueError)
    async def value_error(_: Request, exc: ValueError) -> JSONResponse:
        return _detail(400, str(exc))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _detail(500, "internal error; the server log has the details")


# What every error answer looks like (see install_error_handlers), for the OpenAPI schema.
ERROR_BODY = {
    "title": "Error",
    "type": "object",
    "properties": {"detail": {"type": "string", "title": "Detail"}},
    "required": ["detail"],
}


def describe_errors(app: FastAPI) -> None:
    """Make the schema say what a 422 really holds: FastAPI documents its default list of
    validation errors, but our handler answers `{"detail": "<message>"}` like every error."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI on the app, so this edit is made once
        schema.get("components", {}).get("schemas", {})["HTTPValidationError"] = ERROR_BODY
        return schema

    # FastAPI's documented way to change the schema is to replace app.openapi; its types
    # declare a method.
    app.openapi = openapi  # type: ignore[method-assign]


@dataclass(frozen=True)
class Overrides:
    """Parts to use instead of building them from settings (tests, embedding applications)."""

    model: BaseChatModel | None = None
    fhir: FhirClient | None = None
    checkpointer: BaseCheckpointSaver | None = None
    extra_tools: Sequence[BaseTool] | None = None
    audit: AuditLog | None = None
    max_steps: int = 8


async def start_copilot(
    app: FastAPI, settings: Settings, given: Overrides, stack: AsyncExitStack
) -> None:
    """Build the copilot service into `app.state` (what is not given comes from settings)."""
    client = given.fhir
    if client is None:
        client = FhirClient.from_settings(settings)
        stack.push_async_callback(client.aclose)
    saver = given.checkpointer or await stack.enter_async_context(open_checkpointer(settings))
    chat = given.model
    if chat is None:
        chat = await asyncio.to_thread(_make_model, settings)
    extra = given.extra_tools
    if extra is None:
        extra = await asyncio.to_thread(registry.extra_tools, settings)
    tools = CopilotTools(client, list(extra), settings)
    audit = given.audit or AuditLog(audit_path(settings))
    if isinstance(client, FhirClient):  # other patients' records the client dropped
        client.on_drop(record_dropped(audit))
    graph = copilot_graph(
        chat,
        tools,
        checkpointer=saver,
        audit=audit,
        max_steps=given.max_steps,
        history_tokens=history_budget(settings.model_ctx, settings.max_tokens),
        chart=settings.copilot_chart,
    )
    app.state.copilot = CopilotService(graph, tools, audit)
    app.state.tool_names = [t.name for t in tools.for_model()]


async def health(request: Request) -> dict[str, Any]:
    state = request.app.state
    ready = hasattr(state, "copilot")
    return {"status": "ok" if ready else "starting", "tools": getattr(state, "tool_names", [])}


async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


def create_app(settings: Settings, **overrides: Any) -> FastAPI:
    """The API + page. Keyword arguments (see `Overrides`: model, fhir, checkpointer,
    extra_tools, audit, max_steps) replace what would be built from settings."""
    given = Overrides(**overrides)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await start_copilot(app, settings, given, stack)
            try:
                yield
            finally:
                await app.state.copilot.drain()

    app = FastAPI(
        title="wardround copilot API",
        version="0.1.0",
        description=(
            "Chat about one patient's chart; the agent reads FHIR records, images and "
            "guidelines, and proposes orders a clinician approves. Replies stream as "
            "server-sent events."
        ),
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.api_token = api_token(settings)
    install_error_handlers(app)
    describe_errors(app)
    # With SMART configured the launched patient binds every /api call (server/smart).
    app.include_router(router, dependencies=smart_dependencies(settings))
    install_smart(app, settings)
    install_cds_hooks(app, settings, audit=given.audit)
    app.add_api_route(
        "/api/health", health, methods=["GET"], summary="Liveness (no auth)", tags=["meta"]
    )
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _make_model(settings: Settings) -> BaseChatModel:
    from wardround.agents.embedded import ensure_model_server
    from wardround.agents.models import make_chat_model

    ensure_model_server(settings)
    return make_chat_model(settings)
