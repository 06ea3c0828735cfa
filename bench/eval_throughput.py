"""Throughput of the evaluation runner at concurrency 1, 8 and 32.

A local OpenAI-compatible simulator (its own process, on loopback) answers every chat
completion after a fixed 200 ms, as a batching model server would under light load. The
AgentClinic task runs against it through the real `ChatOpenAI` client, with a scripted
doctor (a question, a test, a diagnosis: three completions per case). The goal: at least
20x the sequential throughput at concurrency 32, with results identical to the sequential
run (same answers, verdicts, turns and tests for every case).

    .venv/bin/python -m bench.eval_throughput [--samples 64] [--latency 0.2]

Prints a table and writes bench/out/eval_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from wardround.evals.data import load_jsonl
from wardround.evals.runner import RunResult, run_task
from wardround.evals.task import EvalEnv
from wardround.evals.tasks import agentclinic
from wardround.runtime.procs import free_port, stop_child
from wardround.settings import Settings

OUT = Path(__file__).parent / "out" / "eval_throughput.json"
LEVELS = (1, 8, 32)
GOAL = 20.0


def start_simulator(
    answers: dict[str, str], latency: float, workdir: Path
) -> tuple[subprocess.Popen, str]:
    answers_file = workdir / "answers.json"
    answers_file.write_text(json.dumps(answers))
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "wardround.testing.chat_simulator",
        "--port",
        str(port),
        "--latency",
        str(latency),
        "--doctor",
        str(answers_file),
    ]
    proc = subprocess.Popen(argv)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                return proc, base_url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the simulator did not start")


def outcome(result: RunResult) -> dict[str, tuple]:
    return {
        r.id: (
            r.answer,
            r.correct,
            r.trace.steps,
            tuple(r.trace.artifacts.get("tests", [])),
            r.error,
        )
        for r in result.records
    }


async def measure(base_url: str, settings: Settings, samples: list, workdir: Path) -> list[dict]:
    from langchain_openai import ChatOpenAI

    rows: list[dict] = []
    baseline: dict[str, tuple] | None = None
    for level in LEVELS:
        model = ChatOpenAI(
            base_url=base_url, model="sim", api_key="x", temperature=0, max_retries=0, timeout=60
        )
        task = agentclinic.bind(EvalEnv(settings=settings, model=model), samples)
        result = await run_task(
            task,
            model=f"sim-c{level}",
            results_path=workdir / f"c{level}.jsonl",
            concurrency=level,
            progress=False,
        )
        got = outcome(result)
        baseline = baseline or got
        completions = sum(r.trace.steps for r in result.records)
        rows.append(
            {
                "concurrency": level,
                "samples": result.n,
                "completions": completions,
                "wall_s": round(result.wall_s, 3),
                "samples_per_s": round(result.n / result.wall_s, 3),
                "accuracy": round(result.accuracy, 4),
                "errors": result.errors,
                "identical_to_sequential": got == baseline,
            }
        )
    first = rows[0]["samples_per_s"]
    for row in rows:
        row["speedup"] = round(row["samples_per_s"] / first, 2)
    return rows


def _table(rows: list[dict], latency: float) -> Table:
    table = Table(title=f"eval runner throughput ({latency * 1000:.0f} ms per completion)")
    for column in (
        "concurrency",
        "samples",
        "completions",
        "wall s",
        "samples/s",
        "speedup",
        "accuracy",
        "identical",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["concurrency"]),
            str(r["samples"]),
            str(r["completions"]),
            f"{r['wall_s']:.2f}",
            f"{r['samples_per_s']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['accuracy']:.1%}",
            "yes" if r["identical_to_sequential"] else "NO",
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=64, help="AgentClinic cases to run")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per completion")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("WARDROUND_BENCHMARK_DATA_DIR"),
        help="benchmark data folder (default: settings)",
    )
    args = parser.parse_args()
    settings = Settings(benchmark_data_dir=args.data_dir) if args.data_dir else Settings()
    samples = agentclinic.case_samples(load_jsonl("agentclinic/agentclinic_medqa.jsonl", settings))
    samples = samples[: args.samples]
    # the scripted doctor gets every other case right, so the verdicts vary
    answers = {s.input: s.target["diagnosis"] for i, s in enumerate(samples) if i % 2 == 0}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc, base_url = start_simulator(answers, args.latency, workdir)
        try:
            rows = asyncio.run(measure(base_url, settings, samples, workdir))
        finally:
            stop_child(proc)
    console = Console()
    console.print(_table(rows, args.latency))
    top = rows[-1]
    met = top["speedup"] >= GOAL and all(r["identical_to_sequential"] for r in rows)
    console.print(
        f"goal (>= {GOAL:.0f}x at concurrency {top['concurrency']}, identical results): "
        f"{'met' if met else 'NOT met'}"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"latency_s": args.latency, "goal_speedup": GOAL, "goal_met": met, "runs": rows},
            indent=2,
        )
    )
    console.print(f"wrote {OUT}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
