"""EHR QA accuracy and latency of each embedded preset on the same questions, one table.

    .venv/bin/python -m bench.ehrqa_presets [--presets a,b] [-n 100] [--phrasing template|paraphrase]
        [--graph planner|loop]

Each preset runs through the eval suite (`wardround eval run ehrqa`), one embedded server at a
time, against the stack that is up (`wardround stack up`); runs resume, so an interrupted
bench continues. Reports accuracy with its Wilson 95% interval, accuracy per category, p50 and
p95 latency per question and the median prompt tokens, as a table on the console and in
`bench/out/ehrqa_presets.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from wardround.agents.presets import PRESETS as MODEL_PRESETS
from wardround.evals import suite
from wardround.evals.results import SampleRecord, read_samples
from wardround.evals.runner import load_records, stratified
from wardround.evals.stats import wilson
from wardround.settings import DEFAULT_MODEL, Settings

OUT = Path(__file__).parent / "out"
# Every embedded preset, the default first.
PRESETS = ",".join(
    sorted((p.name for p in MODEL_PRESETS.values() if p.backend == "embedded"),
           key=lambda name: name != DEFAULT_MODEL)
)  # fmt: skip


async def run_preset(preset: str, n: int, options: dict[str, str]) -> list[SampleRecord]:
    settings = Settings(model=preset)
    task = suite.get_task("ehrqa")
    root = suite.runs_root(settings)
    async with suite.eval_env(task, settings, preset=preset, options=options) as env:
        result, _ = await suite.run_eval(
            task, env, preset=preset, root=root, limit=n, concurrency=1, timeout_s=900
        )
    # One results file holds every dataset's samples of this run (ids differ): keep this one's.
    samples = read_samples(suite.Layout(root, task.name, options).samples)
    wanted = {s.id for s in stratified(samples, n)}
    return [r for r in load_records(result.path).values() if r.id in wanted]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def row(preset: str, records: list[SampleRecord]) -> dict[str, Any]:
    ok = [bool(r.correct) for r in records]
    acc = wilson(sum(ok), len(ok))
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        by_cat[r.category].append(bool(r.correct))
    latency = [r.trace.latency_s for r in records]
    prompts = [r.trace.tokens.get("prompt", 0) for r in records]
    return {
        "preset": preset,
        "n": len(ok),
        "accuracy": acc.p,
        "ci95": [acc.lo, acc.hi],
        "errors": sum(1 for r in records if r.error),
        "by_category": {c: sum(v) / len(v) for c, v in sorted(by_cat.items())},
        "p50_s": percentile(latency, 0.5),
        "p95_s": percentile(latency, 0.95),
        "median_prompt_tokens": statistics.median(prompts) if prompts else 0,
    }


def show(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'preset':22} {'n':>4} {'accuracy':>9} {'95% CI':>13} {'p50 s':>6} {'p95 s':>6} {'prompt':>6}"
    )
    for r in rows:
        lo, hi = r["ci95"]
        print(
            f"{r['preset']:22} {r['n']:>4} {r['accuracy']:>8.1%} {lo:>6.0%}-{hi:<6.0%} "
            f"{r['p50_s']:>6.1f} {r['p95_s']:>6.1f} {r['median_prompt_tokens']:>6.0f}"
        )
        cats = ", ".join(f"{c} {v:.0%}" for c, v in r["by_category"].items())
        print(f"{'':22} {cats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=PRESETS)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--phrasing", default="template", choices=["template", "paraphrase"])
    parser.add_argument("--graph", default="planner", choices=["planner", "loop"])
    args = parser.parse_args()
    options = {"phrasing": args.phrasing} if args.phrasing != "template" else {}
    if args.graph != "planner":
        options["graph"] = args.graph
    rows = []
    for preset in args.presets.split(","):
        records = asyncio.run(run_preset(preset, args.n, options))
        rows.append(row(preset, records))
        show(rows[-1:])
    OUT.mkdir(exist_ok=True)
    name = "_".join(["ehrqa_presets", args.phrasing, args.graph])
    (OUT / f"{name}.json").write_text(json.dumps(rows, indent=2))
    print()
    show(rows)


if __name__ == "__main__":
    main()
