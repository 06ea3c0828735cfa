"""`stack up / status / down`: the FHIR server, its patients, the guideline and image indexes
and the embedded model, together."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import BaseModel

from wardround.agents.embedded import SERVICE as MODEL_SERVICE
from wardround.agents.embedded import ensure_server
from wardround.agents.presets import get_preset
from wardround.runtime.procs import running, stop_service
from wardround.settings import Settings
from wardround.stack import indexes as search_indexes
from wardround.stack import patients
from wardround.stack.fhir_server import SERVICE as FHIR_SERVICE
from wardround.stack.fhir_server import analyze, db_path, ensure_fhir_server


class FhirStatus(BaseModel):
    base_url: str
    up: bool
    patients: int | None = None


class ModelStatus(BaseModel):
    base_url: str | None
    up: bool
    name: str | None


class StackStatus(BaseModel):
    fhir: FhirStatus
    model: ModelStatus
    indexes: dict[str, int] | None = None  # what `up` indexed or found (guidelines, images)


def count_patients(base_url: str) -> int | None:
    try:
        response = httpx.get(f"{base_url}/Patient", params={"_summary": "count"}, timeout=10)
        response.raise_for_status()
        return int(response.json().get("total", 0))
    except (httpx.HTTPError, ValueError):
        return None


def status(settings: Settings) -> StackStatus:
    fhir = running(settings.run_dir, FHIR_SERVICE, "/metadata")
    model = running(settings.run_dir, MODEL_SERVICE, "/models")
    fhir_url = fhir.base_url if fhir else f"http://127.0.0.1:{settings.fhir_port}/fhir"
    return StackStatus(
        fhir=FhirStatus(
            base_url=fhir_url,
            up=fhir is not None,
            patients=count_patients(fhir_url) if fhir else None,
        ),
        model=ModelStatus(
            base_url=model.base_url if model else None,
            up=model is not None,
            name=str(model.info.get("preset")) if model else None,
        ),
    )


class Progress:
    """Callbacks `up` reports through, so the CLI can draw bars and tests can stay quiet."""

    def step(self, text: str) -> None: ...
    def patients(self, total: int) -> Callable[[Path], None]:
        return lambda _: None


def up(
    settings: Settings,
    n_patients: int = 5,
    seed: int = 42,
    *,
    model: str | None = None,
    progress: Progress | None = None,
    indexes: bool = True,
) -> tuple[StackStatus, list[str]]:
    """Start (or reuse) everything; returns the status and the seeded patients' ids.

    With `indexes`, the starter guideline corpus and the built-in images are indexed (once;
    reused after), so the copilot has guideline lookup and image search out of the box.
    """
    progress = progress or Progress()
    progress.step("FHIR server")
    fhir = ensure_fhir_server(settings)
    progress.step(f"synthetic patients (seed {seed})")
    bundles = patients.generate(settings, n_patients, seed)
    ledger_before = patients.loaded_ledger(settings)
    ledger = patients.load(settings, fhir.base_url, bundles, progress.patients(len(bundles)))
    if set(ledger) != set(ledger_before):
        progress.step("ANALYZE")
        analyze(db_path(settings))
    ids = [ledger[b.name] for b in bundles]
    counts = None
    if indexes:
        counts = search_indexes.ensure_indexes(settings, fhir.base_url, ids, progress.step)
    preset = get_preset(model or settings.model)
    if preset.backend == "embedded":
        progress.step(f"model server ({preset.name})")
        ensure_server(preset, settings)
    return status(settings).model_copy(update={"indexes": counts}), ids


def down(settings: Settings) -> dict[str, bool]:
    return {name: stop_service(settings.run_dir, name) for name in (MODEL_SERVICE, FHIR_SERVICE)}


def seeded_patient_ids(settings: Settings) -> list[str]:
    return [pid for pid in patients.loaded_ledger(settings).values() if pid]
