"""SEKMET, a FHIR 4.0.1 server (FastAPI + SQLite), run on loopback as a background process."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import yaml

from wardround.runtime.procs import ServiceError, ServiceRecord, port_taken, running, start_service
from wardround.settings import Settings

SERVICE = "fhir"


def fhir_dir(settings: Settings) -> Path:
    return settings.home / "fhir"


def db_path(settings: Settings) -> Path:
    return fhir_dir(settings) / "sekmet.db"


def write_config(settings: Settings) -> Path:
    """SEKMET settings: loopback, no simulator (it invents resources), strict validation."""
    base = fhir_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    config = {
        "base_url": f"http://127.0.0.1:{settings.fhir_port}/fhir",
        "host": "127.0.0.1",
        "port": settings.fhir_port,
        "data_dir": str(base),
        "db_path": str(db_path(settings)),
        "simulator": {"enabled": False},
        "validation": {"inbound": "strict"},
        "log_inbound": False,
    }
    path = base / "settings.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def ensure_fhir_server(settings: Settings) -> ServiceRecord:
    """Reuse the running SEKMET of this home, or start one. Raises ServiceError."""
    current = running(settings.run_dir, SERVICE, "/metadata")
    if current is not None:
        return current
    if port_taken(settings.fhir_port):
        raise ServiceError(
            f"port {settings.fhir_port} is taken by another process; free it or set "
            f"WARDROUND_FHIR_PORT; log: {settings.home / 'logs' / 'fhir.log'}"
        )
    config = write_config(settings)
    base_url = f"http://127.0.0.1:{settings.fhir_port}/fhir"
    sekmet = Path(sys.executable).with_name("sekmet")
    return start_service(
        SERVICE,
        [str(sekmet), "serve", "-c", str(config)],
        run_dir=settings.run_dir,
        base_url=base_url,
        ready_url=f"{base_url}/metadata",
        log=settings.home / "logs" / "fhir.log",
        timeout_s=90,
        env={"SEKMET_CONFIG": str(config)},
        cwd=fhir_dir(settings),
        info={"port": settings.fhir_port, "db": str(db_path(settings))},
    )


def analyze(db: Path) -> None:
    """Refresh SQLite's planner statistics; without them `_sort=-date` searches take seconds."""
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("ANALYZE")
