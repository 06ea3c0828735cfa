"""The `wardround` command: one typer app, one sub-app per module."""

from __future__ import annotations

import sys

import typer

from wardround.cli import api, ask, doctor, eval, guidelines, images, serve, stack
from wardround.cli.common import err_console

app = typer.Typer(
    name="wardround",
    help="Agentic clinical workflows over FHIR records, medical images and guidelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
serve.app.command("api")(api.serve_api)
app.add_typer(serve.app, name="serve")
app.add_typer(images.app, name="images")
app.add_typer(guidelines.app, name="guidelines")
app.add_typer(eval.app, name="eval")
app.command("ask")(ask.ask)
app.command("doctor")(doctor.doctor)


def main() -> None:
    # Bytes that are not UTF-8 reach Python as lone surrogates, which fail deep inside
    # tokenizers and HTTP clients; refuse them here, once, for every command.
    for position, arg in enumerate(sys.argv[1:], start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape")[:60]
            err_console.print(
                f"[bold red]error:[/] argument {position} is not UTF-8 text: {shown!r}",
                highlight=False,
            )
            raise SystemExit(2) from None
    app()
