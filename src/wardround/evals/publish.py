"""Publish a comparison: the per-sample results of both models on every task, copied into one
folder, and ONE report built from those files alone (so anyone can rebuild it).

    <folder>/runs/<task>/samples[+options].jsonl     the frozen samples (same layout as the
    <folder>/runs/<task>/<run name>/results.jsonl    runs root, see suite.py), so
                                                     `eval compare --out <folder>/runs` reuses them
    <folder>/report.md, report.html, summary.json, *.png
    <folder>/publication.json                        the models, task specs, machine
    <folder>/notes.md                                optional, shown in the report

A task spec is a task name plus the options of its run, joined by "+", the way run names
are: `ehrqa`, `ehrqa+graph=loop`, `medagentbench+per_category=3`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wardround.evals.compare import compare_records
from wardround.evals.report import write_publication
from wardround.evals.results import read_samples
from wardround.evals.runner import load_records, stratified
from wardround.evals.suite import Layout

RUNS = "runs"
RECORD = "publication.json"


@dataclass(frozen=True)
class TaskSpec:
    task: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        name, *parts = text.strip().split("+")
        options: dict[str, str] = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise ValueError(f"task spec {text!r}: {part!r} is not KEY=VALUE")
            options[key] = value
        if not name:
            raise ValueError(f"task spec {text!r} has no task name")
        return cls(name, options)

    @property
    def label(self) -> str:
        return "+".join([self.task, *(f"{k}={v}" for k, v in sorted(self.options.items()))])

    def layout(self, root: Path) -> Layout:
        return Layout(root, self.task, self.options)


def parse_specs(text: str) -> list[TaskSpec]:
    specs = [TaskSpec.parse(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError("no tasks given")
    return specs


def _copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise FileNotFoundError(f"missing {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def copy_runs(spec: TaskSpec, a: str, b: str, source: Path, runs: Path) -> None:
    """The frozen samples and both runs' results (and run summaries, for their scoring)."""
    src, dst = spec.layout(source), spec.layout(runs)
    _copy(src.samples, dst.samples)
    for preset in (a, b):
        _copy(src.results(preset), dst.results(preset))
        summary = src.run_dir(preset) / "summary.json"
        if summary.exists():
            _copy(summary, dst.run_dir(preset) / "summary.json")


def _scoring(layout: Layout, presets: tuple[str, str]) -> str:
    for preset in presets:
        try:
            text = (layout.run_dir(preset) / "summary.json").read_text(encoding="utf-8")
            return str(json.loads(text).get("scoring", ""))
        except (OSError, ValueError):
            continue
    return ""


def command(spec: TaskSpec, a: str, b: str, runs: Path, ids: list[str], samples: list) -> str:
    """The `eval compare` that produces these pairs (with --limit when they are its subset)."""
    opts = "".join(f" -o {k}={v}" for k, v in sorted(spec.options.items()))
    cmd = f"wardround eval compare --a {a} --b {b} --task {spec.task}{opts} --out {runs}"
    if len(ids) == len(samples):
        return cmd
    picked = {s.id for s in stratified(samples, len(ids))}
    note = "" if picked == set(ids) else "  # compared: the samples both runs finished"
    return f"{cmd} --limit {len(ids)}{note}"


def task_summary(spec: TaskSpec, a: str, b: str, runs: Path, shown_runs: Path) -> dict[str, Any]:
    """The paired summary of one task from the files under `runs` alone."""
    layout = spec.layout(runs)
    samples = read_samples(layout.samples)
    records_a = load_records(layout.results(a))
    records_b = load_records(layout.results(b))
    summary = compare_records(
        spec.task,
        layout.run_name(a),
        layout.run_name(b),
        records_a,
        records_b,
        order=[s.id for s in samples],
        scoring=_scoring(layout, (a, b)),
    )
    summary.pop("created_at", None)  # a rebuild from the same files gives the same summary
    ids = [row["id"] for row in summary["samples"]]
    summary["finished"] = {"a": len(records_a), "b": len(records_b)}
    summary["label"] = spec.label
    summary["options"] = dict(spec.options)
    summary["command"] = command(spec, a, b, shown_runs, ids, samples)
    return summary


def machine() -> dict[str, Any]:
    """Where the runs were made (recorded when first published)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "published": datetime.now(UTC).date().isoformat(),
    }


def publish(
    dest: Path,
    *,
    a: str,
    b: str,
    specs: list[TaskSpec],
    source: Path | None = None,
    notes: Path | None = None,
    title: str | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Copy the runs from `source` (None: rebuild from what `dest` already holds), then write
    the report from the copies only. Returns the summary and the written files."""
    runs = dest / RUNS
    if source is not None and Path(source).resolve() != runs.resolve():
        for spec in specs:
            copy_runs(spec, a, b, Path(source), runs)
    if notes is not None and Path(notes).resolve() != (dest / "notes.md").resolve():
        _copy(Path(notes), dest / "notes.md")
    info = _record(dest, a, b, specs, title)
    shown = Path(info["folder"]) / RUNS
    tasks = [task_summary(spec, a, b, runs, shown) for spec in specs]
    rebuild = f"wardround eval publish --to {shown.parent} --rebuild"
    pub = {
        "title": info["title"],
        "model_a": a,
        "model_b": b,
        "task_specs": [spec.label for spec in specs],
        "machine": info["machine"],
        "commands": [t["command"] for t in tasks] + [rebuild],
        "notes": (dest / "notes.md").read_text(encoding="utf-8")
        if (dest / "notes.md").exists()
        else None,
        "tasks": tasks,
    }
    return pub, write_publication(pub, dest)


def saved(dest: Path) -> dict[str, Any]:
    """What an earlier publication of `dest` compared: models, task specs, title."""
    return json.loads((dest / RECORD).read_text(encoding="utf-8"))


def _record(dest: Path, a: str, b: str, specs: list[TaskSpec], title: str | None) -> dict[str, Any]:
    """publication.json: what is compared, and the machine and folder name as first
    published (kept on every rebuild, so a rebuild writes the same report)."""
    path = dest / RECORD
    old = saved(dest) if path.exists() else {}
    info = {
        "model_a": a,
        "model_b": b,
        "task_specs": [spec.label for spec in specs],
        "title": title or old.get("title") or f"{b} vs {a}",
        "folder": old.get("folder", str(dest)),
        "machine": old.get("machine") or machine(),
    }
    dest.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
