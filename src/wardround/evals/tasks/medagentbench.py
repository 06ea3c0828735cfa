"""MedAgentBench's ten task templates, instantiated on our own patients.

MedAgentBench (stanfordmlgroup/MedAgentBench, test_data_v2.json) has ten categories of
clinical tasks written against 100 de-identified patients that are not public. We keep
each category's instruction and context text, and put in our patients, codes and times:

- "now": as in the original, the context states a fixed time ("It's <T> now") and answers
  are computed relative to it, never to the wall clock. Our charts span different years,
  so T is fixed per sample: one day after the patient's last record for tasks 1-3 and 8,
  and a time near one of the patient's results for the tasks about recent results, chosen
  so that both outcomes (a value within 24 h or not, low or normal, recent or stale) occur.
  The tools show the chart as of T (later records are hidden), as a real EHR would.
- codes: the original's local lab codes become the LOINC codes our data holds: MG ->
  19123-9 (magnesium, mg/dL), GLU -> 2339-0 (blood glucose, mg/dL), K -> 6298-4 (blood
  potassium, mmol/L), A1C -> 4548-4 (HbA1c, %). Order codes (NDCs, LOINC 2823-3 and 4548-4,
  SNOMED 306181000000106) are the original's.
- patients: MRNs are our patients' MR identifiers; the tools accept an MRN wherever a
  patient id goes, as the original server did.
- added results: PySynthea records no magnesium and its potassium is never low, so on such
  a chart a task4/task5/task9 sample adds one result (magnesium within 24 h or earlier, in
  each dosing band; a low potassium), kept in the sample: the tools list it among the
  chart's records, nothing is written to the server (see ADDED_LABS).

Orders are graded from the POST bodies the write tools capture (see evals/mab_tools.py, and
mab_grading.py for the graders):
reading them back from the server would let concurrent samples see each other's orders and
change the reference data for later runs; capturing matches the original harness, which
graded the POSTs in the agent's history. Graders follow the original's rules per category,
with two documented leniencies: numbers compare within a tolerance, and order times need
the right day (the original wanted the exact minute).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel, Field, field_validator

from wardround.evals.chart import Chart, fetch_chart, full_name, list_patient_ids, mrn_of
from wardround.evals.data import load_json
from wardround.evals.scorers import retrieval_scores
from wardround.evals.task import EvalEnv, Sample, Score, Task, TaskDef, Trace
from wardround.evals.tasks.mab_grading import (
    NOT_FOUND,
    SBAR,
    grade,
    magnesium_dose,
    parse_answer,
    potassium_dose,
)
from wardround.evals.traces import trace_from
from wardround.fhir.fields import age_on
from wardround.graphs.trace import stored_refs

SEED = 23
PER_CATEGORY = 30
MAX_STEPS = 8
ORIGINAL_NOW = "2023-11-13T10:15:00+00:00"
# The original's local lab codes, and what our synthetic data holds instead.
CODE_MAP = {"MG": "19123-9", "GLU": "2339-0", "K": "6298-4", "A1C": "4548-4"}
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

PROMPT = """You are an expert in using FHIR functions to assist medical professionals. \
Use the tools to read the patient's chart and, when the task asks for it, to write orders.
When the task is done, give your final answer as FINISH([answer1, answer2, ...]): a JSON \
list holding only the values asked for (an empty list if the task asks for none).

Context: {context}
Task: {instruction}"""


# ---------------------------------------------------------------- templates


def templates(env: EvalEnv) -> dict[str, dict[str, Any]]:
    """The first task of each category in test_data_v2.json: its instruction and context."""
    out: dict[str, dict[str, Any]] = {}
    for item in load_json("medagentbench/test_data_v2.json", env.settings):
        category = item["id"].split("_")[0]
        out.setdefault(category, item)
    return out


def instantiate(
    template: dict[str, Any], *, mrn: str, now: str, name: str = "", dob: str = ""
) -> tuple[str, str]:
    """The template's instruction and context with our patient, time and codes put in."""
    instruction, context = template["instruction"], template["context"]
    if template["id"].startswith("task1_"):
        instruction, n = re.subn(
            r"name .+? and DOB of \d{4}-\d{2}-\d{2}", f"name {name} and DOB of {dob}", instruction
        )
    else:
        instruction, n = instruction.replace(template["eval_MRN"], mrn), 1
    if n != 1 or (template["context"] and ORIGINAL_NOW not in context):
        raise ValueError(f"template {template['id']} has an unexpected shape")
    context = context.replace(ORIGINAL_NOW, now)
    for local, loinc in CODE_MAP.items():
        context = context.replace(f'"{local}"', f'"{loinc}"')
    return instruction.strip(), context.strip()


# ---------------------------------------------------------------- anchors and references


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def base_now(chart: Chart) -> datetime | None:
    """10:15 UTC on the day after the patient's last record."""
    last = chart.last_data_time()
    if last is None:
        return None
    day = (last + timedelta(days=1)).astimezone(UTC)
    return day.replace(hour=10, minute=15, second=0, microsecond=0)


def readings(chart: Chart, local: str) -> list[tuple[datetime, float, str]]:
    """(time, value, ref) of the results for one of the original's codes, oldest first."""
    return [(t, v, f"Observation/{o['id']}") for t, v, _, o in chart.observations(CODE_MAP[local])]


def latest_before(
    rows: list[tuple[datetime, float, str]], now: datetime, window: timedelta | None = None
) -> tuple[datetime, float, str] | None:
    seen = [r for r in rows if r[0] <= now and (window is None or r[0] > now - window)]
    return seen[-1] if seen else None


def _round(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def anchors_near(
    rows: list[tuple[datetime, float, str]], rng: random.Random, hours: tuple[float, float]
) -> Iterator[datetime]:
    """A time `hours` after each result (at random within the range)."""
    for t, _, _ in rows:
        yield _round(t + timedelta(hours=rng.uniform(*hours)))


# ---------------------------------------------------------------- candidate generation


@dataclass
class Candidate:
    """One possible sample: a patient, a fixed "now", the outcome class and the reference."""

    chart: Chart
    now: datetime
    outcome: str
    target: dict[str, Any]
    name: str = ""
    dob: str = ""
    # Results this sample adds to the chart (see ADDED_LABS), and a tag that tells it apart.
    added: list[dict[str, Any]] = field(default_factory=list)
    tag: str = ""


def _common(chart: Chart, now: datetime) -> dict[str, Any]:
    return {"patient_id": chart.id, "mrn": mrn_of(chart.patient) or chart.id, "now": _iso(now)}


def gen_task1(
    chart: Chart, rng: random.Random, all_keys: set[tuple[str, str]]
) -> Iterator[Candidate]:
    now, dob = base_now(chart), chart.patient.get("birthDate")
    given, family = full_name(chart.patient)
    if now is None or not dob or not family:
        return
    name = f"{given} {family}".strip()
    yield Candidate(
        chart,
        now,
        "found",
        {**_common(chart, now), "expected": mrn_of(chart.patient)},
        name=name,
        dob=dob,
    )
    shifted = (datetime.fromisoformat(dob) + timedelta(days=rng.choice([1, 31, 366, 3653]))).date()
    if (name.lower(), shifted.isoformat()) not in all_keys:
        target = {**_common(chart, now), "expected": NOT_FOUND}
        yield Candidate(chart, now, "not_found", target, name=name, dob=shifted.isoformat())


def gen_task2(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    now, birth = base_now(chart), chart.birth_date
    if now is not None and birth is not None:
        yield Candidate(
            chart, now, "age", {**_common(chart, now), "age": age_on(birth, now.date())}
        )


def gen_task3(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    now = base_now(chart)
    if now is not None:
        yield Candidate(chart, now, "record", {**_common(chart, now), "value": "118/77 mmHg"})


# Results some templates need that our synthetic patients lack: PySynthea records no
# magnesium, and its potassium is never low. A sample on such a chart brings one result
# along (`added`, kept in the sample): the tools show it among the chart's records; nothing
# is written to the server. (tag, hours before "now", value) per added result.
ADDED_LABS = {
    "MG": ("Magnesium [Mass/volume] in Serum or Plasma", "mg/dL"),
    "K": ("Potassium [Moles/volume] in Blood", "mmol/L"),
}
Plan = list[tuple[str, tuple[float, float], float]]
MG_TODAY_OR_NOT: Plan = [
    ("mg-today", (1, 23), 1.8),
    ("mg-today-2", (1, 23), 2.3),
    ("mg-earlier", (26, 72), 1.6),
]
MG_BANDS: Plan = [
    ("mg-severe", (1, 23), 0.8),
    ("mg-moderate", (1, 23), 1.3),
    ("mg-mild", (1, 23), 1.7),
    ("mg-normal", (1, 23), 2.2),
    ("mg-earlier", (26, 72), 1.6),
]
K_LOW: Plan = [("k-low", (1, 12), 3.1), ("k-low-2", (1, 12), 2.8), ("k-low-3", (1, 12), 3.4)]


def added_result(chart: Chart, local: str, at: datetime, value: float, tag: str) -> dict[str, Any]:
    """A lab result for the sample's chart, as the server would hold it (a LOINC code)."""
    display, unit = ADDED_LABS[local]
    digest = hashlib.sha1(f"{chart.id}|{tag}|{_iso(at)}".encode()).hexdigest()[:12]
    return {
        "resourceType": "Observation",
        "id": f"mab-{tag}-{digest}",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": CODE_MAP[local], "display": display}]
        },
        "subject": {"reference": f"Patient/{chart.id}"},
        "effectiveDateTime": _iso(at),
        "valueQuantity": {"value": value, "unit": unit},
    }


def with_added(
    chart: Chart, rng: random.Random, local: str, plan: Plan
) -> Iterator[tuple[datetime, str, list[dict[str, Any]], list[tuple[datetime, float, str]]]]:
    """(now, tag, added results, all rows) for each planned result, "now" the day after the
    chart's last record (so the added result is the latest)."""
    now = base_now(chart)
    if now is None:
        return
    for tag, hours, value in plan:
        at = _round(now - timedelta(hours=rng.uniform(*hours)))
        resource = added_result(chart, local, at, value, tag)
        rows = sorted([*readings(chart, local), (at, value, f"Observation/{resource['id']}")])
        yield now, tag, [resource], rows


def _window_candidates(
    chart: Chart,
    rng: random.Random,
    local: str,
    make: Callable[[datetime, list], tuple[str, dict]],
    plan: Plan | None = None,
) -> Iterator[Candidate]:
    rows = readings(chart, local)
    times = list(anchors_near(rows, rng, (0.5, 23.5))) + list(anchors_near(rows, rng, (30, 96)))
    now0 = base_now(chart)
    if not rows and now0 is not None:
        times.append(now0)
    for now in times:
        outcome, target = make(now, rows)
        yield Candidate(chart, now, outcome, {**_common(chart, now), **target})
    if rows:
        return
    for now, tag, added, all_rows in with_added(chart, rng, local, plan or []):
        outcome, target = make(now, all_rows)
        target = {**_common(chart, now), **target}
        yield Candidate(chart, now, outcome, target, added=added, tag=tag)


def gen_task4(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    def make(now: datetime, rows: list) -> tuple[str, dict]:
        hit = latest_before(rows, now, timedelta(hours=24))
        if hit is None:
            return "none", {"value": -1, "evidence": []}
        return "value", {"value": hit[1], "evidence": [hit[2]]}

    yield from _window_candidates(chart, rng, "MG", make, MG_TODAY_OR_NOT)


def gen_task5(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    def make(now: datetime, rows: list) -> tuple[str, dict]:
        hit = latest_before(rows, now, timedelta(hours=24))
        if hit is None:
            return "none", {"value": -1, "dose": None, "evidence": []}
        dose = magnesium_dose(hit[1])
        return ("order" if dose else "normal"), {
            "value": hit[1],
            "dose": dose,
            "evidence": [hit[2]],
        }

    yield from _window_candidates(chart, rng, "MG", make, MG_BANDS)


def gen_task6(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    def make(now: datetime, rows: list) -> tuple[str, dict]:
        inside = [r for r in rows if now - timedelta(hours=24) < r[0] <= now]
        if not inside:
            return "none", {"value": -1, "evidence": []}
        mean = sum(r[1] for r in inside) / len(inside)
        return "value", {"value": mean, "evidence": [r[2] for r in inside]}

    yield from _window_candidates(chart, rng, "GLU", make)


def gen_task7(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    rows = readings(chart, "GLU")
    for now in anchors_near(rows, rng, (1, 24 * 60)):
        hit = latest_before(rows, now)
        if hit is not None:
            yield Candidate(
                chart, now, "value", {**_common(chart, now), "value": hit[1], "evidence": [hit[2]]}
            )


def gen_task8(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    now = base_now(chart)
    if now is not None:
        yield Candidate(chart, now, "refer", {**_common(chart, now), "note": SBAR})


def _potassium(chart: Chart, now: datetime, rows: list) -> tuple[str, dict[str, Any]] | None:
    hit = latest_before(rows, now)
    if hit is None:
        return None
    dose = potassium_dose(hit[1])
    target = {**_common(chart, now), "value": hit[1], "dose_meq": dose, "evidence": [hit[2]]}
    return ("order" if dose else "normal"), target


def gen_task9(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    rows = readings(chart, "K")
    for now in anchors_near(rows, rng, (0.5, 12)):
        if (found := _potassium(chart, now, rows)) is not None:
            yield Candidate(chart, now, *found)
    if rows and all(potassium_dose(r[1]) is None for r in rows):  # never low: add a low one
        for now, tag, added, all_rows in with_added(chart, rng, "K", K_LOW):
            if (found := _potassium(chart, now, all_rows)) is not None:
                yield Candidate(chart, now, *found, added=added, tag=tag)


def gen_task10(chart: Chart, rng: random.Random) -> Iterator[Candidate]:
    rows = readings(chart, "A1C")
    times = list(anchors_near(rows, rng, (24 * 20, 24 * 300)))
    times += list(anchors_near(rows, rng, (24 * 380, 24 * 900)))
    now0 = base_now(chart)
    if not rows and now0 is not None:
        times.append(now0)
    for now in times:
        hit = latest_before(rows, now)
        target: dict[str, Any]
        if hit is None:
            target = {"value": -1, "date": None, "order": True, "evidence": []}
            outcome = "none"
        else:
            stale = hit[0] < now - timedelta(days=365)
            target = {"value": hit[1], "date": _iso(hit[0]), "order": stale, "evidence": [hit[2]]}
            outcome = "stale" if stale else "recent"
        yield Candidate(chart, now, outcome, {**_common(chart, now), **target})


GENERATORS: dict[str, Callable[..., Iterator[Candidate]]] = {
    "task2": gen_task2,
    "task3": gen_task3,
    "task4": gen_task4,
    "task5": gen_task5,
    "task6": gen_task6,
    "task7": gen_task7,
    "task8": gen_task8,
    "task9": gen_task9,
    "task10": gen_task10,
}
CATEGORIES = tuple(f"task{i}" for i in range(1, 11))


def _pick(candidates: list[Candidate], n: int, seed: int, category: str) -> list[Candidate]:
    """Up to n, spread over outcomes first and patients second (round-robin), deterministic."""
    by_outcome: dict[str, dict[str, list[Candidate]]] = defaultdict(lambda: defaultdict(list))
    for c in candidates:
        by_outcome[c.outcome][c.chart.id].append(c)
    queues: list[list[list[Candidate]]] = []
    for outcome in sorted(by_outcome):
        per_patient = []
        for pid in sorted(by_outcome[outcome]):
            items = by_outcome[outcome][pid]
            random.Random(f"{seed}:{category}:{outcome}:{pid}").shuffle(items)
            per_patient.append(items)
        queues.append(per_patient)
    chosen: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    turn = [0] * len(queues)
    while len(chosen) < n and any(any(q) for q in queues):
        for i, per_patient in enumerate(queues):
            if len(chosen) >= n or not any(per_patient):
                continue
            for _ in range(len(per_patient)):
                queue = per_patient[turn[i] % len(per_patient)]
                turn[i] += 1
                if queue:
                    c = queue.pop(0)
                    key = (c.chart.id, _iso(c.now) + c.dob + c.tag)
                    if key not in seen:
                        seen.add(key)
                        chosen.append(c)
                    break
    return chosen


def build_samples(
    charts: list[Chart],
    tmpl: dict[str, dict[str, Any]],
    per_category: int = PER_CATEGORY,
    seed: int = SEED,
) -> list[Sample]:
    living = [c for c in charts if c.death is None]
    keys = {
        (" ".join(full_name(c.patient)).strip().lower(), str(c.patient.get("birthDate")))
        for c in charts
    }
    samples: list[Sample] = []
    for category in CATEGORIES:
        candidates: list[Candidate] = []
        for chart in charts if category == "task1" else living:
            rng = random.Random(f"{seed}:{chart.id}:{category}")
            if category == "task1":
                candidates += list(gen_task1(chart, rng, keys))
            else:
                candidates += list(GENERATORS[category](chart, rng))
        for c in _pick(candidates, per_category, seed, category):
            instruction, context = instantiate(
                tmpl[category], mrn=str(c.target["mrn"]), now=_iso(c.now), name=c.name, dob=c.dob
            )
            key = f"{c.chart.id}|{_iso(c.now)}|{c.dob}" + (f"|{c.tag}" if c.tag else "")
            digest = hashlib.sha1(key.encode()).hexdigest()[:10]
            samples.append(
                Sample(
                    id=f"mab-{category}-{digest}",
                    input=instruction,
                    category=category,
                    target={**c.target, "outcome": c.outcome},
                    metadata={
                        "context": context,
                        "now": _iso(c.now),
                        "template": tmpl[category]["id"],
                        **({"added": c.added} if c.added else {}),
                    },
                )
            )
    return samples


MODES = ("ours", "official")


def mode_of(env: EvalEnv) -> str:
    """`-o mode=ours` (the templates on our patients, the default) or `official` (the
    original 300 tasks against the benchmark's own FHIR server, see mab_official/)."""
    mode = env.option("mode", "ours")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


async def dataset(env: EvalEnv) -> list[Sample]:
    if mode_of(env) == "official":
        from wardround.evals.tasks import mab_official

        return await mab_official.dataset(env)
    limit = int(env.option("patients", "0")) or None
    per_category = int(env.option("per_category", str(PER_CATEGORY)))
    charts = []
    for pid in await list_patient_ids(env.fhir, limit):
        charts.append(await fetch_chart(env.fhir, pid, ("Observation", "Encounter", "Condition")))
    return build_samples(charts, templates(env), per_category)


# ---------------------------------------------------------------- retrieval


def evidence_of(sample: Sample) -> list[str]:
    """The records a correct solution must read: the results behind the reference value, or
    the patient's own record for the lookup and age tasks (none for pure writes)."""
    target = sample.target
    if target.get("evidence"):
        return list(target["evidence"])
    looked_up = sample.category == "task2" or target.get("outcome") == "found"
    return [f"Patient/{target['patient_id']}"] if looked_up else []


def retrieved_refs(messages: list[dict[str, Any]]) -> list[str]:
    """References the read tools returned; a write's artifact is what it created, not read."""
    return stored_refs(messages, skip=("post_",))


async def score(sample: Sample, trace: Trace) -> Score:
    """The category's grader, plus retrieval scored apart from the verdict. Answers are
    FINISH([...]) lists that cite nothing, so citation scores stay undefined."""
    result = grade(sample, trace)
    read = trace.retrieved or retrieved_refs(trace.messages)  # older traces lack `retrieved`
    scores = retrieval_scores(evidence_of(sample), read, [])
    scores["citation_recall"] = scores["citation_precision"] = None
    result.metadata.update(scores)
    return result


# ---------------------------------------------------------------- solver


MAX_VALUE_WORDS = 6  # "Patient not found" is a value; a tool's sentence copied is not


class FinishAnswer(BaseModel):
    """FINISH's list as the final answer's schema: a small model otherwise copies a tool's
    sentence ("No result of code ...") where a number or [-1] is asked for."""

    answer: list[int | float | str] = Field(
        description='Only the values asked for, e.g. [2.1] or ["Patient not found"]; [] if none'
    )

    @field_validator("answer", mode="before")
    @classmethod
    def _finish_text(cls, value: Any) -> Any:
        # A FINISH([...]) text (a model without the grammar, the original protocol's habit).
        return (parse_answer(value) or []) if isinstance(value, str) else value

    @field_validator("answer")
    @classmethod
    def _values_not_sentences(cls, values: list[Any]) -> list[Any]:
        for value in values:
            if isinstance(value, str) and len(value.split()) > MAX_VALUE_WORDS:
                raise ValueError(
                    f"{value!r} is a sentence: give only the value asked for (a number, a "
                    "date, an identifier, or the task's own words for none, e.g. [-1])"
                )
        return values


def tool_solver(env: EvalEnv, max_steps: int) -> Callable[[Sample], Awaitable[Trace]]:
    """The free tool loop over the profile's tools (`tools_of`), the chart as of the sample's
    "now"; the trace keeps the POSTs it captured and the tools it was offered (for export)."""
    from wardround.evals.export import tool_specs
    from wardround.evals.tasks.mab_clinical import make_clinical_tools
    from wardround.evals.tasks.mab_tools import OrderLog, make_mab_tools, original_descriptions
    from wardround.graphs.tool_loop import Choice, offered_tools, run_tool_loop

    choice = cast(Choice, env.option("choice", "two_step"))  # one_call or two_step
    # The loop's finish checks (unsupported values, orders written as text): opt-in here
    # until measured on this task; an age or a dose is computed, not read.
    check = env.option("check", "off") == "on"
    make_tools = make_clinical_tools if tools_of(env) == "clinical" else make_mab_tools
    descriptions = None
    if env.option("descriptions", "short") == "original":
        descriptions = original_descriptions(load_json("medagentbench/funcs_v1.json", env.settings))

    async def solve(sample: Sample) -> Trace:
        orders = OrderLog()
        now = datetime.fromisoformat(sample.metadata["now"])
        added = sample.metadata.get("added") or []
        built = make_tools(env.fhir, orders, as_of=now, descriptions=descriptions, added=added)
        tools = offered_tools(built, sample.input)
        prompt = PROMPT.format(context=sample.metadata["context"], instruction=sample.input)
        result = await run_tool_loop(
            prompt, tools, model=env.model, max_steps=max_steps, choice=choice, check=check,
            task=sample.input, final=FinishAnswer, now=now,
        )  # fmt: skip
        artifacts = {"posts": orders.as_artifact(), "tools": tool_specs(tools)}
        trace = trace_from(result, artifacts=artifacts)
        trace.retrieved = retrieved_refs(trace.messages)
        return trace

    return solve


def tools_of(env: EvalEnv) -> str:
    """The tool profile: "functions" (the nine of funcs_v1.json) or "clinical" (the searches
    that stay, and tools at a clinician's level: evals/tasks/mab_clinical.py)."""
    profile = env.option("tools", "functions")
    if profile not in ("functions", "clinical"):
        raise ValueError(f"unknown tools profile {profile!r} (functions or clinical)")
    return profile


def bind(env: EvalEnv, samples: list[Sample]) -> Task:
    if mode_of(env) == "official":
        from wardround.evals.tasks import mab_official

        return mab_official.bind(env, samples)
    max_steps = int(env.option("max_steps", str(MAX_STEPS)))
    original = env.option("descriptions", "short") == "original"
    return Task(
        name="medagentbench",
        samples=samples,
        solver=tool_solver(env, max_steps),
        scorer=score,
        scoring="per-category graders over the FINISH([...]) answer and the captured POST "
        "bodies; numbers within tolerance, order times to the day",
        info={
            "tool_descriptions": "original" if original else "short",
            "max_steps": max_steps,
            "choice": env.option("choice", "two_step"),
            "check": env.option("check", "off"),
            "tools": tools_of(env),
        },
    )


TASK = TaskDef(
    name="medagentbench",
    description="MedAgentBench's 10 task templates on our patients, with order graders "
    "(-o mode=official: the original 300 tasks on the benchmark's FHIR server)",
    dataset=dataset,
    bind=bind,
    needs_fhir=True,
)
