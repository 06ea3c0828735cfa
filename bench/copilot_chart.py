"""The copilot's chart answers through the real API, as a new user meets them.

    .venv/bin/python -m bench.copilot_chart [-n 50] [--mode both|stream|json] [--phrasing 0|1|2] [--out PATH]

Against the stack that is up (`wardround stack up`): the API runs as its own uvicorn process
over the stack's FHIR server and embedded model; each question gets a new thread. Questions
are the ehrqa samples' truths (computed from the FHIR data by code) asked in the copilot's
own wordings below (not the eval's templates nor its paraphrases), three per kind (the
third, index 2, held out: a busy clinician's terse typing, written without seeing how the
planner parses questions). Prints accuracy with its Wilson interval, per category, HTTP 5xx,
and p50/p95 seconds a turn; writes `bench/out/copilot_chart.jsonl` (resumed: finished
questions are not asked again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from wardround.evals.chart import fetch_chart, list_patient_ids
from wardround.evals.stats import wilson
from wardround.evals.task import Sample
from wardround.evals.tasks import ehrqa
from wardround.fhir.client import FhirClient
from wardround.settings import Settings
from wardround.testing.api_inprocess import parse_sse
from wardround.testing.api_process import running_api

OUT = Path(__file__).parent / "out" / "copilot_chart.jsonl"
FACTORY = "wardround.server.asgi:app"
# The copilot's wordings: how a clinician types into a chat box. Three per kind, the third
# (index 2) held out, written without reading the planner; slots come from the ehrqa template
# the truth was computed for.
WORDINGS: list[tuple[re.Pattern[str], tuple[str, str, str]]] = [
    (re.compile(r"What is the patient's most recent (?P<name>.+) result\?"),
     ("hi, what was her last {name}?", "Most recent {name} please",
      "{name} - where's pt at on the latest result?")),
    (re.compile(r"What was the patient's (?P<name>.+) on (?P<day>[\d-]+)\?"),
     ("{name} reading from {day}?", "what did the {name} come back as on {day}",
      "{day} - what was pt's {name} that day?")),
    (re.compile(r"Comparing the patient's two most recent (?P<name>.+) results, .*"),
     ("is the {name} trending up or down lately?", "{name}: better or worse than last time?",
      "last 2 {name} results - did it go up or down?")),
    (re.compile(r"Which medications does the patient currently have active prescriptions for\?"),
     ("what meds is this patient on right now?", "current medication list?",
      "list pt's active rx")),
    (re.compile(r"What allergies or intolerances are recorded for the patient\?"),
     ("any allergies I should know about?", "allergy list please",
      "what's pt allergic or intolerant to, per chart?")),
    (re.compile(r"On what date was the patient's most recent encounter\?"),
     ("when did we last see this patient?", "date of the last visit?",
      "pt last came in on what date?")),
    (re.compile(r"How many (?P<name>.+) results are recorded for the patient\?"),
     ("how many {name} values do we have on file?", "count of {name} results?",
      "# of times pt's {name} has been checked?")),
]  # fmt: skip
PHRASINGS = range(3)
CATEGORIES = ("latest_value", "value_on_date", "trend", "active_medications", "allergies",
              "last_encounter", "count")  # fmt: skip


def worded(sample: Sample, phrasing: int) -> Sample | None:
    for pattern, wordings in WORDINGS:
        match = pattern.fullmatch(sample.input)
        if match:
            question = wordings[phrasing].format(**match.groupdict())
            return sample.model_copy(update={"input": question})
    return None


async def questions(settings: Settings, n: int, phrasing: int) -> list[Sample]:
    async with FhirClient.from_settings(settings) as fhir:
        candidates = {
            pid: {
                c: s
                for c, s in ehrqa.questions_for(await fetch_chart(fhir, pid)).items()
                if c in CATEGORIES
            }
            for pid in await list_patient_ids(fhir, None)
        }
    per_category = max(1, -(-n // len(CATEGORIES)))
    chosen = [worded(s, phrasing) for s in ehrqa.select(candidates, per_category)]
    # Category by category in turn (select() groups them), so a run stopped early, or a
    # small -n, still covers every category.
    by_category: dict[str, list[Sample]] = defaultdict(list)
    for s in chosen:
        if s is not None:
            by_category[s.category].append(s)
    rounds = max((len(v) for v in by_category.values()), default=0)
    mixed = [v[i] for i in range(rounds) for c in CATEGORIES if i < len(v := by_category[c])]
    return mixed[:n]


def ask(client: httpx.Client, sample: Sample, stream: bool) -> dict[str, Any]:
    started = time.perf_counter()
    thread = client.post("/api/threads", json={"patient_id": sample.metadata["patient_id"]})
    thread.raise_for_status()
    path = f"/api/threads/{thread.json()['thread_id']}/messages?stream={str(stream).lower()}"
    response = client.post(path, json={"content": sample.input})
    row: dict[str, Any] = {"status": response.status_code, "s": time.perf_counter() - started}
    if response.status_code != 200:
        return {**row, "answer": "", "body": response.text[:300]}
    events = parse_sse(response.text) if stream else response.json()["events"]
    answer = next((e["data"] for e in events if e["event"] == "answer"), {})
    errors = [e["data"].get("message") for e in events if e["event"] == "error"]
    return {**row, "answer": answer.get("text", ""), "supported": answer.get("supported"),
            "plan": answer.get("plan"), "citations": answer.get("citations", []),
            "errors": errors, "thread_id": thread.json()["thread_id"],
            "tools": [e["data"].get("name") for e in events if e["event"] == "tool_call"]}  # fmt: skip


def key(sample: Sample, stream: bool) -> str:
    return hashlib.sha1(f"{sample.id}|{sample.input}|{stream}".encode()).hexdigest()[:16]


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    right = sum(r["correct"] for r in rows)
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r["correct"])
    seconds = sorted(r["s"] for r in rows)
    interval = wilson(right, len(rows))
    return {
        "n": len(rows), "right": right, "accuracy": round(right / len(rows), 3),
        "wilson95": [round(interval.lo, 3), round(interval.hi, 3)],
        "http_5xx": sum(r["status"] >= 500 for r in rows),
        "p50_s": round(statistics.median(seconds), 1),
        "p95_s": round(seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], 1),
        "by_category": {c: f"{sum(v)}/{len(v)}" for c, v in sorted(by_cat.items())},
    }  # fmt: skip


def main() -> None:
    import asyncio

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--mode", choices=["both", "stream", "json"], default="both")
    parser.add_argument(
        "--phrasing",
        type=int,
        choices=list(PHRASINGS),
        default=0,
        help="which wording of each kind: 0, 1 or 2 (held out)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="results (JSON lines, resumed)")
    args = parser.parse_args()
    out_file: Path = args.out
    settings = Settings()
    samples = asyncio.run(questions(settings, args.n, args.phrasing))
    modes = {"both": [True, False], "stream": [True], "json": [False]}[args.mode]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    done = (
        {json.loads(line)["key"]: json.loads(line) for line in out_file.open()}
        if out_file.exists()
        else {}
    )
    env = {"WARDROUND_FHIR_BASE_URL": settings.fhir_base_url}
    # The stack's home: the API finds the embedded model server `stack up` started.
    with running_api(FACTORY, settings.home, env) as api, \
            httpx.Client(base_url=api.url, timeout=600) as client:  # fmt: skip
        rows = []
        for i, sample in enumerate(s for s in samples):
            stream = modes[i % len(modes)]
            k = key(sample, stream)
            if k not in done:
                row = {"key": k, "question": sample.input, "category": sample.category,
                       "stream": stream, **ask(client, sample, stream)}  # fmt: skip
                verdict = ehrqa.score_answer(sample, row["answer"])
                row.update(correct=verdict.correct, why=verdict.explanation,
                           patient_id=sample.metadata["patient_id"], target=sample.target,
                           phrasing=args.phrasing)  # fmt: skip
                done[k] = row
                with out_file.open("a") as out:
                    out.write(json.dumps(row) + "\n")
                print(f"[{i + 1}/{len(samples)}] {'ok ' if row['correct'] else 'BAD'} "
                      f"{row['s']:.1f}s {sample.input!r} -> {row['answer'][:90]!r}", flush=True)  # fmt: skip
            rows.append(done[k])
    print(json.dumps(summary(rows), indent=2))


if __name__ == "__main__":
    main()
