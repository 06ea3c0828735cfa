"""EHR question answering over the seeded patients, with answers computed from their FHIR data.

Questions come from templates in ten categories; each answer, and the ids of the records it
rests on, is computed by code from the patient's records as the FHIR server returns them
(never by a model). Categories: latest value of a result, value on a date, trend of the
last two results, active medications, allergies, conditions diagnosed since a date, counts,
last encounter, age on a date, and questions whose right answer is that nothing is recorded.

Scoring: numbers as rounded by the answer (counts and ages exact), dates to the day,
sets (every expected item named, no distractor named), trend words, and for "nothing
recorded" an answer that says so without claiming a value; see scorers.py.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

from wardround.evals import scorers
from wardround.evals.chart import Chart, display, fetch_chart, list_patient_ids, refs, when
from wardround.evals.task import EvalEnv, Sample, Score, Task, TaskDef, Trace
from wardround.evals.traces import trace_from
from wardround.fhir.fields import age_on, status_code

SEED = 17
PER_CATEGORY = 25  # 10 categories: 250 questions when the charts hold enough
CATEGORIES = (
    "latest_value",
    "value_on_date",
    "trend",
    "active_medications",
    "allergies",
    "conditions_since",
    "count",
    "last_encounter",
    "age",
    "nothing_recorded",
)

# Results asked about, by LOINC code, with the name a clinician would use.
RESULTS: dict[str, str] = {
    "4548-4": "hemoglobin A1c",
    "2339-0": "blood glucose",
    "2345-7": "serum glucose",
    "6298-4": "blood potassium",
    "2823-3": "serum potassium",
    "2947-0": "sodium",
    "2069-3": "chloride",
    "20565-8": "bicarbonate (total CO2)",
    "38483-4": "creatinine",
    "6299-2": "blood urea nitrogen",
    "49765-1": "calcium",
    "33914-3": "eGFR",
    "19123-9": "magnesium",
    "2093-3": "total cholesterol",
    "18262-6": "LDL cholesterol",
    "2085-9": "HDL cholesterol",
    "2571-8": "triglycerides",
    "718-7": "hemoglobin",
    "4544-3": "hematocrit",
    "6690-2": "white blood cell count",
    "777-3": "platelet count",
    "1742-6": "ALT",
    "1920-8": "AST",
    "1975-2": "total bilirubin",
    "1751-7": "albumin",
    "8480-6": "systolic blood pressure",
    "8462-4": "diastolic blood pressure",
    "29463-7": "body weight",
    "39156-5": "body mass index",
    "8867-4": "heart rate",
    "9279-1": "respiratory rate",
    "2708-6": "oxygen saturation",
    "8310-5": "body temperature",
}
_MAX_SET = 6  # longer lists make a question about recall, not about records


def _results(chart: Chart) -> Iterator[tuple[str, str]]:
    """(code, name) of the results to ask about, leaving out a name the chart also gives to
    another code (a "Platelet Count" LOINC beside 777-3): such a question has two answers."""
    for code, name in RESULTS.items():
        if not chart.codes_named(name) - {code}:
            yield code, name


def _sample(chart: Chart, category: str, question: str, target: dict[str, Any]) -> Sample:
    digest = hashlib.sha1(f"{chart.id}|{question}".encode()).hexdigest()[:12]
    return Sample(
        id=f"ehrqa-{category}-{digest}",
        input=question,
        target=target,
        category=category,
        metadata={"patient_id": chart.id},
    )


def _numeric(value: float, evidence: list[str], unit: str = "", exact: bool = False) -> dict:
    return {"kind": "numeric", "value": value, "unit": unit, "exact": exact, "evidence": evidence}


# ---------------------------------------------------------------- generators, one per category


def latest_value(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    for code, name in _results(chart):
        rows = chart.observations(code)
        if len(rows) > 1 and rows[-1][0] == rows[-2][0] and rows[-1][1] != rows[-2][1]:
            continue  # two different results at the same instant: "most recent" is ambiguous
        if rows:
            _, value, unit, obs = rows[-1]
            q = f"What is the patient's most recent {name} result?"
            yield _sample(chart, "latest_value", q, _numeric(value, refs([obs]), unit))


def value_on_date(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    for code, name in _results(chart):
        by_day: dict[date, list] = defaultdict(list)
        for row in chart.observations(code):
            by_day[row[0].date()].append(row)
        days = [d for d, rows in by_day.items() if len(rows) == 1]  # one result: no ambiguity
        if days:
            day = rng.choice(sorted(days))
            _, value, unit, obs = by_day[day][0]
            q = f"What was the patient's {name} on {day.isoformat()}?"
            yield _sample(chart, "value_on_date", q, _numeric(value, refs([obs]), unit))


def trend(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    for code, name in _results(chart):
        rows = chart.observations(code)
        if len(rows) < 2 or rows[-1][0] == rows[-2][0]:
            continue
        before, after = rows[-2][1], rows[-1][1]
        change = (after - before) / abs(before) if before else float("inf")
        if after == before:
            label = "unchanged"
        elif abs(change) > 0.03:  # small moves are left out: their label would be arguable
            label = "increased" if after > before else "decreased"
        else:
            continue
        q = (
            f"Comparing the patient's two most recent {name} results, did the value increase, "
            "decrease or stay the same?"
        )
        target = {"kind": "trend", "value": label, "evidence": refs([rows[-2][3], rows[-1][3]])}
        yield _sample(chart, "trend", q, target)


def _med_name(request: dict[str, Any]) -> str:
    return display(request, "medicationCodeableConcept")


def active_medications(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    requests = chart.of("MedicationRequest")
    active = [r for r in requests if r.get("status") == "active"]
    names = list(dict.fromkeys(_med_name(r) for r in active))
    if "?" in names:  # a medication the record does not name cannot be an expected answer
        return
    if 1 <= len(names) <= _MAX_SET:
        others = {_med_name(r) for r in requests if r.get("status") != "active"} - set(names)
        q = "Which medications does the patient currently have active prescriptions for?"
        target = {
            "kind": "set",
            "expected": names,
            "distractors": sorted(others)[:20],
            "evidence": refs(active),
        }
        yield _sample(chart, "active_medications", q, target)


def _allergies(chart: Chart) -> list[dict[str, Any]]:
    return [
        a
        for a in chart.of("AllergyIntolerance")
        if status_code(a, "verificationStatus") not in {"refuted", "entered-in-error"}
        and status_code(a, "clinicalStatus") in {None, "active"}
        and "(finding)" not in display(a)  # "Allergic disposition" is not an allergen
    ]


def allergies(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    found = _allergies(chart)
    names = list(dict.fromkeys(display(a) for a in found))
    if 1 <= len(names) <= _MAX_SET + 2:
        q = "What allergies or intolerances are recorded for the patient?"
        target = {"kind": "set", "expected": names, "distractors": [], "evidence": refs(found)}
        yield _sample(chart, "allergies", q, target)


def _disorders(chart: Chart) -> list[tuple[date, str, dict[str, Any]]]:
    rows = []
    for c in chart.of("Condition"):
        name, at = display(c), when(c)
        if at is not None and "(disorder)" in name:
            rows.append((at.date(), name, c))
    return sorted(rows, key=lambda row: row[0])


def conditions_since(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    rows = _disorders(chart)
    onsets = sorted({d for d, _, _ in rows}, reverse=True)
    for k in (1, 3):  # the latest diagnosis date, and a wider window
        if len(onsets) < k:
            continue
        since = onsets[k - 1]
        after = [r for r in rows if r[0] >= since]
        names = list(dict.fromkeys(n for _, n, _ in after))
        if not 1 <= len(names) <= _MAX_SET:
            continue
        others = {n for d, n, _ in rows if d < since} - set(names)
        q = f"Which conditions (disorders) were diagnosed on or after {since.isoformat()}?"
        target = {
            "kind": "set",
            "expected": names,
            "distractors": sorted(others)[:20],
            "evidence": refs(r for _, _, r in after),
        }
        yield _sample(chart, "conditions_since", q, target)


def count(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    for code, name in _results(chart):
        rows = chart.observations(code)
        if 2 <= len(rows) <= 40:
            q = f"How many {name} results are recorded for the patient?"
            yield _sample(
                chart, "count", q, _numeric(len(rows), refs(r[3] for r in rows), "", exact=True)
            )
    by_year: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in chart.of("Encounter"):
        at = when(e)
        if at is not None:
            by_year[at.year].append(e)
    for year in sorted(by_year)[-3:]:
        q = f"How many encounters did the patient have in {year}?"
        target = _numeric(len(by_year[year]), refs(by_year[year]), "", exact=True)
        yield _sample(chart, "count", q, target)


def last_encounter(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    dated = [(at, e) for e in chart.of("Encounter") if (at := when(e)) is not None]
    if dated:
        at, encounter = max(dated, key=lambda pair: pair[0])
        q = "On what date was the patient's most recent encounter?"
        target = {"kind": "date", "value": at.date().isoformat(), "evidence": refs([encounter])}
        yield _sample(chart, "last_encounter", q, target)


def age(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    birth, last = chart.birth_date, chart.last_data_time()
    if birth is None or last is None:
        return
    death = chart.death.date() if chart.death else None
    days = [last.date()]
    span = (last.date() - birth).days
    if span > 3 * 365:
        days.append(birth + timedelta(days=rng.randrange(365, span)))
    for day in days:
        if death is not None and day > death:
            continue
        q = f"How old was the patient, in whole years, on {day.isoformat()}?"
        target = _numeric(age_on(birth, day), [f"Patient/{chart.id}"], "years", exact=True)
        yield _sample(chart, "age", q, target)


def nothing_recorded(chart: Chart, rng: random.Random) -> Iterator[Sample]:
    none_of = {"kind": "nothing", "evidence": []}
    missing = [(c, n) for c, n in _results(chart) if not chart.observations(c)]
    for code, name in rng.sample(missing, min(3, len(missing))):
        q = f"What is the patient's most recent {name} result?"
        yield _sample(chart, "nothing_recorded", q, dict(none_of, code=code))
    if not _allergies(chart):
        yield _sample(
            chart,
            "nothing_recorded",
            "What allergies or intolerances are recorded for the patient?",
            none_of,
        )
    if not any(r.get("status") == "active" for r in chart.of("MedicationRequest")):
        q = "Which medications does the patient currently have active prescriptions for?"
        yield _sample(chart, "nothing_recorded", q, none_of)
    rows = _disorders(chart)
    last = chart.last_data_time()
    if last is not None and (not rows or rows[-1][0] < last.date()):
        since = (rows[-1][0] if rows else last.date()) + timedelta(days=1)
        q = f"Which conditions (disorders) were diagnosed on or after {since.isoformat()}?"
        yield _sample(chart, "nothing_recorded", q, none_of)


GENERATORS: dict[str, Callable[[Chart, random.Random], Iterator[Sample]]] = {
    "latest_value": latest_value,
    "value_on_date": value_on_date,
    "trend": trend,
    "active_medications": active_medications,
    "allergies": allergies,
    "conditions_since": conditions_since,
    "count": count,
    "last_encounter": last_encounter,
    "age": age,
    "nothing_recorded": nothing_recorded,
}


def questions_for(chart: Chart, seed: int = SEED) -> dict[str, list[Sample]]:
    """Every candidate question for one chart, by category."""
    out: dict[str, list[Sample]] = {}
    for category, generate in GENERATORS.items():
        rng = random.Random(f"{seed}:{chart.id}:{category}")
        out[category] = list(generate(chart, rng))
    return out


def select(
    candidates: dict[str, dict[str, list[Sample]]],
    per_category: int = PER_CATEGORY,
    seed: int = SEED,
) -> list[Sample]:
    """Up to `per_category` questions per category, spread over patients round-robin; a
    category short of candidates leaves its quota to the others."""
    pools: dict[str, list[list[Sample]]] = {}
    for category in CATEGORIES:
        per_patient = []
        for pid in sorted(candidates):
            items = list(candidates[pid].get(category, []))
            random.Random(f"{seed}:{pid}:{category}:order").shuffle(items)
            per_patient.append(items)
        pools[category] = per_patient

    def take(category: str, n: int, chosen: list[Sample]) -> int:
        taken = 0
        queues = pools[category]
        while taken < n and any(queues):
            for queue in queues:
                if queue and taken < n:
                    chosen.append(queue.pop(0))
                    taken += 1
        return taken

    chosen: list[Sample] = []
    short = 0
    for category in CATEGORIES:
        short += per_category - take(category, per_category, chosen)
    while short > 0:  # hand the unused quota, one at a time, to categories with spare ones
        gave = 0
        for category in CATEGORIES:
            if short > 0 and take(category, 1, chosen):
                short, gave = short - 1, gave + 1
        if not gave:
            break
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(chosen, key=lambda s: (order[s.category], s.id))


async def dataset(env: EvalEnv) -> list[Sample]:
    limit = int(env.option("patients", "0")) or None
    per_category = int(env.option("per_category", str(PER_CATEGORY)))
    candidates = {}
    for pid in await list_patient_ids(env.fhir, limit):
        candidates[pid] = questions_for(await fetch_chart(env.fhir, pid))
    chosen = select(candidates, per_category)
    if env.option("phrasing", "template") == "paraphrase":
        return [paraphrase(s) for s in chosen]
    return chosen


# ---------------------------------------------------------------- paraphrases

# The same questions asked the way clinicians also ask them (other words, other date
# formats), so an accuracy claim is checked against wording the graph was not built on.
# Each entry: the template's pattern, then rewrites using its named slots.
_REWRITES: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(r"What is the patient's most recent (?P<name>.+) result\?"), (
        "Latest {name}?",
        "What did the last {name} show?",
        "Can you pull up the newest {name} reading for this patient?",
    )),
    (re.compile(r"What was the patient's (?P<name>.+) on (?P<day>\d{4}-\d{2}-\d{2})\?"), (
        "What {name} value was recorded on {long}?",
        "On {us}, what was the {name}?",
        "{name} measured {dmy}: what was it?",
    )),
    (re.compile(r"Comparing the patient's two most recent (?P<name>.+) results, .*"), (
        "Has the {name} gone up or down since the previous measurement?",
        "Is the latest {name} higher or lower than the one before it?",
    )),
    (re.compile(r"Which medications does the patient currently have active prescriptions for\?"), (
        "What is the patient currently taking?",
        "List the current meds.",
    )),
    (re.compile(r"What allergies or intolerances are recorded for the patient\?"), (
        "Does the patient have any known allergies?",
        "Any drug or food allergies on file?",
    )),
    (re.compile(r"Which conditions \(disorders\) were diagnosed on or after (?P<day>[\d-]+)\?"), (
        "What new diagnoses has the patient received since {long}?",
        "List problems diagnosed from {us} onwards.",
    )),
    (re.compile(r"How many (?P<name>.+) results are recorded for the patient\?"), (
        "How many times has the {name} been measured?",
        "Number of {name} results in the chart?",
    )),
    (re.compile(r"How many encounters did the patient have in (?P<year>\d{4})\?"), (
        "How many visits were there during {year}?",
        "Count the patient's encounters for {year}.",
    )),
    (re.compile(r"On what date was the patient's most recent encounter\?"), (
        "When was the patient last seen?",
        "Date of the latest visit?",
    )),
    (re.compile(r"How old was the patient, in whole years, on (?P<day>[\d-]+)\?"), (
        "What was the patient's age on {long}?",
        "Age in years as of {us}?",
    )),
]  # fmt: skip


def _slots(match: re.Match[str]) -> dict[str, str]:
    slots = {k: v for k, v in match.groupdict().items() if v}
    if "day" in slots:
        day = date.fromisoformat(slots["day"])
        slots["long"] = f"{day:%B} {day.day}, {day.year}"
        slots["us"] = f"{day:%m/%d/%Y}"
        slots["dmy"] = f"{day.day} {day:%b} {day.year}"
    return slots


def paraphrase(sample: Sample) -> Sample:
    """The sample asked in other words (chosen by its id, so reruns agree); same target."""
    for pattern, rewrites in _REWRITES:
        match = pattern.fullmatch(sample.input)
        if match:
            pick = int(hashlib.sha1(sample.id.encode()).hexdigest(), 16) % len(rewrites)
            question = rewrites[pick].format(**_slots(match))
            return sample.model_copy(update={"id": f"{sample.id}-p", "input": question})
    raise ValueError(f"no paraphrase for {sample.input!r}")


# ---------------------------------------------------------------- scoring


def score_answer(sample: Sample, answer: str) -> Score:
    target = sample.target
    kind = target["kind"]
    if kind == "numeric":
        # Datasets frozen before "exact" existed marked counts with zero tolerances.
        exact = target.get("exact", target.get("abs_tol", 1) == 0)
        score = scorers.score_numeric(answer, float(target["value"]), exact=exact)
    elif kind == "date":
        score = scorers.score_date(answer, target["value"])
    elif kind == "set":
        score = scorers.score_set(answer, target["expected"], target.get("distractors", ()))
    elif kind == "trend":
        score = scorers.score_trend(answer, target["value"])
    elif kind == "nothing":
        score = scorers.score_nothing(answer)
    else:
        raise ValueError(f"unknown target kind {kind!r}")
    return score


async def score(sample: Sample, trace: Trace) -> Score:
    result = score_answer(sample, trace.answer)
    evidence = sample.target.get("evidence", [])
    cited = [c for c in trace.citations if c in set(evidence)]
    result.metadata["citations"] = len(trace.citations)
    result.metadata["cites_evidence"] = bool(cited) if evidence else None
    result.metadata.update(scorers.retrieval_scores(evidence, trace.retrieved, trace.citations))
    return result


def bind(env: EvalEnv, samples: list[Sample]) -> Task:
    from wardround.graphs.ehr_qa import answer_question

    graph = env.options.get("graph")
    extra: dict[str, Any] = {"graph": graph} if graph else {}
    choice = env.options.get("choice")  # the loop's step choice: one_call or two_step
    if choice:
        extra["choice"] = choice
    if graph == "loop" and env.options.get("rank") == "minilm":  # the two-step enum ranking
        from wardround.tools.text_embeddings import minilm_similarity  # loads torch

        extra["similarity"] = minilm_similarity()

    async def solve(sample: Sample) -> Trace:
        result = await answer_question(
            sample.input,
            sample.metadata["patient_id"],
            model=env.model,
            fhir=env.fhir,
            **extra,
        )
        facts = {"plan": result.plan, "computed": result.computed, "supported": result.supported}
        return trace_from(result, artifacts=facts)

    return Task(
        name="ehrqa",
        samples=samples,
        solver=solve,
        scorer=score,
        scoring="computed answers; numbers to the precision the answer writes (counts and ages "
        "exact), dates to the "
        "day, set match with distractors, trend words, explicit 'nothing recorded'",
        info={"graph": graph or "default", **({"choice": choice} if choice else {})},
    )


TASK = TaskDef(
    name="ehrqa",
    description="questions over the seeded patients' FHIR records, answers computed from the data",
    dataset=dataset,
    bind=bind,
    needs_fhir=True,
)
