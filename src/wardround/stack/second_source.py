"""A second, independent source of synthetic patients: clinosim, in its own SEKMET server.

PySynthea (`stack/patients.py`) writes whole-life outpatient records. clinosim (`pip install
clinosim`, MIT) simulates hospital stays from physiology: one admission per patient, with
labs and vitals several times a day (LOINC), problem-list and admission diagnoses (ICD-10),
inpatient and discharge prescriptions (RxNorm), procedures and encounters, written as FHIR R4
bulk NDJSON. Charts of another shape, from another generator, with answers computed by the
same code, check that an accuracy figure is not a fact about one generator.

    python -m wardround.stack.second_source up [-n 10] [--seed 7]   # generate, serve, load
    python -m wardround.stack.second_source down

`up` starts SEKMET under its own home (`~/.wardround/second_source`, a free port), so the
stack's own server and patients are untouched, and prints the base URL; point
`WARDROUND_FHIR_BASE_URL` at it to run `wardround eval run ehrqa` on these patients.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from wardround.settings import Settings

# The admissions simulated, in turn: common medical reasons for a stay whose protocols give
# labs, vitals, diagnoses and prescriptions.
DISEASES = (
    "heart_failure_exacerbation",
    "bacterial_pneumonia",
    "copd_exacerbation",
    "diabetic_ketoacidosis",
    "acute_kidney_injury",
    "atrial_fibrillation_rvr",
    "cellulitis",
    "sepsis",
    "gi_bleeding",
    "pulmonary_embolism",
)
# Loaded first, so references to them resolve; then the patients' records.
SHARED_TYPES = ("Organization", "Location", "Practitioner", "PractitionerRole", "Endpoint")
PATIENT_TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Procedure",
    "AllergyIntolerance",
    "Immunization",
)
SERVICE_HOME = "second_source"


class SecondSourceError(RuntimeError):
    """Generating or loading the clinosim patients failed; the message says which and why."""


def home_of(settings: Settings) -> Path:
    return settings.home / SERVICE_HOME


def generate(out: Path, n: int, seed: int = 7) -> Path:
    """Write (or reuse) N clinosim patients as FHIR NDJSON under `out`; returns the folder of
    merged `<Type>.ndjson` files. One patient per disease in turn, each run with its own seed."""
    merged = out / "fhir"
    if (merged / "Patient.ndjson").exists() and _count_lines(merged / "Patient.ndjson") >= n:
        return merged
    clinosim = Path(sys.executable).with_name("clinosim")
    runs: list[Path] = []
    for i in range(n):
        disease = DISEASES[i % len(DISEASES)]
        run = out / "runs" / f"{i:03d}-{disease}"
        if not (run / "fhir_r4" / "Patient.ndjson").exists():
            argv = [str(clinosim), "test-disease", disease, "-n", "1", "-s", str(seed + i),
                    "--format", "fhir-r4", "-o", str(run)]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not (run / "fhir_r4" / "Patient.ndjson").exists():
                raise SecondSourceError(
                    f"clinosim failed for {disease} (exit {done.returncode}): "
                    f"{(done.stderr or done.stdout)[-500:]}"
                )
        runs.append(run / "fhir_r4")
    merge(runs, merged)
    return merged


def _retag(node: Any, ids: dict[str, str]) -> Any:
    """`node` with every reference to a renamed resource pointing at its new id."""
    if isinstance(node, dict):
        out = {k: _retag(v, ids) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in ids:
            out["reference"] = ids[ref]
        return out
    if isinstance(node, list):
        return [_retag(v, ids) for v in node]
    return node


def merge(runs: Iterable[Path], merged: Path) -> None:
    """One `<Type>.ndjson` per type from several runs. clinosim names a run's patients and
    their records by position (FORCED-0001 in every run), so each run's own resources get the
    run's prefix (`r03-pt-...`, references and MRN too); shared ones (practitioners, the
    hospital) recur in every run and are kept once."""
    merged.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, dict[str, dict[str, Any]]] = {}
    for i, run in enumerate(runs):
        rows = [
            json.loads(line)
            for path in sorted(run.glob("*.ndjson"))
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        tag = f"r{i:02d}-"
        ids = {
            f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{tag}{r['id']}"
            for r in rows
            if r["resourceType"] not in SHARED_TYPES
        }
        for r in rows:
            if r["resourceType"] not in SHARED_TYPES:
                r = _retag(r, ids) | {"id": tag + r["id"]}
            if r["resourceType"] == "Patient":
                for ident in r.get("identifier") or []:
                    if ident.get("value"):
                        ident["value"] = tag + str(ident["value"])
            by_type.setdefault(r["resourceType"], {}).setdefault(r["id"], r)
    for rtype, by_id in by_type.items():
        text = "".join(json.dumps(r) + "\n" for r in by_id.values())
        (merged / f"{rtype}.ndjson").write_text(text)


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def read_ndjson(folder: Path, rtype: str) -> list[dict[str, Any]]:
    path = folder / f"{rtype}.ndjson"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction that PUTs each resource at its own id (references between them hold)."""
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def load(fhir: Any, folder: Path, chunk: int = 500) -> dict[str, Any]:
    """Load the NDJSON folder through a FhirClient (any server). Types that a strict server
    refuses as a whole are retried one resource at a time and the refused ones skipped (clinosim
    writes a few shapes SEKMET's R4 validation rejects: DiagnosticReport codes with trailing
    spaces, a MedicationAdministration timing). Returns {loaded: {type: n}, refused: {type: n},
    patients: [ids]}."""
    from wardround.fhir.errors import FhirError

    loaded: dict[str, int] = {}
    refused: dict[str, int] = {}
    for rtype in (*SHARED_TYPES, *PATIENT_TYPES):
        rows = read_ndjson(folder, rtype)
        for part in _chunks(rows, chunk):
            try:
                await fhir.transaction(_bundle(part))
                loaded[rtype] = loaded.get(rtype, 0) + len(part)
            except FhirError:
                for r in part:
                    try:
                        await fhir.transaction(_bundle([r]))
                        loaded[rtype] = loaded.get(rtype, 0) + 1
                    except FhirError:
                        refused[rtype] = refused.get(rtype, 0) + 1
    patients = sorted(str(p["id"]) for p in read_ndjson(folder, "Patient"))
    return {"loaded": loaded, "refused": refused, "patients": patients}


def server_settings(settings: Settings) -> Settings:
    """Settings of the second server: its own home and a free port (kept once chosen)."""
    from wardround.runtime.procs import free_port

    home = home_of(settings)
    home.mkdir(parents=True, exist_ok=True)
    port_file = home / "port"
    if not port_file.exists():
        port_file.write_text(str(free_port()))
    port = int(port_file.read_text())
    return settings.model_copy(
        update={"home": home, "fhir_port": port, "fhir_base_url": f"http://127.0.0.1:{port}/fhir"}
    )


def up(settings: Settings, n: int, seed: int = 7) -> dict[str, Any]:
    """Generate N patients, start the second SEKMET, load them, ANALYZE. Returns the base URL,
    the patient ids and what was loaded or refused."""
    import asyncio

    from wardround.fhir.client import FhirClient
    from wardround.stack.fhir_server import analyze, db_path, ensure_fhir_server

    second = server_settings(settings)
    folder = generate(home_of(settings) / "data" / f"seed{seed}-n{n}", n, seed)
    record = ensure_fhir_server(second)
    marker = home_of(settings) / f"loaded-seed{seed}-n{n}.json"
    if marker.exists():
        return json.loads(marker.read_text())

    async def _load() -> dict[str, Any]:
        async with FhirClient(record.base_url, timeout=600) as fhir:
            return await load(fhir, folder)

    report = asyncio.run(_load())
    analyze(db_path(second))
    report["base_url"] = record.base_url
    marker.write_text(json.dumps(report, indent=1))
    return report


def down(settings: Settings) -> bool:
    from wardround.runtime.procs import stop_service
    from wardround.stack.fhir_server import SERVICE

    return stop_service(server_settings(settings).run_dir, SERVICE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="generate, serve and load the clinosim patients")
    start.add_argument("-n", type=int, default=10)
    start.add_argument("--seed", type=int, default=7)
    sub.add_parser("down", help="stop the second FHIR server")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "up":
        print(json.dumps(up(settings, args.n, args.seed), indent=1))
    else:
        print("stopped" if down(settings) else "not running")


if __name__ == "__main__":
    main()
