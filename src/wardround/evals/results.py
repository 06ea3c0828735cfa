"""The run log: one JSON line per finished sample, appended so that a killed run loses nothing.

Each line is written with a single `write` on an `O_APPEND` descriptor under a lock, so lines
never interleave, and is flushed to disk (`fsync`) before the sample counts as recorded. A run killed in the
middle of a write leaves at most one partial last line; opening the log drops it, and the
sample it belonged to simply runs again.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from wardround.evals.task import Sample, Score, Trace


class SampleRecord(BaseModel):
    """Everything about one finished sample: what was asked, answered, judged and done."""

    id: str
    task: str
    model: str
    category: str
    input: str
    target: Any = None
    answer: str = ""
    correct: bool = False
    value: float = 0.0
    explanation: str = ""
    score: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    trace: Trace = Field(default_factory=Trace)
    finished_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def of(
        cls, sample: Sample, task: str, model: str, trace: Trace, **outcome: Any
    ) -> SampleRecord:
        """The record of `sample` solved as `trace`; `outcome` holds its verdict or error."""
        return cls(
            id=sample.id,
            task=task,
            model=model,
            category=sample.category,
            input=sample.input,
            target=sample.target,
            answer=trace.answer,
            trace=trace,
            **outcome,
        )

    @classmethod
    def scored(
        cls, sample: Sample, task: str, model: str, trace: Trace, score: Score
    ) -> SampleRecord:
        return cls.of(
            sample,
            task,
            model,
            trace,
            correct=score.correct,
            value=score.value,
            explanation=score.explanation,
            score=score.metadata,
        )

    @classmethod
    def failed(
        cls, sample: Sample, task: str, model: str, trace: Trace, error: str
    ) -> SampleRecord:
        return cls.of(sample, task, model, trace, error=error)


class ResultsLog:
    """Append-only JSONL of `SampleRecord`s; the last record of an id wins on reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()
        self._written = 0
        self._synced = 0
        self._fd: int | None = None

    def load(self) -> dict[str, SampleRecord]:
        """Records by id, after cutting off a partial trailing line left by a kill."""
        if not self.path.exists():
            return {}
        self._truncate_partial_tail()
        records: dict[str, SampleRecord] = {}
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = SampleRecord.model_validate_json(line)
                except ValidationError:
                    continue  # a corrupt line is treated as not finished
                records[record.id] = record
        return records

    def _truncate_partial_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._truncate_partial_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, data: bytes) -> None:
        assert self._fd is not None, "ResultsLog.open() first"
        written = os.write(self._fd, data)
        while written < len(data):  # regular files write fully; this only guards odd filesystems
            written += os.write(self._fd, data[written:])

    async def append(self, record: SampleRecord) -> None:
        """Append one line and return once it is on disk.

        The write itself happens under a lock, as one `write` call. The fsync is shared
        ("group commit"): while one fsync runs, lines finished meanwhile queue up and the
        next fsync covers them all, so 32 samples in flight do not wait on 32 fsyncs.
        """
        data = (record.model_dump_json() + "\n").encode("utf-8")
        async with self._lock:
            self._write(data)
            self._written += 1
            ticket = self._written
        async with self._sync_lock:
            if self._synced >= ticket:
                return  # an fsync that started after our write already covered it
            upto = self._written
            assert self._fd is not None, "ResultsLog closed while writing"
            await asyncio.to_thread(os.fsync, self._fd)
            self._synced = upto


def write_samples(path: Path, samples: list[Sample]) -> None:
    """Freeze a dataset (atomically: temp file, then rename) so every model sees the same one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(s.model_dump_json() + "\n" for s in samples), encoding="utf-8")
    os.replace(tmp, path)


def read_samples(path: Path) -> list[Sample]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Sample.model_validate_json(line) for line in lines if line.strip()]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
