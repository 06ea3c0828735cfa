"""`wardround eval run|compare|tasks|export`: run benchmarks, compare two models on the same
samples, and export a run's traces to train on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from wardround.cli.common import clean_errors, console, fail, load_settings
from wardround.evals.tasks import NAMES

if TYPE_CHECKING:
    from wardround.evals.runner import RunResult

app = typer.Typer(
    help="Evaluate models on agentic clinical tasks and compare them with paired statistics."
)

TaskArg = typer.Argument(..., help=f"task: {', '.join(NAMES)}")


def _options(values: list[str] | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"option {item!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def _errors() -> tuple[type[BaseException], ...]:
    from wardround.evals.data import BenchmarkDataError
    from wardround.fhir.errors import FhirError
    from wardround.runtime.procs import ServiceError

    return (BenchmarkDataError, FhirError, ServiceError, ValueError, RuntimeError, OSError)


OptionOpt = typer.Option(
    None,
    "--option",
    "-o",
    help="task option KEY=VALUE, repeatable (e.g. graph=loop, moderator=llm, k=10, patients=20)",
)
OutOpt = typer.Option(None, "--out", help="runs folder (default: $WARDROUND_HOME/runs)")
LimitOpt = typer.Option(
    None, "--limit", "-n", min=1, help="only the first N samples (spread over categories)"
)
ConcOpt = typer.Option(4, "--concurrency", "-c", min=1, help="samples in flight at once")
TimeoutOpt = typer.Option(900.0, "--timeout", help="seconds before a sample is recorded as failed")


@app.command("tasks")
def tasks() -> None:
    """List the tasks."""
    from wardround.evals.suite import task_registry

    for task in task_registry().values():
        console.print(f"[bold]{task.name}[/]  {task.description}", highlight=False)


@app.command()
def run(
    task: str = TaskArg,
    model: str = typer.Option(..., "--model", "-m", help="model preset under test"),
    limit: int | None = LimitOpt,
    concurrency: int = ConcOpt,
    out: Path | None = OutOpt,
    option: list[str] | None = OptionOpt,
    timeout: float = TimeoutOpt,
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible endpoint serving the preset (default: preset's)"
    ),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="run failed samples again"),
    refresh_samples: bool = typer.Option(
        False, "--refresh-samples", help="rebuild the task's frozen dataset"
    ),
) -> None:
    """Run one model on a task; a rerun continues where the last one stopped."""
    from wardround.evals import suite

    settings = load_settings(model=model, model_base_url=base_url)
    options = _options(option)
    with clean_errors(*_errors()):
        taskdef = suite.get_task(task)
        root = suite.runs_root(settings, out)

        async def go() -> tuple[RunResult, dict[str, Any]]:
            async with suite.eval_env(taskdef, settings, preset=model, options=options) as env:
                return await suite.run_eval(
                    taskdef,
                    env,
                    preset=model,
                    root=root,
                    limit=limit,
                    concurrency=concurrency,
                    timeout_s=timeout,
                    retry_errors=retry_errors,
                    refresh_samples=refresh_samples,
                )

        result, summary = asyncio.run(go())
    run_dir = result.path.parent
    console.print(
        f"[bold]{task}[/] {result.model}: accuracy {summary['accuracy']:.1%} "
        f"({summary['correct']}/{summary['n']}, 95% CI {summary['ci95'][0]:.1%}-{summary['ci95'][1]:.1%}), "
        f"{summary['errors']} failed; ran {result.ran} in {result.wall_s:.1f} s",
        highlight=False,
    )
    console.print(f"results {result.path}\nreport  {run_dir / 'report.md'}", highlight=False)


@app.command()
def rescore(
    task: str = TaskArg,
    model: str = typer.Option(..., "--model", "-m", help="model preset of the finished run"),
    out: Path | None = OutOpt,
    option: list[str] | None = OptionOpt,
) -> None:
    """Score a finished run again from its stored traces (after a scorer changed)."""
    from wardround.evals import suite

    settings = load_settings()
    options = _options(option)
    with clean_errors(*_errors()):
        taskdef = suite.get_task(task)
        root = suite.runs_root(settings, out)
        if not suite.Layout(root, taskdef.name, options).results(model).exists():
            fail(f"no run of {model} on {task} under {root}")

        async def go() -> tuple[dict[str, Any], int]:
            async with suite.eval_env(taskdef, settings, preset=None, options=options) as env:
                return await suite.rescore_eval(taskdef, env, preset=model, root=root)

        summary, changed = asyncio.run(go())
    console.print(
        f"[bold]{task}[/] {summary['model']}: accuracy {summary['accuracy']:.1%} "
        f"({summary['correct']}/{summary['n']}); {changed} verdicts changed",
        highlight=False,
    )


@app.command()
def compare(
    a: str = typer.Option(..., "--a", help="model preset A (the base line)"),
    b: str = typer.Option(..., "--b", help="model preset B (compared against A)"),
    task: str = typer.Option(..., "--task", "-t", help="task name"),
    limit: int | None = LimitOpt,
    concurrency: int = ConcOpt,
    out: Path | None = OutOpt,
    option: list[str] | None = OptionOpt,
    timeout: float = TimeoutOpt,
    a_url: str | None = typer.Option(None, "--a-url", help="OpenAI-compatible endpoint of A"),
    b_url: str | None = typer.Option(None, "--b-url", help="OpenAI-compatible endpoint of B"),
) -> None:
    """Run A and B on the same samples (reusing finished runs) and write the paired report."""
    from wardround.evals import suite

    if a == b:
        fail("--a and --b must be different presets")
    settings = load_settings()
    options = _options(option)
    with clean_errors(*_errors()):
        taskdef = suite.get_task(task)
        summary, paths = asyncio.run(
            suite.compare_eval(
                taskdef,
                settings,
                a=a,
                b=b,
                root=suite.runs_root(settings, out),
                options=options,
                limit=limit,
                concurrency=concurrency,
                timeout_s=timeout,
                base_urls={a: a_url, b: b_url},
            )
        )
    o = summary["overall"]
    p = o["mcnemar"]["p_value"]
    mdd = o["power"]["min_detectable"]
    console.print(
        f"[bold]{task}[/] n={o['n']}: {summary['model_a']} {o['a']['accuracy']:.1%} vs "
        f"{summary['model_b']} {o['b']['accuracy']:.1%}; difference {100 * o['diff']:+.1f} pp "
        f"[{100 * o['diff_ci95'][0]:+.1f}, {100 * o['diff_ci95'][1]:+.1f}], McNemar p={p:.3g}; "
        f"detectable at 80% power: {'n too small' if mdd is None else f'{100 * mdd:.1f} pp'}",
        highlight=False,
    )
    for name, path in paths.items():
        console.print(f"{name:8} {path}", highlight=False)


ExportToOpt = typer.Option(
    None, "--to", help="output JSONL (default: <run folder>/export-<format>[-all].jsonl)"
)


@app.command()
def export(
    task: str = TaskArg,
    model: str = typer.Option(..., "--model", "-m", help="model preset of the finished run"),
    fmt: str = typer.Option(
        "openai", "--format", "-f", help="openai (fine-tuning JSONL) or hf (Hugging Face messages)"
    ),
    to: Path | None = ExportToOpt,
    include_all: bool = typer.Option(
        False, "--all", help="every finished sample, not only the correct ones"
    ),
    out: Path | None = OutOpt,
    option: list[str] | None = OptionOpt,
) -> None:
    """Write a finished run's traces as chat-format JSONL (messages and tools) to train on."""
    from wardround.evals import export as exporter
    from wardround.evals import suite
    from wardround.evals.runner import load_records

    settings = load_settings()
    options = _options(option)
    if fmt not in exporter.FORMATS:
        fail(f"--format must be one of {', '.join(exporter.FORMATS)}")
    with clean_errors(*_errors()):
        layout = suite.Layout(suite.runs_root(settings, out), suite.get_task(task).name, options)
        results = layout.results(model)
        if not results.exists():
            fail(f"no run of {model} on {task} under {layout.root}")
        target = to or results.with_name(f"export-{fmt}{'-all' if include_all else ''}.jsonl")
        records = load_records(results).values()
        n = exporter.export_records(records, target, fmt, include_all=include_all)
    which = "finished" if include_all else "correct"
    console.print(f"{n} {which} traces of {len(records)} -> {target}", highlight=False)


ToOpt = typer.Option(..., "--to", help="the result folder, e.g. docs/results/<name>")
FromOpt = typer.Option(
    None, "--from", help="runs folder to copy from (default: $WARDROUND_HOME/runs)"
)
NotesOpt = typer.Option(
    None, "--notes", help="a Markdown file (commands, wall times) to copy and show"
)


@app.command()
def publish(
    to: Path = ToOpt,
    a: str | None = typer.Option(None, "--a", help="model preset A (the base line)"),
    b: str | None = typer.Option(None, "--b", help="model preset B (compared against A)"),
    tasks: str | None = typer.Option(
        None,
        "--tasks",
        help="comma-separated task specs, a task and its run options joined by '+', "
        "e.g. ehrqa,ehrqa+graph=loop,medagentbench,agentclinic,images",
    ),
    source: Path | None = FromOpt,
    rebuild: bool = typer.Option(
        False, "--rebuild", help="only rebuild the report from the files already in the folder"
    ),
    notes: Path | None = NotesOpt,
    title: str | None = typer.Option(None, "--title", help="the report's title"),
) -> None:
    """Copy both models' per-sample results for every task into one folder and write one
    report (report.md with PNG plots, report.html, summary.json) from those files alone."""
    from wardround.evals import publish as pub
    from wardround.evals import suite

    with clean_errors(*_errors()):
        earlier = pub.saved(to) if (to / pub.RECORD).exists() else {}
        a = a or earlier.get("model_a")
        b = b or earlier.get("model_b")
        specs_text = tasks or ",".join(earlier.get("task_specs", []))
        if not (a and b and specs_text):
            fail("give --a, --b and --tasks (or --rebuild a folder published before)")
        if a == b:
            fail("--a and --b must be different presets")
        specs = pub.parse_specs(specs_text)
        root = None if rebuild else suite.runs_root(load_settings(), source)
        summary, paths = pub.publish(
            to,
            a=a,
            b=b,
            specs=specs,
            source=root,
            notes=notes,
            title=title or earlier.get("title"),
        )
    for t in summary["tasks"]:
        o = t["overall"]
        mdd = o["power"]["min_detectable"]
        console.print(
            f"[bold]{t['label']}[/] n={o['n']}: {o['a']['accuracy']:.1%} vs "
            f"{o['b']['accuracy']:.1%}, difference {100 * o['diff']:+.1f} pp, McNemar "
            f"p={o['mcnemar']['p_value']:.3g}, detectable "
            f"{'-' if mdd is None else f'{100 * mdd:.1f} pp'}",
            highlight=False,
        )
    for name, path in paths.items():
        console.print(f"{name:8} {path}", highlight=False)
