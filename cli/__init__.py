"""The `wardround` command: one typer app, one sub-app per module."""

from __future__ import annotations

import typer

from . import api, ask, doctor, eval, guidelines, images, serve, stack

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
    app()
