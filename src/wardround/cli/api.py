"""`wardround serve api`: the copilot's HTTP API and chat page."""

from __future__ import annotations

import ipaddress

import httpx
import typer

from wardround.cli.common import clean_errors, console, err_console, fail, load_settings

LOOPBACK_NAMES = {"localhost"}


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fhir_reachable(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/metadata", timeout=5).status_code < 500
    except httpx.HTTPError:
        return False


def serve_api(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8100, min=1, max=65535, help="port to listen on"),
    model: str | None = typer.Option(None, help="model preset (default: the configured one)"),
    fhir_url: str | None = typer.Option(None, help="FHIR base URL (default: the local stack's)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve the copilot API and its chat page (open http://HOST:PORT/ in a browser).

    Threads are kept in <home>/copilot.sqlite (or Postgres: WARDROUND_CHECKPOINT_URL), every
    FHIR access is logged to <home>/audit.jsonl. Set WARDROUND_API_TOKEN to require a bearer
    token; listening beyond this machine needs one.
    """
    import uvicorn

    from wardround.agents.embedded import ensure_model_server
    from wardround.agents.models import ModelSpec, make_chat_model
    from wardround.graphs.copilot.checkpoint import (
        CheckpointConfigError,
        check_checkpointer,
        describe,
    )
    from wardround.server.app import api_token, audit_path, create_app

    settings = load_settings(model=model, fhir_base_url=fhir_url)
    if not _is_loopback(host) and api_token(settings) is None:
        fail(
            f"refusing to listen on {host} without a token: set WARDROUND_API_TOKEN "
            "(or listen on 127.0.0.1)"
        )
    with clean_errors(CheckpointConfigError):
        check_checkpointer(settings)
    if not _fhir_reachable(settings.fhir_base_url):
        err_console.print(
            f"[yellow]warning:[/] no FHIR server answers at {settings.fhir_base_url} "
            "(start the local one with `wardround stack up`)",
            highlight=False,
        )
    with (
        console.status(f"starting model {settings.model}"),
        clean_errors(ValueError, RuntimeError, OSError),
    ):
        ensure_model_server(settings)
        chat = make_chat_model(settings)
    console.print(
        f"copilot API on [bold]http://{host}:{port}/[/]  model {ModelSpec(settings).name}  "
        f"FHIR {settings.fhir_base_url}\nthreads {describe(settings)}  audit {audit_path(settings)}"
        f"  auth {'bearer token' if api_token(settings) else 'none'}",
        highlight=False,
    )
    try:
        uvicorn.run(create_app(settings, model=chat), host=host, port=port, log_level=log_level)
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")
