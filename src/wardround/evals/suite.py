"""The evaluation suite as two calls, `run_eval` and `compare_eval`, used by the CLI and tests.

Layout under the runs root (default `settings.home / "runs"`):

    <task>/samples[+options].jsonl      the task's dataset, frozen on first use, so every
                                        model (and every rerun) sees the same samples
    <task>/<run name>/results.jsonl     one line per finished sample (see results.py)
    <task>/<run name>/summary.json, report.md, report.html
    <task>/compare/<a>-vs-<b>/          summary.json, report.md, report.html, *.png

A run name is the model preset plus the options that change the solver, e.g.
`medgemma-4b` or `smollm2-135m+graph=loop`. `--limit N` picks N samples round-robin over
categories from the frozen dataset, so two models with the same limit get the same subset.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wardround.evals.compare import compare_records, summarise_run
from wardround.evals.report import write_compare_report, write_run_report
from wardround.evals.results import read_samples, write_samples
from wardround.evals.runner import RunResult, load_records, run_task, stratified
from wardround.evals.task import EvalEnv, Sample, TaskDef
from wardround.evals.tasks import NAMES
from wardround.settings import Settings

# Options that change the dataset rather than the solver; they name the samples file.
DATASET_OPTIONS = frozenset({"patients", "per_category", "phrasing", "mode"})
# Options that say where to run, not what: they name neither the samples nor the run.
# `fhir_url` points a task at another FHIR server (MedAgentBench's own, for mode=official).
PLACE_OPTIONS = frozenset({"fhir_url"})
# Options naming other models by role (agentclinic's patient actor and judge).
ROLE_OPTIONS = {"actor_model": "actor", "judge_model": "judge"}
_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")

ModelFactory = Callable[[Settings, str], Any]
FhirFactory = Callable[[Settings], Any]


def task_registry() -> dict[str, TaskDef]:
    """Every task in `evals.tasks.NAMES`, by name (each module imported when asked for)."""
    tasks = (importlib.import_module(f"wardround.evals.tasks.{name}").TASK for name in NAMES)
    return {t.name: t for t in tasks}


def get_task(name: str) -> TaskDef:
    tasks = task_registry()
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def default_model(settings: Settings, preset: str) -> Any:
    from wardround.agents.embedded import ensure_model_server
    from wardround.agents.models import make_chat_model

    chosen = settings.model_copy(update={"model": preset})
    ensure_model_server(chosen)
    return make_chat_model(chosen)


def default_fhir(settings: Settings) -> Any:
    from wardround.fhir.client import FhirClient

    return FhirClient.from_settings(settings)


def _suffix(options: Mapping[str, str], keep: Callable[[str], bool]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(options.items()) if keep(k) and k not in PLACE_OPTIONS]
    return _SAFE.sub("_", "+" + "+".join(parts)) if parts else ""


@dataclass(frozen=True)
class Layout:
    root: Path
    task: str
    options: Mapping[str, str]

    @property
    def samples(self) -> Path:
        return (
            self.root
            / self.task
            / f"samples{_suffix(self.options, DATASET_OPTIONS.__contains__)}.jsonl"
        )

    def run_name(self, preset: str) -> str:
        return preset + _suffix(self.options, lambda k: k not in DATASET_OPTIONS)

    def run_dir(self, preset: str) -> Path:
        return self.root / self.task / self.run_name(preset)

    def results(self, preset: str) -> Path:
        return self.run_dir(preset) / "results.jsonl"

    def compare_dir(self, a: str, b: str) -> Path:
        return self.root / self.task / "compare" / f"{self.run_name(a)}-vs-{self.run_name(b)}"


def runs_root(settings: Settings, out: Path | None = None) -> Path:
    return Path(out) if out is not None else settings.home / "runs"


@asynccontextmanager
async def eval_env(
    taskdef: TaskDef,
    settings: Settings,
    *,
    preset: str | None,
    options: Mapping[str, str] | None = None,
    make_model: ModelFactory | None = None,
    make_fhir: FhirFactory | None = None,
) -> AsyncIterator[EvalEnv]:
    """An EvalEnv with what the task needs: the model under test, role models, a FHIR client."""
    options = dict(options or {})
    make_model = make_model or default_model
    model = make_model(settings, preset) if taskdef.needs_model and preset else None
    roles = {
        role: make_model(settings, options[key])
        for key, role in ROLE_OPTIONS.items()
        if key in options
    }
    env = EvalEnv(settings=settings, model=model, options=options, roles=roles)
    if not taskdef.needs_fhir:
        yield env
        return
    if options.get("fhir_url"):
        settings = settings.model_copy(update={"fhir_base_url": options["fhir_url"]})
    async with (make_fhir or default_fhir)(settings) as fhir:
        env.fhir = fhir
        yield env


async def frozen_samples(
    taskdef: TaskDef, env: EvalEnv, path: Path, *, refresh: bool = False
) -> list[Sample]:
    """The task's dataset from `path`, building and freezing it on first use."""
    if path.exists() and not refresh:
        return read_samples(path)
    samples = await taskdef.dataset(env)
    if not samples:
        raise ValueError(f"task {taskdef.name} built no samples (is the data there?)")
    write_samples(path, samples)
    return samples


async def run_eval(
    taskdef: TaskDef,
    env: EvalEnv,
    *,
    preset: str,
    root: Path,
    limit: int | None = None,
    concurrency: int = 4,
    timeout_s: float | None = None,
    retry_errors: bool = False,
    refresh_samples: bool = False,
    progress: bool = True,
) -> tuple[RunResult, dict[str, Any]]:
    """Run (or finish) one model on a task; write its summary and report. Returns both."""
    layout = Layout(root, taskdef.name, env.options)
    samples = await frozen_samples(taskdef, env, layout.samples, refresh=refresh_samples)
    chosen = stratified(samples, limit)
    task = taskdef.bind(env, samples)
    result = await run_task(
        task,
        model=layout.run_name(preset),
        results_path=layout.results(preset),
        samples=chosen,
        concurrency=concurrency,
        timeout_s=timeout_s,
        retry_errors=retry_errors,
        progress=progress,
    )
    summary = summarise_run(taskdef.name, result.model, result.records, task.scoring)
    summary["wall_s"] = result.wall_s
    summary["ran"] = result.ran
    write_run_report(summary, layout.run_dir(preset))
    return result, summary


def _saved_scoring(layout: Layout, preset: str) -> str:
    path = layout.run_dir(preset) / "summary.json"
    try:
        return str(json.loads(path.read_text()).get("scoring", ""))
    except (OSError, ValueError):
        return ""


def finished_records(layout: Layout, preset: str, limit: int | None) -> dict[str, Any] | None:
    """The records of a run that already holds every sample asked for, else None."""
    if not layout.samples.exists():
        return None
    wanted = [s.id for s in stratified(read_samples(layout.samples), limit)]
    done = load_records(layout.results(preset))
    if all(i in done for i in wanted):
        return {i: done[i] for i in wanted}
    return None


async def compare_eval(
    taskdef: TaskDef,
    settings: Settings,
    *,
    a: str,
    b: str,
    root: Path,
    options: Mapping[str, str] | None = None,
    limit: int | None = None,
    concurrency: int = 4,
    timeout_s: float | None = None,
    progress: bool = True,
    make_model: ModelFactory | None = None,
    make_fhir: FhirFactory | None = None,
    base_urls: Mapping[str, str | None] | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run A then B (one at a time: embedded models share one server) on the same samples,
    reusing finished runs, and write the comparison report. `base_urls` gives a preset its
    own OpenAI-compatible endpoint (two vLLM servers side by side)."""
    options = dict(options or {})
    layout = Layout(root, taskdef.name, options)
    records: dict[str, dict[str, Any]] = {}
    scoring = ""
    for preset in (a, b):
        done = finished_records(layout, preset, limit)
        if done is not None:  # reuse a finished run without building its model
            records[preset] = done
            scoring = scoring or _saved_scoring(layout, preset)
            continue
        side = settings
        if (base_urls or {}).get(preset):
            side = settings.model_copy(update={"model_base_url": (base_urls or {})[preset]})
        async with eval_env(
            taskdef,
            side,
            preset=preset,
            options=options,
            make_model=make_model,
            make_fhir=make_fhir,
        ) as env:
            result, summary = await run_eval(taskdef, env, preset=preset, root=root, limit=limit,
                                             concurrency=concurrency, timeout_s=timeout_s,
                                             progress=progress)  # fmt: skip
        scoring = summary["scoring"]
        records[preset] = result.by_id
    order = [s.id for s in stratified(read_samples(layout.samples), limit)]
    names = (layout.run_name(a), layout.run_name(b))
    summary = compare_records(taskdef.name, *names, records[a], records[b], order=order,
                              scoring=scoring)  # fmt: skip
    paths = write_compare_report(summary, layout.compare_dir(a, b))
    return summary, paths


async def rescore_eval(
    taskdef: TaskDef, env: EvalEnv, *, preset: str, root: Path
) -> tuple[dict[str, Any], int]:
    """Score a finished run again with the task's current scorer, from the stored traces
    (no model calls, unless the scorer itself is an LLM judge). Returns the new summary and
    how many verdicts changed. Failed samples stay failed."""
    layout = Layout(root, taskdef.name, env.options)
    samples = read_samples(layout.samples)
    by_id = {s.id: s for s in samples}
    task = taskdef.bind(env, samples)
    path = layout.results(preset)
    records = load_records(path)
    changed = 0
    for record_id, record in records.items():
        if record.error is not None or record_id not in by_id:
            continue
        score = await task.scorer(by_id[record_id], record.trace)
        changed += int(score.correct != record.correct)
        records[record_id] = record.model_copy(
            update={
                "correct": score.correct,
                "value": score.value,
                "explanation": score.explanation,
                "score": score.metadata,
            }
        )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(r.model_dump_json() + "\n" for r in records.values()), encoding="utf-8")
    os.replace(tmp, path)
    ordered = [records[s.id] for s in samples if s.id in records]
    summary = summarise_run(taskdef.name, layout.run_name(preset), ordered, task.scoring)
    write_run_report(summary, layout.run_dir(preset))
    return summary, changed
