"""Synthetic patients: PySynthea bundles, cached per seed, loaded into the FHIR server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from wardround.settings import Settings

# "Patient/<id>", "Patient/<id>/_history/1" or an absolute URL ending so.
_PATIENT_LOCATION = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/|$)")
# A fixed reference date keeps every generated chart, and every computed answer, reproducible.
REFERENCE_DATE = "20260101"
AGE_RANGE = "40-80"


class PatientLoadError(RuntimeError):
    """Generating or loading synthetic patients failed; the message says which and why."""


def bundle_dir(settings: Settings, n: int, seed: int) -> Path:
    return settings.cache_dir / "synthea" / f"seed{seed}-n{n}-ref{REFERENCE_DATE}"


def generate(settings: Settings, n: int, seed: int) -> list[Path]:
    """Write (or reuse) N transaction bundles for this seed; one file per patient."""
    out = bundle_dir(settings, n, seed)
    files = sorted((out / "fhir").glob("*.json"))
    if len(files) >= n:
        return files[:n]
    log = settings.home / "logs" / "synthea.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    synthea = Path(sys.executable).with_name("synthea")
    argv = [str(synthea), "-p", str(n), "-s", str(seed), "-a", AGE_RANGE,
            "-r", REFERENCE_DATE, "-o", str(out)]  # fmt: skip
    with log.open("ab") as handle:
        done = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, check=False)
    files = sorted((out / "fhir").glob("*.json"))
    if done.returncode != 0 or len(files) < n:
        raise PatientLoadError(
            f"synthea made {len(files)} of {n} patients (exit {done.returncode}); log: {log}"
        )
    return files[:n]


def patient_id_of(bundle: dict) -> str | None:
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Patient":
            return resource.get("id")
    return None


def _ledger_path(settings: Settings) -> Path:
    return settings.home / "fhir" / "loaded.json"


def loaded_ledger(settings: Settings) -> dict[str, str]:
    """Bundle file name -> Patient id, for bundles already in this home's FHIR database."""
    path = _ledger_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_ledger(settings: Settings, ledger: dict[str, str]) -> None:
    path = _ledger_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger, indent=1))
    tmp.replace(path)


def _server_patient_id(response: httpx.Response) -> str | None:
    """The id the server gave the Patient (a transaction may reassign ids)."""
    for entry in response.json().get("entry", []):
        location = (entry.get("response") or {}).get("location", "")
        found = _PATIENT_LOCATION.search(location)
        if found:
            return found.group(1)
    return None


def load(
    settings: Settings,
    base_url: str,
    bundles: list[Path],
    on_done: Callable[[Path], None] = lambda _: None,
) -> dict[str, str]:
    """POST each bundle not yet loaded as a transaction. Returns the whole ledger."""
    ledger = loaded_ledger(settings)
    log = settings.home / "logs" / "load.log"
    with httpx.Client(timeout=600) as client:
        for path in bundles:
            if path.name in ledger:
                on_done(path)
                continue
            body = path.read_bytes()
            response = client.post(
                base_url, content=body, headers={"Content-Type": "application/fhir+json"}
            )
            if response.status_code >= 400:
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(f"{path}\n{response.status_code}\n{response.text[:20000]}\n")
                raise PatientLoadError(
                    f"the FHIR server refused {path.name} (HTTP {response.status_code}); log: {log}"
                )
            pid = _server_patient_id(response) or patient_id_of(json.loads(body)) or ""
            ledger[path.name] = pid
            _save_ledger(settings, ledger)  # after each bundle: a killed load resumes
            on_done(path)
    return ledger
