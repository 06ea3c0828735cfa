"""What every command shares: settings at the edge, one-line errors, the console."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from wardround.settings import Settings

console = Console()
err_console = Console(stderr=True)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with CLI options (those not None) on top."""
    values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)  # pydantic checks each value's type
    except ValidationError as err:
        fail(f"bad setting: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def clean_errors(*expected: type[BaseException]) -> Iterator[None]:
    """Turn the errors a user can act on into one line and a non-zero exit, no traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except expected as err:
        fail(str(err))


def progress_bar(label: str = "") -> Progress:
    """The one progress bar the commands show: label, bar, n/total, elapsed, what is current."""
    columns = [
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    ]
    if label:
        columns.insert(0, TextColumn(f"[bold]{label}"))
    return Progress(*columns, console=console, transient=True)
