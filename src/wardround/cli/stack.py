"""`wardround stack up|status|down`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import typer
from rich.progress import Progress

from wardround.cli.common import clean_errors, console, load_settings, progress_bar
from wardround.runtime import procs
from wardround.runtime.procs import ServiceError
from wardround.settings import Settings
from wardround.stack import local
from wardround.stack.patients import PatientLoadError

app = typer.Typer(
    help="The local stack: FHIR server with synthetic patients, guideline and image indexes, "
    "embedded model."
)


class _Bars(local.Progress):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def step(self, text: str) -> None:
        self.progress.console.print(f"[cyan]•[/] {text}")

    def patients(self, total: int) -> Callable[[Path], None]:
        task = self.progress.add_task("loading patients", total=total)
        return lambda _: self.progress.advance(task)


@app.command()
def up(
    patients: int = typer.Option(5, "--patients", "-n", min=1, help="synthetic patients to seed"),
    seed: int = typer.Option(
        42, "--seed", "-s", help="PySynthea seed (bundles are cached per seed)"
    ),
    model: str | None = typer.Option(None, help="embedded model preset to serve"),
    indexes: bool = typer.Option(
        True, help="index the starter guidelines and built-in images (once; reused after)"
    ),
) -> None:
    """Start the FHIR server, seed patients, index guidelines and images, start the embedded
    model server (reuses what runs and what is indexed)."""
    settings = load_settings(model=model)
    started = time.monotonic()
    with (
        clean_errors(ServiceError, PatientLoadError, httpx.HTTPError, RuntimeError, ValueError),
        progress_bar() as progress,
    ):
        status, ids = local.up(
            settings, patients, seed, model=model, progress=_Bars(progress), indexes=indexes
        )
    console.print(
        f"[green]up[/] in {time.monotonic() - started:.1f} s  FHIR {status.fhir.base_url} "
        f"({status.fhir.patients} patients)  model {status.model.name} {status.model.base_url or ''}"
    )
    console.print(f"seeded patients: {' '.join(ids)}", highlight=False)
    if status.indexes:
        found = status.indexes
        console.print(
            f"indexes: {found['guideline_passages']} guideline passages, {found['images']} "
            f"images ({found['linked_images']} linked to a seeded patient's imaging study) "
            f"in {settings.chroma_dir}",
            highlight=False,
        )


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """What runs: the FHIR server (and how many patients it holds), the model server, and any
    process this home started that no record names (an orphan)."""
    settings = load_settings()
    current = local.status(settings)
    busy = _busy(settings)
    orphans = procs.orphans(settings.run_dir)
    if as_json:
        body = current.model_dump()
        body["busy"] = busy
        body["orphans"] = [o.model_dump() for o in orphans]
        typer.echo(json.dumps(body))
        return
    fhir, model = current.fhir, current.model
    console.print(
        f"FHIR  {_state(fhir.up, 'fhir' in busy)}  {fhir.base_url}"
        + (f"  {fhir.patients} patients" if fhir.up and fhir.patients is not None else "")
    )
    console.print(
        f"model {_state(model.up, 'model' in busy)}  "
        + (f"{model.name} {model.base_url}" if model.up else "")
    )
    for orphan in orphans:
        console.print(
            f"[yellow]orphan[/] {orphan.service} pid {orphan.pid}: {orphan.command[:120]} "
            "(no record names it; `wardround stack down` stops it)",
            highlight=False,
        )


def _busy(settings: Settings) -> list[str]:
    """Services whose process lives but whose ready URL did not answer (working, not dead)."""
    from wardround.agents.embedded import SERVICE as MODEL
    from wardround.stack.fhir_server import SERVICE as FHIR

    run_dir = settings.run_dir
    found = []
    for name, suffix in ((FHIR, "/metadata"), (MODEL, "/models")):
        record = procs.running(run_dir, name, suffix)
        if record is not None and record.busy:
            found.append(name)
    return found


def _state(up: bool, busy: bool) -> str:
    if not up:
        return "[red]down[/]"
    return "[yellow]busy[/] (alive, not answering yet)" if busy else "[green]up[/]"


@app.command()
def down() -> None:
    """Stop what `up` started, by process group, and any orphan this home's services left."""
    settings = load_settings()
    stopped = local.down(settings)
    for name, was in stopped.items():
        console.print(f"{name}: {'stopped' if was else 'was not running'}")
    for orphan in procs.stop_orphans(settings.run_dir):
        console.print(f"orphan {orphan.service} pid {orphan.pid}: stopped", highlight=False)


@app.command("patients")
def list_patients() -> None:
    """The ids of the seeded patients."""
    for pid in local.seeded_patient_ids(load_settings()):
        typer.echo(pid)
