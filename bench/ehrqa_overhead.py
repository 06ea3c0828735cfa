"""Framework overhead per EHR QA question: everything but the model, warm.

    .venv/bin/python -m bench.ehrqa_overhead [--preset qwen2.5-coder-1.5b] [--repeat 2] [--runs DIR]

Replays the model replies recorded by a finished `wardround eval run ehrqa` (so every node runs
as it did: the same plans, the same records fetched, the same computed kinds) against the real
FHIR server of `wardround stack up`, with the model answering instantly. The first pass warms
the process (MiniLM loaded, label vectors cached); the timed passes report p50/p95 wall time per
question, which is then all framework: FHIR reads, manifest, ranking, computation, checks.
Writes `bench/out/ehrqa_overhead.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage

from wardround.evals.runner import load_records
from wardround.fhir.client import FhirClient
from wardround.graphs.ehr_qa import answer_question
from wardround.graphs.trace import message_fields
from wardround.settings import DEFAULT_MODEL, Settings

OUT = Path(__file__).parent / "out"


def replies_of(record: Any) -> list[AIMessage]:
    """The model's raw replies in the order the graph asked for them."""
    stored = [message_fields(m) for m in record.trace.messages]
    return [AIMessage(content=m["content"]) for m in stored if m["role"] == "ai"]


def replay_model(record: Any) -> FakeMessagesListChatModel:
    model = FakeMessagesListChatModel(responses=replies_of(record))
    model.metadata = {"dialect": "none", "protocol": "json"}
    return model


async def one_pass(cases: list[tuple[Any, str]], fhir: FhirClient) -> list[float]:
    times = []
    for record, patient_id in cases:
        started = time.perf_counter()
        await answer_question(record.input, patient_id, model=replay_model(record), fhir=fhir)
        times.append(time.perf_counter() - started)
    return times


def patients_by_sample(runs: Path) -> dict[str, str]:
    """Sample id -> patient id, from the task's frozen samples files (one per option set,
    e.g. `samples+patients=5.jsonl`)."""
    rows = [
        json.loads(line)
        for path in sorted(runs.glob("samples*.jsonl"))
        for line in path.read_text().splitlines()
        if line
    ]
    return {row["id"]: row["metadata"]["patient_id"] for row in rows}


async def run(preset: str, repeat: int, runs_dir: Path | None) -> dict[str, Any]:
    settings = Settings()
    runs = (runs_dir or settings.home / "runs") / "ehrqa"
    patient_of = patients_by_sample(runs)
    records = load_records(runs / preset / "results.jsonl").values()
    cases = [
        (r, patient_of[r.id])
        for r in records
        if r.id in patient_of and not r.error and replies_of(r)
    ]
    async with FhirClient.from_settings(settings) as fhir:
        await one_pass(cases, fhir)  # warm: MiniLM, label cache, connections
        times = [t for _ in range(repeat) for t in await one_pass(cases, fhir)]
    ordered = sorted(times)
    return {
        "preset": preset,
        "questions": len(cases),
        "timed": len(times),
        "p50_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "mean_ms": 1000 * statistics.fmean(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=DEFAULT_MODEL)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=None, help="runs folder of the eval run")
    args = parser.parse_args()
    result = asyncio.run(run(args.preset, args.repeat, args.runs))
    OUT.mkdir(exist_ok=True)
    (OUT / "ehrqa_overhead.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
