"""The real local stack for integration tests: started in a temporary home, stopped by pid."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from wardround.runtime.procs import free_port
from wardround.settings import Settings
from wardround.stack import local

N_PATIENTS = 3
SEED = 7


@dataclass
class LiveStack:
    settings: Settings
    patient_ids: list[str]
    status: local.StackStatus

    @property
    def fhir_url(self) -> str:
        return self.status.fhir.base_url


def live_settings(home: Path, **extra: object) -> Settings:
    return Settings(home=home, fhir_port=free_port(), model_port=0, **extra)  # type: ignore[arg-type]


@contextmanager
def live_stack(home: Path, n: int = N_PATIENTS, seed: int = SEED) -> Iterator[LiveStack]:
    settings = live_settings(home)
    try:
        status, ids = local.up(settings, n, seed)
        yield LiveStack(
            settings.model_copy(update={"fhir_base_url": status.fhir.base_url}), ids, status
        )
    finally:
        local.down(settings)
