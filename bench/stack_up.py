"""Stack-up time from cold and warm, and patients loaded per second.

    python -m bench.stack_up [--patients 10] [--seed 42]

Cold: a new home (no FHIR database, no cached bundles, no model server): generation,
load, ANALYZE and both servers. Cached bundles: a new home again, but the PySynthea bundles
come from the first run's cache, so the load rate is measured on its own. Warm: `up` again
on the running stack. All three in one run, on the same machine state.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from wardround.runtime.procs import free_port
from wardround.settings import Settings
from wardround.stack import local, patients


class _Timer(local.Progress):
    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def step(self, text: str) -> None:
        self.marks.append((text, time.perf_counter()))


def _run(settings: Settings, n: int, seed: int) -> tuple[float, _Timer]:
    timer = _Timer()
    started = time.perf_counter()
    local.up(settings, n, seed, progress=timer)
    return time.perf_counter() - started, timer


def _phase(timer: _Timer, start: str, end: str | None, finished: float) -> float:
    times = dict(timer.marks)
    first = next(t for k, t in times.items() if k.startswith(start))
    last = next((t for k, t in times.items() if end and k.startswith(end)), finished)
    return last - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wardround-bench-"))
    results: dict[str, float] = {}
    try:
        cold = Settings(home=root / "cold", fhir_port=free_port())
        t0 = time.perf_counter()
        results["cold_s"], timer = _run(cold, args.patients, args.seed)
        end = t0 + results["cold_s"]
        results["cold_generate_and_load_s"] = _phase(timer, "synthetic", "ANALYZE", end)
        results["warm_s"], _ = _run(cold, args.patients, args.seed)
        local.down(cold)

        cached = Settings(home=root / "cached", fhir_port=free_port())
        shutil.copytree(cold.cache_dir / "synthea", cached.cache_dir / "synthea")
        bundles = patients.generate(cached, args.patients, args.seed)
        from wardround.stack.fhir_server import ensure_fhir_server

        server = ensure_fhir_server(cached)
        t1 = time.perf_counter()
        patients.load(cached, server.base_url, bundles)
        load_s = time.perf_counter() - t1
        results["load_s"] = load_s
        results["patients_per_s"] = args.patients / load_s
        results["resources_per_s"] = (
            sum(len(json.loads(b.read_text()).get("entry", [])) for b in bundles) / load_s
        )
        local.down(cached)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    table = Table(title=f"stack up, {args.patients} patients (seed {args.seed})")
    for key in (
        "cold_s",
        "cold_generate_and_load_s",
        "warm_s",
        "load_s",
        "patients_per_s",
        "resources_per_s",
    ):
        table.add_row(key, f"{results[key]:.2f}")
    Console().print(table)
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "stack_up.json").write_text(json.dumps({"patients": args.patients, **results}, indent=2))


if __name__ == "__main__":
    main()
