"""The runner: bounded concurrency, one line per sample, resume after a kill, failures recorded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from wardround.evals.results import ResultsLog, SampleRecord, read_samples, write_samples
from wardround.evals.runner import RunResult, run_task, stratified
from wardround.evals.task import Sample, Score, Task, Trace


def make_samples(n: int = 12) -> list[Sample]:
    return [
        Sample(id=f"s{i:02d}", input=f"q{i}", target=i, category="even" if i % 2 == 0 else "odd")
        for i in range(n)
    ]


class Counting:
    """A solver that counts calls and concurrency; sample 5 always fails."""

    def __init__(self, delay: float = 0.01) -> None:
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = delay

    async def __call__(self, sample: Sample) -> Trace:
        self.calls.append(sample.id)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if sample.target == 5:
                raise RuntimeError("model server went away")
            return Trace(
                answer=str(sample.target * 2),
                tokens={"prompt": 3, "completion": 1},
                messages=[{"role": "user", "content": sample.input}],
            )
        finally:
            self.in_flight -= 1


async def double_scorer(sample: Sample, trace: Trace) -> Score:
    return Score.of(int(trace.answer) == sample.target * 2 and sample.target % 3 != 0)


async def run_toy(solver: Counting, samples: list[Sample], path: Path, **options: Any) -> RunResult:
    """The toy task (solved by `solver`, scored by `double_scorer`) run quietly as model "m"."""
    task = Task(name="toy", samples=samples, solver=solver, scorer=double_scorer)
    return await run_task(task, model="m", results_path=path, progress=False, **options)


async def test_runs_all_samples_with_bounded_concurrency(tmp_path):
    samples = make_samples()
    solver = Counting()
    result = await run_toy(solver, samples, tmp_path / "r.jsonl", concurrency=3)
    assert solver.max_in_flight == 3
    assert [r.id for r in result.records] == [s.id for s in samples]
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 12 and all(json.loads(line)["task"] == "toy" for line in lines)
    # sample 5 failed: recorded with its error, wrong, and the run went on
    failed = result.by_id["s05"]
    assert failed.error and "model server went away" in failed.error and not failed.correct
    assert result.errors == 1
    # correct: i*2 answered and i not a multiple of 3, except the failed one
    assert result.correct == sum(1 for i in range(12) if i % 3 != 0 and i != 5)
    # traces are kept
    assert result.by_id["s01"].trace.messages[0]["content"] == "q1"
    assert result.by_id["s01"].trace.tokens == {"prompt": 3, "completion": 1}
    assert result.by_id["s01"].trace.latency_s > 0


async def test_resume_after_a_kill_neither_loses_nor_repeats(tmp_path):
    samples = make_samples()
    path = tmp_path / "r.jsonl"
    first = Counting()
    await run_toy(first, samples[:5], path)
    # simulate a kill in the middle of writing the sixth line
    record = SampleRecord(id="s05", task="toy", model="m", category="odd", input="q5")
    with path.open("a") as handle:
        handle.write(record.model_dump_json()[:40])
    assert len(ResultsLog(path).load()) == 5  # the partial line does not count

    second = Counting()
    result = await run_toy(second, samples, path, concurrency=4)
    assert sorted(second.calls) == [s.id for s in samples[5:]]
    assert result.ran == 7 and result.n == 12
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert sorted(ids) == [s.id for s in samples]  # every sample exactly once

    third = Counting()
    again = await run_toy(third, samples, path)
    assert third.calls == [] and again.ran == 0 and again.n == 12


async def test_retry_errors_runs_failed_samples_again(tmp_path):
    samples = make_samples(6)
    path = tmp_path / "r.jsonl"
    await run_toy(Counting(), samples, path)
    retry = Counting()
    result = await run_toy(retry, samples, path, retry_errors=True)
    assert retry.calls == ["s05"]
    assert result.by_id["s05"].error is not None  # it still fails; the last line wins
    assert len(ResultsLog(path).load()) == 6


async def test_timeout_is_recorded_as_an_error(tmp_path):
    samples = make_samples(2)
    slow = Counting(delay=2.0)
    result = await run_toy(slow, samples, tmp_path / "r.jsonl", timeout_s=0.05)
    assert all("did not finish within" in (r.error or "") for r in result.records)


async def test_scorer_errors_are_recorded(tmp_path):
    async def broken(sample: Sample, trace: Trace) -> Score:
        raise KeyError("target")

    task = Task(name="toy", samples=make_samples(2), solver=Counting(), scorer=broken)
    result = await run_task(task, model="m", results_path=tmp_path / "r.jsonl", progress=False)
    assert result.errors == 2 and result.records[0].trace.answer == "0"


def test_stratified_subset_covers_categories_and_keeps_order():
    samples = [Sample(id=f"a{i}", input="", category="a") for i in range(5)] + [
        Sample(id=f"b{i}", input="", category="b") for i in range(2)
    ]
    picked = stratified(samples, 4)
    assert [s.id for s in picked] == ["a0", "a1", "b0", "b1"]
    assert stratified(samples, None) == samples
    assert [s.id for s in stratified(samples, 6)] == ["a0", "a1", "a2", "a3", "b0", "b1"]


def test_samples_file_round_trip(tmp_path):
    samples = make_samples(3)
    write_samples(tmp_path / "s.jsonl", samples)
    assert read_samples(tmp_path / "s.jsonl") == samples


async def test_concurrency_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        await run_toy(Counting(), make_samples(1), tmp_path / "r.jsonl", concurrency=0)


KILLED_RUN = """
import asyncio, sys
from pathlib import Path
from wardround.evals.runner import run_task
from wardround.evals.task import Sample, Score, Task, Trace

async def solve(sample):
    await asyncio.sleep(0.05)
    return Trace(answer=sample.input)

async def score(sample, trace):
    return Score.of(True)

samples = [Sample(id=f"k{i:03d}", input=str(i)) for i in range(400)]
task = Task(name="kill", samples=samples, solver=solve, scorer=score)
asyncio.run(run_task(task, model="m", results_path=Path(sys.argv[1]), concurrency=4, progress=False))
"""


async def test_a_killed_process_resumes_without_losing_or_repeating(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(path)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until some, not all, samples are written
        if path.exists() and len(path.read_bytes().splitlines()) >= 20:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    before = ResultsLog(path).load()
    assert 20 <= len(before) < 400

    async def solve(sample: Sample) -> Trace:
        return Trace(answer=sample.input)

    async def score(sample: Sample, trace: Trace) -> Score:
        return Score.of(True)

    samples = [Sample(id=f"k{i:03d}", input=str(i)) for i in range(400)]
    task = Task(name="kill", samples=samples, solver=solve, scorer=score)
    result = await run_task(task, model="m", results_path=path, concurrency=8, progress=False)
    assert result.ran == 400 - len(before)
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert sorted(ids) == [s.id for s in samples]
