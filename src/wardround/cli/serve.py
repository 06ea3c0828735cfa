"""`wardround serve vllm` (how to serve a preset on a GPU), `serve mcp` and `serve cds`."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import typer

from wardround.agents.presets import get_preset
from wardround.agents.vllm import vllm_argv
from wardround.cli.common import clean_errors, fail

app = typer.Typer(help="Serve models (vLLM on a GPU) and the wardround HTTP API.")


@app.command()
def vllm(
    model: str = typer.Option("medgemma-4b", help="preset to serve"),
    port: int = typer.Option(8000, help="port of the OpenAI-compatible server"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    max_model_len: int = typer.Option(16384, help="context length"),
    run: bool = typer.Option(False, "--run", help="run the command (needs vllm and a GPU)"),
) -> None:
    """Print (or --run) the `vllm serve` command for a preset, with wardround's chat template."""
    with clean_errors(ValueError):
        argv = vllm_argv(get_preset(model), port=port, host=host, max_model_len=max_model_len)
    typer.echo(shlex.join(argv))
    if run:
        if shutil.which("vllm") is None:
            fail("vllm is not installed here (pip install vllm, on a machine with a GPU)")
        raise typer.Exit(subprocess.call(argv))


@app.command()
def mcp(
    patient: str | None = typer.Option(
        None, help="bind every tool to this patient (default: each call names its patient)"
    ),
    transport: str = typer.Option("stdio", help="stdio (a local client) or http"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (http)"),
    port: int = typer.Option(8200, min=1, max=65535, help="port to listen on (http)"),
    user: str = typer.Option("mcp", help="who the audit log names for this client (stdio)"),
) -> None:
    """Serve the copilot's tools over MCP: patient-bound record reads, guideline lookup and
    image search with citation ids, and orders that wait for a clinician's approval in the
    API (nothing is written from an MCP call alone). HTTP serves /mcp, behind
    WARDROUND_API_TOKEN when set."""
    from wardround.cli.api import _is_loopback
    from wardround.cli.common import err_console, load_settings
    from wardround.graphs.copilot.checkpoint import CheckpointConfigError, check_checkpointer

    if transport not in ("stdio", "http"):
        fail(f"unknown transport {transport!r}: use stdio or http")
    settings = load_settings()
    with clean_errors(CheckpointConfigError):
        check_checkpointer(settings)
    from wardround.server.mcp_server import _token, build_server, http_app

    if transport == "http" and not _is_loopback(host) and _token(settings) is None:
        fail(f"refusing to listen on {host} without a token: set WARDROUND_API_TOKEN")
    with clean_errors(ValueError):
        server = build_server(settings, patient=patient, user=user)
    if transport == "stdio":  # stdout is the protocol: nothing else may be printed there
        server.run("stdio")
        return
    import uvicorn

    err_console.print(f"MCP (streamable HTTP) on http://{host}:{port}/mcp", highlight=False)
    try:
        uvicorn.run(http_app(server, settings), host=host, port=port, log_level="warning")
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")


@app.command()
def cds(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8300, min=1, max=65535, help="port to listen on"),
) -> None:
    """Serve the CDS Hooks service alone (/cds-services: patient-view, order-select,
    order-sign, feedback), without the copilot or a model. EHRs are trusted per
    WARDROUND_CDS_TRUSTED_ISSUERS (iss -> JWKS URL); see docs/ehr-integration.md."""
    from wardround.cli.api import _is_loopback
    from wardround.cli.common import err_console, load_settings
    from wardround.server.cds_hooks import create_cds_app

    settings = load_settings()
    if not settings.cds_require_jwt and not _is_loopback(host):
        fail(
            f"refusing to serve cards without JWT checks on {host}: unset WARDROUND_CDS_REQUIRE_JWT"
        )
    cds_app = create_cds_app(settings)
    err_console.print("finding the rules' guideline passages ...", highlight=False)
    cds_app.state.cds_hooks.warm()  # the first hook is then answered without loading a model
    import uvicorn

    err_console.print(f"CDS Hooks discovery on http://{host}:{port}/cds-services", highlight=False)
    try:
        uvicorn.run(cds_app, host=host, port=port, log_level="warning")
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")
