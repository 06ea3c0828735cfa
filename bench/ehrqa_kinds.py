"""The EHR QA planner on the question kinds beyond ehrqa's ten, in wordings of our own.

    .venv/bin/python -m bench.ehrqa_kinds [--per-kind 2] [--phrasings 0,1,2] [--out PATH]

Against the FHIR server of the settings (the stack's, or `WARDROUND_FHIR_BASE_URL`) and the
embedded model: for each kind below, questions over the server's patients whose answers are
computed by code from their FHIR records (`evals/chart.py` lookups), each asked in up to
three wordings written here (neither the planner's prompts nor ehrqa's templates; the third,
a busy clinician's terse typing, written without seeing how the planner parses questions, is
held out: asked only when `--phrasings` names 2), answered by
`wardround.graphs.ehr_qa.answer_question` (the planner) and scored with `evals/scorers.py`.
Yes/no questions are right when the answer begins with the right Yes or No.

Prints accuracy per kind and per phrasing with Wilson 95% intervals and p50/p95 seconds a
question; writes one JSON line per answered question to `--out` as it goes (default
`bench/out/ehrqa_kinds.jsonl`), so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from wardround.evals import scorers
from wardround.evals.chart import Chart, display, fetch_chart, list_patient_ids, refs, when
from wardround.evals.stats import wilson
from wardround.evals.task import Sample, Score
from wardround.evals.tasks import ehrqa

OUT = Path(__file__).parent / "out" / "ehrqa_kinds.jsonl"
TYPES = ("Observation", "MedicationRequest", "Condition", "Encounter", "Procedure", "Immunization")
SEED = 23
SMOKING = "72166-2"
# Conditions asked about when the chart lacks them ("never"), in a clinician's words; a chart
# whose conditions mention any of the words is not asked about that one.
ABSENT_CONDITIONS = {
    "asthma": ("asthma",),
    "epilepsy": ("epilepsy", "seizure"),
    "rheumatoid arthritis": ("rheumatoid",),
    "type 1 diabetes": ("type 1", "diabetes mellitus type 1", "ketoacidosis"),
    "atrial fibrillation": ("atrial fibrillation",),
    "hypothyroidism": ("hypothyroidism", "thyroid"),
    "multiple sclerosis": ("multiple sclerosis",),
    "heart failure": ("heart failure",),
    "tuberculosis": ("tuberculosis",),
    "gout": ("gout",),
}
SMOKING_SYNONYMS = {
    "never": ("never smoked", "never smoker", "non smoker", "nonsmoker", "does not smoke"),
    "ex": ("ex smoker", "former smoker", "quit smoking", "past smoker", "previous smoker"),
    "current": ("smokes", "current smoker", "current every day smoker", "daily smoker"),
}

# Three wordings per kind: {name} a result, {cond} a condition, {med} a medication, {day} an
# ISO day, {long} the same day spelled out, {year}, {limit}, {unit}, {dir} above|below. The
# third (index 2) is held out: a clinician's terse chart-copilot typing, written without
# reading the planner, to measure how far its accuracy carries to wordings it was not tuned on.
WORDINGS: dict[str, tuple[str, str, str]] = {
    "highest": ("What was the highest {name} ever recorded for this patient?",
                "Peak {name} on file?",
                "pt's all-time max {name}?"),
    "lowest": ("What is the lowest {name} value in the chart?",
               "Minimum {name} the patient has had?",
               "{name} nadir across all of pt's results?"),
    "first_value": ("What was the very first {name} measured for this patient?",
                    "Earliest {name} result on record?",
                    "what did pt's {name} show the first time it was checked?"),
    "ever_yes": ("Has the patient ever been diagnosed with {cond}?",
                 "Any history of {cond}? yes or no",
                 "ever dx'd w/ {cond}? y/n"),
    "ever_no": ("Has the patient ever been diagnosed with {cond}?",
                "Any history of {cond}? yes or no",
                "ever dx'd w/ {cond}? y/n"),
    "first_diagnosed": ("When was {cond} first diagnosed?",
                        "Date {cond} was first noted in the chart?",
                        "{cond} - when did pt first get that dx?"),
    "procedure_on_date": ("What procedure was performed on {day}?",
                          "Which procedures did the patient undergo on {long}?",
                          "{long}: what procs did pt have done?"),
    "visit_reason": ("What was the patient's visit on {day} for?",
                     "Reason for the encounter on {long}?",
                     "pt came in {day} - what for?"),
    "vaccines_in_year": ("Which vaccines did the patient receive in {year}?",
                         "Immunizations given during {year}?",
                         "{year} - which shots did pt get?"),
    "medication_started": ("When was {med} first prescribed?",
                           "Start date of {med}?",
                           "{med}: first rx'd when?"),
    "threshold": ("Was the {name} ever {dir} {limit} {unit} in {year}?",
                  "In {year}, did any {name} reading go {dir} {limit}? yes or no",
                  "{year} - pt's {name} {dir} {limit} {unit} at any point? y/n"),
    "smoking": ("What is the patient's smoking status?",
                "Does the chart say whether the patient smokes?",
                "per chart, is pt a never, ex or current smoker?"),
}  # fmt: skip
PHRASINGS = range(3)
KINDS = tuple(WORDINGS)


def _plain(name: str) -> str:
    """A SNOMED display without its semantic tag: 'Acute bronchitis'."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", name).strip()


def _inline(name: str) -> str:
    """A name as written inside a sentence: 'acute bronchitis' (acronyms kept: 'COPD')."""
    plain = _plain(name)
    return plain[0].lower() + plain[1:] if plain[1:2].islower() else plain


def _sample(chart: Chart, kind: str, slots: dict[str, Any], target: dict[str, Any]) -> Sample:
    digest = hashlib.sha1(f"{chart.id}|{kind}|{sorted(slots.items())}".encode()).hexdigest()[:12]
    return Sample(
        id=f"kinds-{kind}-{digest}",
        input=WORDINGS[kind][0].format(**slots),
        target=target,
        category=kind,
        metadata={"patient_id": chart.id, "slots": slots},
    )


def _numeric(value: float, rows: list, unit: str) -> dict[str, Any]:
    return {"kind": "numeric", "value": value, "unit": unit, "exact": False,
            "evidence": refs(r[3] for r in rows)}  # fmt: skip


def _series(chart: Chart) -> Iterator[tuple[str, str, list]]:
    for code, name in ehrqa._results(chart):
        rows = chart.observations(code)
        if len(rows) >= 3:
            yield code, name, rows


# ---------------------------------------------------------------- generators, one per kind


def highest(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    for _, name, rows in _series(chart):
        top = max(r[1] for r in rows)
        if sum(r[1] > rows[-1][1] for r in rows) == 0:
            continue  # the latest is the highest: a latest-value answer would pass
        at = [r for r in rows if r[1] == top]
        yield _sample(chart, "highest", {"name": name}, _numeric(top, at, at[0][2]))


def lowest(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    for _, name, rows in _series(chart):
        low = min(r[1] for r in rows)
        if low == rows[-1][1]:
            continue
        at = [r for r in rows if r[1] == low]
        yield _sample(chart, "lowest", {"name": name}, _numeric(low, at, at[0][2]))


def first_value(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    for _, name, rows in _series(chart):
        if rows[0][0] == rows[1][0] or rows[0][1] == rows[-1][1]:
            continue  # two results at the first instant, or first == latest
        yield _sample(chart, "first_value", {"name": name},
                      _numeric(rows[0][1], rows[:1], rows[0][2]))  # fmt: skip


def _conditions(chart: Chart) -> list[tuple[date, str, dict[str, Any]]]:
    rows = []
    for c in chart.of("Condition"):
        name, at = display(c), when(c)
        if at is not None and name != "?" and "(finding)" not in name:
            rows.append((at.date(), name, c))
    return sorted(rows, key=lambda row: (row[0], row[1]))


def ever_yes(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    seen: set[str] = set()
    for _, name, c in _conditions(chart):
        cond = _plain(name)
        if cond.lower() not in seen:
            seen.add(cond.lower())
            target = {"kind": "yes_no", "value": "yes", "evidence": refs([c])}
            yield _sample(chart, "ever_yes", {"cond": _inline(cond)}, target)


def ever_no(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    names = " ".join(scorers.normalise(n) for _, n, _ in _conditions(chart))
    names += " " + " ".join(scorers.normalise(display(c)) for c in chart.of("Condition"))
    for cond, words in ABSENT_CONDITIONS.items():
        if not any(scorers.normalise(w) in names for w in words):
            target = {"kind": "yes_no", "value": "no", "evidence": []}
            yield _sample(chart, "ever_no", {"cond": cond}, target)


def first_diagnosed(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    first: dict[str, tuple[date, dict[str, Any]]] = {}
    for day, name, c in _conditions(chart):
        first.setdefault(_plain(name), (day, c))
    for cond, (day, c) in first.items():
        target = {"kind": "date", "value": day.isoformat(), "evidence": refs([c])}
        yield _sample(chart, "first_diagnosed", {"cond": _inline(cond)}, target)


def _long(day: date) -> str:
    return f"{day:%B} {day.day}, {day.year}"


def _by_day(resources: list[dict[str, Any]], field: str) -> dict[date, list[tuple[str, dict]]]:
    out: dict[date, list[tuple[str, dict]]] = defaultdict(list)
    for r in resources:
        at, name = when(r), display(r, field)
        if at is not None and name != "?":
            out[at.date()].append((name, r))
    return out


def procedure_on_date(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    by_day = _by_day(chart.of("Procedure"), "code")
    days = [d for d, rows in by_day.items() if 1 <= len({n for n, _ in rows}) <= 3]
    for day in rng.sample(sorted(days), min(3, len(days))):
        names = list(dict.fromkeys(n for n, _ in by_day[day]))
        others = {n for d, rows in by_day.items() if d != day for n, _ in rows} - set(names)
        target = {"kind": "set", "expected": names, "distractors": sorted(others)[:20],
                  "evidence": refs(r for _, r in by_day[day])}  # fmt: skip
        slots = {"day": day.isoformat(), "long": _long(day)}
        yield _sample(chart, "procedure_on_date", slots, target)


def _visit(encounter: dict[str, Any]) -> str | None:
    """What a visit was for: its reason when that reads as words (PySynthea's reasons are
    mostly its modules' tags, e.g. `Medication_Review_Due`, left out), else its type."""
    for concept in encounter.get("reasonCode") or []:
        for text in [concept.get("text"), *(c.get("display") for c in concept.get("coding") or [])]:
            if text and "_" not in text:
                return str(text)
    name = display((encounter.get("type") or [{}])[0]) if encounter.get("type") else "?"
    return None if name == "?" else name


def visit_reason(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    by_day: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for e in chart.of("Encounter"):
        if (at := when(e)) is not None:
            by_day[at.date()].append(e)
    days = [d for d, es in by_day.items() if len(es) == 1 and _visit(es[0])]
    for day in rng.sample(sorted(days), min(3, len(days))):
        encounter = by_day[day][0]
        what = _visit(encounter) or ""
        others = {v for d, es in by_day.items() if d != day for e in es if (v := _visit(e))}
        target = {"kind": "set", "expected": [what],
                  "distractors": sorted(others - {what})[:20], "evidence": refs([encounter])}  # fmt: skip
        yield _sample(chart, "visit_reason", {"day": day.isoformat(), "long": _long(day)}, target)


def vaccines_in_year(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    by_year: dict[int, list[tuple[str, dict]]] = defaultdict(list)
    for r in chart.of("Immunization"):
        if (at := when(r)) is not None and (name := display(r, "vaccineCode")) != "?":
            by_year[at.year].append((name, r))
    years = [y for y, rows in by_year.items() if 1 <= len({n for n, _ in rows}) <= 4]
    for year in rng.sample(sorted(years), min(3, len(years))):
        names = list(dict.fromkeys(n for n, _ in by_year[year]))
        others = {n for y, rows in by_year.items() if y != year for n, _ in rows} - set(names)
        target = {"kind": "set", "expected": names, "distractors": sorted(others)[:20],
                  "evidence": refs(r for _, r in by_year[year])}  # fmt: skip
        yield _sample(chart, "vaccines_in_year", {"year": year}, target)


def medication_started(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    first: dict[str, tuple[date, dict[str, Any]]] = {}
    dated = [(at, r) for r in chart.of("MedicationRequest") if (at := when(r)) is not None]
    for at, r in sorted(dated, key=lambda pair: pair[0]):
        name = display(r, "medicationCodeableConcept")
        if name != "?":
            first.setdefault(name, (at.date(), r))
    for med, (day, r) in first.items():
        target = {"kind": "date", "value": day.isoformat(), "evidence": refs([r])}
        yield _sample(chart, "medication_started", {"med": med}, target)


def threshold(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    for _, name, rows in _series(chart):
        by_year: dict[int, list] = defaultdict(list)
        for row in rows:
            by_year[row[0].year].append(row)
        year = rng.choice(sorted(by_year))
        values = [r[1] for r in by_year[year]]
        unit = by_year[year][0][2]
        direction = rng.choice(["above", "below"])
        want_yes = rng.random() < 0.5
        top, low = max(values), min(values)
        if direction == "above":
            limit = round(top * 0.97, 1) if want_yes else round(top * 1.05 + 1, 0)
            deciding = [r for r in by_year[year] if r[1] > limit]
        else:
            limit = round(low * 1.03, 1) if want_yes else round(max(low * 0.95 - 1, 0), 0)
            deciding = [r for r in by_year[year] if r[1] < limit]
        if limit in values or (direction == "below" and limit <= 0):
            continue
        answer = "yes" if deciding else "no"
        target = {"kind": "yes_no", "value": answer,
                  "evidence": refs(r[3] for r in (deciding or by_year[year]))}  # fmt: skip
        slots = {"name": name, "dir": direction, "limit": f"{limit:g}", "unit": unit,
                 "year": year}  # fmt: skip
        yield _sample(chart, "threshold", slots, target)


def smoking(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    rows = []
    for obs in chart.of("Observation"):
        codes = {c.get("code") for c in (obs.get("code") or {}).get("coding") or []}
        if SMOKING in codes and (at := when(obs)) is not None:
            rows.append((at, obs))
    if rows:
        _, obs = max(rows, key=lambda pair: (pair[0], pair[1].get("id", "")))
        status = display(obs, "valueCodeableConcept")
        if status != "?":
            group = _smoking_group(status)
            target = {"kind": "text", "value": _plain(status),
                      "synonyms": list(SMOKING_SYNONYMS.get(group, ())), "evidence": refs([obs])}  # fmt: skip
            yield _sample(chart, "smoking", {}, target)


def _smoking_group(status: str) -> str | None:
    text = scorers.normalise(status)
    if "never" in text or "non smoker" in text:
        return "never"
    if "ex smoker" in text or "former" in text or "quit" in text:
        return "ex"
    if "smok" in text:
        return "current"
    return None


GENERATORS: dict[str, Callable[[Chart, random.Random], Iterator[Sample]]] = {
    "highest": highest,
    "lowest": lowest,
    "first_value": first_value,
    "ever_yes": ever_yes,
    "ever_no": ever_no,
    "first_diagnosed": first_diagnosed,
    "procedure_on_date": procedure_on_date,
    "visit_reason": visit_reason,
    "vaccines_in_year": vaccines_in_year,
    "medication_started": medication_started,
    "threshold": threshold,
    "smoking": smoking,
}


# ---------------------------------------------------------------- choosing and scoring


def choose(charts: list[Chart], per_kind: int, seed: int = SEED) -> list[Sample]:
    """Up to `per_kind` samples of each kind, spread over patients round-robin."""
    chosen: list[Sample] = []
    for kind, generate in GENERATORS.items():
        queues = []
        for chart in charts:
            items = list(generate(chart, random.Random(f"{seed}:{chart.id}:{kind}")))
            random.Random(f"{seed}:{chart.id}:{kind}:order").shuffle(items)
            queues.append(items)
        taken = 0
        while taken < per_kind and any(queues):
            for queue in queues:
                if queue and taken < per_kind:
                    chosen.append(queue.pop(0))
                    taken += 1
    return chosen


def worded(sample: Sample, phrasing: int) -> Sample:
    question = WORDINGS[sample.category][phrasing].format(**sample.metadata["slots"])
    return sample.model_copy(update={"input": question})


_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def score_yes_no(answer: str, target: str) -> Score:
    """Right when the answer begins with the right Yes or No (issue 20: yes/no answers begin
    with one); `begins` in the metadata says whether it did, `first` is the first one used."""
    text = answer.strip()
    begins = re.match(r"^\W*(yes|no)\b", text, re.I)
    first = _YES_NO.search(text)
    got = (begins or first)[1].lower() if (begins or first) else None  # type: ignore[index]
    ok = bool(begins) and got == target
    why = f"begins {got!r}" if begins else f"does not begin with yes/no (first: {got!r})"
    return Score.of(ok, f"{why}, expected {target!r}", got=got, begins=bool(begins))


def score_answer(sample: Sample, answer: str) -> Score:
    target = sample.target
    if target["kind"] == "yes_no":
        return score_yes_no(answer, target["value"])
    if target["kind"] == "text":
        return scorers.score_text(answer, target["value"], target.get("synonyms", ()))
    return ehrqa.score_answer(sample, answer)


def key(sample: Sample) -> str:
    return hashlib.sha1(f"{sample.id}|{sample.input}".encode()).hexdigest()[:16]


def _interval(right: int, n: int) -> str:
    ci = wilson(right, n)
    return f"{right}/{n} = {right / n:.0%} (95% {ci.lo:.0%}-{ci.hi:.0%})"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    if not rows:
        return out
    right = sum(r["correct"] for r in rows)
    ci = wilson(right, len(rows))
    seconds = sorted(r["s"] for r in rows)
    out.update({
        "right": right, "accuracy": round(right / len(rows), 3),
        "wilson95": [round(ci.lo, 3), round(ci.hi, 3)],
        "p50_s": round(statistics.median(seconds), 1),
        "p95_s": round(seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], 1),
        "errors": sum(bool(r.get("error")) for r in rows),
    })  # fmt: skip
    for field in ("kind", "phrasing"):
        groups: dict[Any, list[bool]] = defaultdict(list)
        for r in rows:
            groups[r[field]].append(r["correct"])
        out[f"by_{field}"] = {str(k): _interval(sum(v), len(v)) for k, v in sorted(groups.items())}
    return out


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from wardround.agents.embedded import ensure_model_server
    from wardround.agents.models import make_chat_model
    from wardround.fhir.client import FhirClient
    from wardround.graphs.ehr_qa import answer_question
    from wardround.settings import Settings
    from wardround.tools.text_embeddings import minilm_similarity

    settings = Settings()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = (
        {json.loads(line)["key"]: json.loads(line) for line in out.open()} if out.exists() else {}
    )
    phrasings = [int(p) for p in args.phrasings.split(",")]
    async with FhirClient.from_settings(settings) as fhir:
        ids = await list_patient_ids(fhir, args.patients or None)
        charts = [await fetch_chart(fhir, pid, TYPES) for pid in ids]
        base = choose(charts, args.per_kind)
        # Round by round (the i-th sample of every kind in one wording, then the other), so
        # a stopped run has covered every kind.
        order: dict[str, int] = defaultdict(int)
        ranked = []
        for s in base:
            ranked.append((order[s.category], s))
            order[s.category] += 1
        todo = [(worded(s, p), p) for r in range(max(order.values(), default=0))
                for p in phrasings for i, s in ranked if i == r]  # fmt: skip
        print(f"{len(todo)} questions over {len(ids)} patients at {settings.fhir_base_url}",
              flush=True)  # fmt: skip
        model = None
        if any(key(s) not in done for s, _ in todo):
            ensure_model_server(settings)  # the stack's, or started here as `ask` would
            model = make_chat_model(settings)
        similarity = minilm_similarity() if model is not None else None
        rows = []
        for i, (sample, phrasing) in enumerate(todo):
            k = key(sample)
            if k not in done:
                result = await answer_question(
                    sample.input, sample.metadata["patient_id"], model=model, fhir=fhir,
                    similarity=similarity,
                )  # fmt: skip
                score = score_answer(sample, result.answer)
                row = {"key": k, "kind": sample.category, "phrasing": phrasing,
                       "patient_id": sample.metadata["patient_id"], "question": sample.input,
                       "target": sample.target, "answer": result.answer,
                       "correct": bool(score.correct), "why": score.explanation,
                       "plan": result.plan, "computed": result.computed,
                       "citations": result.citations, "s": round(result.latency_s, 2),
                       "error": result.error, "source": settings.fhir_base_url}  # fmt: skip
                done[k] = row
                with out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(f"[{i + 1}/{len(todo)}] {'ok ' if row['correct'] else 'BAD'} {row['s']:.1f}s "
                      f"{sample.input!r} -> {result.answer[:100]!r} ({score.explanation})",
                      flush=True)  # fmt: skip
            rows.append(done[k])
    return rows


def _phrasings(text: str) -> str:
    """`--phrasings`: comma-separated indices into each kind's wordings, each 0, 1 or 2."""
    try:
        picked = [int(p) for p in text.split(",")]
    except ValueError:
        picked = []
    if not picked or any(p not in PHRASINGS for p in picked):
        among = ", ".join(map(str, PHRASINGS))
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated wordings among {among}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-kind", type=int, default=2, help="samples of each kind")
    parser.add_argument(
        "--phrasings",
        default="0,1",
        type=_phrasings,
        help="which wordings, comma-separated: 0, 1, 2 (held out) or e.g. 0,1,2",
    )
    parser.add_argument("--patients", type=int, default=0, help="first N patients (0: all)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--dry-run", action="store_true", help="print the questions and truth")
    args = parser.parse_args()
    if args.dry_run:
        asyncio.run(dry_run(args))
        return
    rows = asyncio.run(run(args))
    print(json.dumps(summary(rows), indent=2))


async def dry_run(args: argparse.Namespace) -> None:
    from wardround.fhir.client import FhirClient
    from wardround.settings import Settings

    settings = Settings()
    async with FhirClient.from_settings(settings) as fhir:
        ids = await list_patient_ids(fhir, args.patients or None)
        charts = [await fetch_chart(fhir, pid, TYPES) for pid in ids]
    for s in choose(charts, args.per_kind):
        truth = {k: v for k, v in s.target.items() if k != "evidence"}
        print(f"{s.category:20s} {worded(s, 1).input!r:70s} {json.dumps(truth)[:150]}")


if __name__ == "__main__":
    main()
