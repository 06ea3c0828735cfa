"""Run a task's samples concurrently, record each as it finishes, and resume where a run stopped.

- bounded concurrency (`asyncio.Semaphore`), because model servers batch concurrent requests:
  the same samples finish many times faster than one after another, with the same results;
- one JSONL line per finished sample (see results.py), so a rerun skips what is done;
- a failing sample (solver or scorer error, timeout) is recorded with its error and counts
  as wrong; it never stops the run;
- a rich progress bar shows the running accuracy.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from wardround.evals.results import ResultsLog, SampleRecord
from wardround.evals.task import LIVE_TRACE, Sample, Task, Trace


@dataclass
class RunResult:
    task: str
    model: str
    path: Path
    records: list[SampleRecord]  # in sample order, only the samples asked for
    ran: int = 0  # how many ran in this call (the rest were already finished)
    wall_s: float = 0.0
    by_id: dict[str, SampleRecord] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.records)

    @property
    def errors(self) -> int:
        return sum(r.error is not None for r in self.records)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


def _error_text(err: BaseException) -> str:
    tail = "".join(traceback.format_exception(err)[-3:]).strip()
    return f"{type(err).__name__}: {err}\n{tail}"


async def run_sample(
    task: Task, sample: Sample, model: str, *, timeout_s: float | None = None
) -> SampleRecord:
    """Solve and score one sample; any exception becomes a recorded error."""
    started = time.perf_counter()
    trace = Trace()
    LIVE_TRACE.set(trace)  # this task's context only; the solver's task inherits it
    try:
        trace = await asyncio.wait_for(task.solver(sample), timeout_s)
        if not trace.latency_s:
            trace.latency_s = time.perf_counter() - started
        score = await task.scorer(sample, trace)
    except asyncio.CancelledError:
        raise
    except Exception as err:
        if isinstance(err, TimeoutError):
            err = TimeoutError(f"sample did not finish within {timeout_s} s")
        trace.latency_s = trace.latency_s or time.perf_counter() - started
        return SampleRecord.failed(sample, task.name, model, trace, _error_text(err))
    return SampleRecord.scored(sample, task.name, model, trace, score)


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}"),
        TextColumn("err {task.fields[err]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show,
        transient=False,
    )


@dataclass
class _Tally:
    """Correct, finished and failed samples so far, for the progress bar."""

    k: int = 0
    n: int = 0
    err: int = 0

    def add(self, record: SampleRecord) -> None:
        self.k += int(record.correct)
        self.n += 1
        self.err += int(record.error is not None)

    def accuracy(self) -> str:
        return f"{self.k / self.n:.1%}" if self.n else "-"


def _finished(
    log: ResultsLog, chosen: Sequence[Sample], retry_errors: bool
) -> dict[str, SampleRecord]:
    """The chosen samples the results file already holds (errors too, unless retried)."""
    wanted = {s.id for s in chosen}
    return {
        i: r
        for i, r in log.load().items()
        if i in wanted and not (retry_errors and r.error is not None)
    }


async def run_task(
    task: Task,
    *,
    model: str,
    results_path: Path,
    samples: Sequence[Sample] | None = None,
    concurrency: int = 4,
    timeout_s: float | None = None,
    retry_errors: bool = False,
    progress: bool = True,
    on_record: Callable[[SampleRecord], None] | None = None,
) -> RunResult:
    """Run the samples not yet finished in `results_path`; return all of them, in order."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    chosen = list(samples if samples is not None else task.samples)
    log = ResultsLog(results_path)
    finished = _finished(log, chosen, retry_errors)
    pending = [s for s in chosen if s.id not in finished]
    tally = _Tally()
    for record in finished.values():
        tally.add(record)
    semaphore = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    log.open()
    try:
        with _progress(progress) as bar:
            bar_id = bar.add_task(f"{task.name} · {model}", total=len(chosen), completed=tally.n,
                                  acc=tally.accuracy(), err=tally.err)  # fmt: skip

            async def one(sample: Sample) -> None:
                async with semaphore:
                    record = await run_sample(task, sample, model, timeout_s=timeout_s)
                await log.append(record)
                finished[sample.id] = record
                tally.add(record)
                bar.update(bar_id, advance=1, acc=tally.accuracy(), err=tally.err)
                if on_record is not None:
                    on_record(record)

            async with asyncio.TaskGroup() as group:
                for sample in pending:
                    group.create_task(one(sample))
    finally:
        log.close()
    records = [finished[s.id] for s in chosen]
    return RunResult(task=task.name, model=model, path=results_path, records=records,
                     ran=len(pending), wall_s=time.perf_counter() - started,
                     by_id={r.id: r for r in records})  # fmt: skip


def load_records(results_path: Path) -> dict[str, SampleRecord]:
    return ResultsLog(results_path).load()


def stratified(samples: Sequence[Sample], limit: int | None) -> list[Sample]:
    """The first `limit` samples taken round-robin over categories, so a small subset still
    covers every category; deterministic for a given sample list."""
    items = list(samples)
    if limit is None or limit >= len(items):
        return items
    queues: dict[str, list[Sample]] = {}
    for sample in items:
        queues.setdefault(sample.category, []).append(sample)
    picked: list[Sample] = []
    while len(picked) < limit:
        for queue in queues.values():
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    order = {s.id: i for i, s in enumerate(items)}
    return sorted(picked, key=lambda s: order[s.id])
