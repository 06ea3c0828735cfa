"""MedAgentBench's official mode: the original tasks, both protocols end to end against a
SEKMET seeded with stand-in patients that carry the task file's MRNs, references computed
from the server at grading time."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from eval_fixtures import BENCHMARK_DATA
from fakes import ScriptedChatModel
from wardround.evals.data import load_json
from wardround.evals.task import EvalEnv, Sample
from wardround.evals.tasks import mab_grading as grading
from wardround.evals.tasks import medagentbench
from wardround.evals.tasks.mab_official import bind, seed
from wardround.evals.tasks.mab_official.dataset import ORIGINAL_NOW, TASK_FILE, official_samples
from wardround.evals.tasks.mab_official.references import reference
from wardround.evals.tasks.mab_official.text_protocol import parse_action
from wardround.fhir.client import FhirClient
from wardround.settings import Settings
from wardround.testing.sekmet_inprocess import asgi_client, sekmet_app

pytestmark = pytest.mark.asyncio(loop_scope="session")


def settings() -> Settings:
    return Settings(benchmark_data_dir=BENCHMARK_DATA)


def items() -> list[dict]:
    return load_json(TASK_FILE, settings())


@dataclass
class Seeded:
    client: FhirClient
    samples: list[Sample]
    targets: dict[str, dict]  # sample id -> its reference, computed from the server


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seeded]:
    client = asgi_client(sekmet_app(tmp_path_factory.mktemp("sekmet-mab-official")))
    await seed.load_seed(client, items())
    samples = official_samples(items())
    targets = {s.id: await reference(client, s) for s in samples}
    yield Seeded(client, samples, targets)
    await client.aclose()


def env_for(client: FhirClient, model=None, **options: str) -> EvalEnv:
    return EvalEnv(
        settings=settings(),
        fhir=client,
        model=model,
        options={"mode": "official", "choice": "one_call", **options},
    )


def pick(seeded: Seeded, category: str, outcome: str) -> tuple[Sample, dict]:
    sample = next(
        s
        for s in seeded.samples
        if s.category == category and seeded.targets[s.id]["outcome"] == outcome
    )
    return sample, seeded.targets[sample.id]


async def solve_and_score(env: EvalEnv, sample: Sample, replies: list):
    env.model = ScriptedChatModel(replies=list(replies))
    task = bind(env, [sample])
    trace = await task.solver(sample)
    return trace, await task.scorer(sample, trace)


# ---------------------------------------------------------------- the original tasks


async def test_the_300_tasks_are_the_file_as_it_is():
    samples = official_samples(items())
    assert len(samples) == 300
    assert Counter(s.category for s in samples) == {f"task{i}": 30 for i in range(1, 11)}
    first = {s.id: s for s in samples}["task4_1"]
    assert first.input.startswith("What’s the most recent magnesium level of the patient S3032536")
    assert first.metadata["context"].startswith(
        f'It\'s {ORIGINAL_NOW} now. The code for magnesium is "MG"'
    )
    assert first.target["mrn"] == "S3032536"
    assert len(official_samples(items(), per_category=2)) == 20
    # the dataset goes through the task's mode switch
    assert len(await medagentbench.dataset(env_for(None))) == 300  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reply", "kind", "url"),
    [
        (
            "GET http://h/fhir/Observation?patient=S1&code=MG",
            "GET",
            "http://h/fhir/Observation?patient=S1&code=MG",
        ),
        (
            "```tool_code\nGET http://h/fhir/Patient?identifier=S1\n```",
            "GET",
            "http://h/fhir/Patient?identifier=S1",
        ),
        (
            'POST http://h/fhir/ServiceRequest\n{"resourceType": "ServiceRequest"}',
            "POST",
            "http://h/fhir/ServiceRequest",
        ),
        ("FINISH([2.1])", "FINISH", ""),
        ("The magnesium is 2.1", "invalid", ""),
    ],
)
async def test_replies_are_read_as_the_original_harness_reads_them(reply, kind, url):
    action = parse_action(reply)
    assert (action.kind, action.url) == (kind, url)
    assert parse_action("POST http://h/fhir/X\nnot json").body is None


# ---------------------------------------------------------------- references from the server


async def test_the_seeded_server_gives_every_category_both_branches(seeded: Seeded):
    outcomes = Counter((s.category, seeded.targets[s.id]["outcome"]) for s in seeded.samples)
    want = {
        "task1": {"found", "not_found"},
        "task4": {"value", "none"},
        "task5": {"order", "normal", "none"},
        "task6": {"value", "none"},
        "task7": {"value", "none"},
        "task9": {"order", "normal", "none"},
        "task10": {"recent", "stale", "none"},
    }
    for category, branches in want.items():
        assert {o for c, o in outcomes if c == category} == branches, category
    # task1's answers agree with the file's own solutions
    for s in seeded.samples:
        if s.category == "task1":
            assert [seeded.targets[s.id]["expected"]] == s.target["sol"]
    severe = [t for t in seeded.targets.values() if t.get("dose") == (4, 4)]
    assert severe and all(t["value"] < 1.0 for t in severe)


# ---------------------------------------------------------------- the original protocol


def base(seeded: Seeded) -> str:
    return seeded.client.base_url + "/"


async def test_original_protocol_lookup_right_and_wrong(seeded: Seeded):
    sample, target = pick(seeded, "task1", "found")
    get = f"GET {base(seeded)}Patient?family=Stafford&birthdate=1932-12-29"
    trace, score = await solve_and_score(
        env_for(seeded.client), sample, [get, f'FINISH(["{target["expected"]}"])']
    )
    assert score.correct, score.explanation
    assert trace.steps == 2 and trace.artifacts["protocol"] == "original"
    assert "The GET request returned" in trace.messages[2]["content"]
    assert f"Patient/{target['expected']}" in trace.retrieved
    prompt = trace.messages[0]["content"]
    assert f"Use {base(seeded)} as the api_base" in prompt and "Observation.Search (Labs)" in prompt
    _, wrong = await solve_and_score(env_for(seeded.client), sample, ['FINISH(["S0000000"])'])
    assert not wrong.correct


async def test_original_protocol_magnesium_order_is_graded_from_the_server(seeded: Seeded):
    sample, target = pick(seeded, "task5", "order")
    grams, hours = target["dose"]
    order = {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": grading.NDC_MAGNESIUM}]
        },
        "authoredOn": ORIGINAL_NOW,
        "dosageInstruction": [
            {
                "route": {"text": "IV"},
                "doseAndRate": [
                    {
                        "doseQuantity": {"value": grams, "unit": "g"},
                        "rateQuantity": {"value": hours, "unit": "h"},
                    }
                ],
            }
        ],
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{target['mrn']}"},
    }
    get = f"GET {base(seeded)}Observation?patient={target['mrn']}&code=MG&date=ge2023-11-12T10:15:00+00:00"
    post = f"POST {base(seeded)}MedicationRequest\n{json.dumps(order)}"
    trace, score = await solve_and_score(
        env_for(seeded.client), sample, [get, post, f"FINISH([{target['value']}])"]
    )
    assert score.correct, score.explanation
    assert (
        trace.artifacts["posts"][0]["body"]["dosageInstruction"][0]["doseAndRate"][0][
            "doseQuantity"
        ]["value"]
        == grams
    )
    assert target["evidence"][0] in trace.retrieved  # the "+00:00" in the date filter survived
    assert score.metadata["reference"]["value"] == target["value"]
    # the same order to the wrong URL, a wrong dose, or no order at all: each fails
    wrong_url = f"POST {base(seeded)}ServiceRequest\n{json.dumps(order)}"
    _, misfiled = await solve_and_score(env_for(seeded.client), sample, [wrong_url, "FINISH([])"])
    assert not misfiled.correct and "POST to" in misfiled.explanation
    order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = grams + 1
    _, overdosed = await solve_and_score(
        env_for(seeded.client),
        sample,
        [f"POST {base(seeded)}MedicationRequest\n{json.dumps(order)}", "FINISH([])"],
    )
    assert not overdosed.correct
    _, nothing = await solve_and_score(
        env_for(seeded.client), sample, [f"FINISH([{target['value']}])"]
    )
    assert not nothing.correct


async def test_original_protocol_no_magnesium_today_orders_nothing(seeded: Seeded):
    sample, target = pick(seeded, "task4", "none")
    get = f"GET {base(seeded)}Observation?patient={target['mrn']}&code=MG"
    _, right = await solve_and_score(env_for(seeded.client), sample, [get, "FINISH([-1])"])
    assert right.correct, right.explanation
    _, wrong = await solve_and_score(env_for(seeded.client), sample, [get, "FINISH([1.6])"])
    assert not wrong.correct


async def test_original_protocol_stops_on_an_invalid_reply_and_after_8_rounds(seeded: Seeded):
    sample, _ = pick(seeded, "task2", "age")
    trace, score = await solve_and_score(env_for(seeded.client), sample, ["The patient is 60."])
    assert not score.correct and "invalid action" in trace.artifacts["solver_error"]
    get = f"GET {base(seeded)}Patient?identifier={sample.target['mrn']}"
    trace, score = await solve_and_score(env_for(seeded.client), sample, [get] * 8)
    assert trace.steps == 8 and "no FINISH after 8 rounds" in trace.artifacts["solver_error"]
    error = await solve_and_score(
        env_for(seeded.client), sample, ["GET http://elsewhere.test/fhir/Patient", "FINISH([1])"]
    )
    assert "Error in sending the GET request" in error[0].messages[2]["content"]


# ---------------------------------------------------------------- the tool protocol


async def test_tool_protocol_potassium_order_pair(seeded: Seeded):
    sample, target = pick(seeded, "task9", "order")
    medication = {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": grading.NDC_POTASSIUM}]
        },
        "authoredOn": ORIGINAL_NOW,
        "dosageInstruction": [
            {
                "route": {"text": "oral"},
                "doseAndRate": [{"doseQuantity": {"value": target["dose_meq"], "unit": "mEq"}}],
            }
        ],
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{target['mrn']}"},
    }
    lab = {
        "resourceType": "ServiceRequest",
        "code": {"coding": [{"system": "http://loinc.org", "code": grading.LOINC_SERUM_K}]},
        "authoredOn": ORIGINAL_NOW,
        "status": "active",
        "intent": "order",
        "priority": "stat",
        "subject": {"reference": f"Patient/{target['mrn']}"},
        "occurrenceDateTime": "2023-11-14T08:00:00+00:00",
    }
    replies = [
        json.dumps(
            {"action": "get_lab_observations", "args": {"patient": target["mrn"], "code": "K"}}
        ),
        json.dumps({"action": "post_medication_request", "args": medication}),
        json.dumps({"action": "post_service_request", "args": lab}),
        json.dumps({"action": "final_answer", "answer": f"FINISH([{target['value']}])"}),
    ]
    env = env_for(seeded.client, protocol="tools")
    trace, score = await solve_and_score(env, sample, replies)
    assert score.correct, score.explanation
    assert [c["name"] for c in trace.tool_calls] == [
        "get_lab_observations",
        "post_medication_request",
        "post_service_request",
    ]
    assert target["evidence"][0] in trace.retrieved
    assert {t["function"]["name"] for t in trace.artifacts["tools"]} >= {"get_lab_observations"}
    # only the medication, not the paired lab: fails
    _, half = await solve_and_score(env, sample, [replies[1], replies[3]])
    assert not half.correct and "2" in half.explanation


async def test_tool_protocol_normal_potassium_orders_nothing(seeded: Seeded):
    sample, target = pick(seeded, "task9", "normal")
    read = json.dumps(
        {"action": "get_lab_observations", "args": {"patient": target["mrn"], "code": "K"}}
    )
    env = env_for(seeded.client, protocol="tools")
    _, right = await solve_and_score(
        env,
        sample,
        [read, json.dumps({"action": "final_answer", "answer": f"FINISH([{target['value']}])"})],
    )
    assert right.correct, right.explanation
    _, wrong = await solve_and_score(
        env, sample, [read, json.dumps({"action": "final_answer", "answer": "FINISH([3.3])"})]
    )
    assert not wrong.correct


async def test_an_unknown_protocol_or_mode_is_refused(seeded: Seeded):
    with pytest.raises(ValueError, match="protocol"):
        bind(env_for(seeded.client, protocol="xml"), [])
    with pytest.raises(ValueError, match="mode"):
        await medagentbench.dataset(EvalEnv(settings=settings(), options={"mode": "paper"}))


# ---------------------------------------------------------------- our instantiation: both branches


async def test_our_samples_hold_both_branches_even_on_a_synthea_like_chart(eval_fhir):
    # Bob is shaped as PySynthea's patients are: no magnesium, potassium never low. His
    # samples add the result a branch needs; Ann's own results give hers.
    from wardround.evals.chart import fetch_chart

    tmpl = medagentbench.templates(EvalEnv(settings=settings()))
    bob = await fetch_chart(eval_fhir.client, eval_fhir.ids["bob"])
    assert (
        not medagentbench.readings(bob, "MG")
        and min(v for _, v, _ in medagentbench.readings(bob, "K")) >= 3.5
    )
    want = {
        "task4": {"value", "none"},
        "task5": {"order", "normal", "none"},
        "task9": {"order", "normal"},
    }
    both = {**want, "task6": {"value", "none"}, "task10": {"recent", "stale"}}
    for charts, branches_of in (([bob], want), (await _both(eval_fhir), both)):
        samples = medagentbench.build_samples(charts, tmpl)
        outcomes = {(s.category, s.target["outcome"]) for s in samples}
        for category, branches in branches_of.items():
            assert {o for c, o in outcomes if c == category} >= branches, (category, outcomes)
    samples = medagentbench.build_samples([bob], tmpl)
    for s in samples:
        for added in s.metadata.get("added", []):
            assert added["subject"]["reference"] == f"Patient/{bob.id}"
            assert added["effectiveDateTime"] < s.metadata["now"]
            used = f"Observation/{added['id']}" in s.target["evidence"]
            assert used == (s.target["outcome"] != "none")  # an older result is not the answer
    bands = {s.target["dose"] and tuple(s.target["dose"]) for s in samples if s.category == "task5"}
    assert bands >= {(4, 4), (2, 2), (1, 1), None}
    # reproducible, and the same ids again
    assert [s.id for s in samples] == [s.id for s in medagentbench.build_samples([bob], tmpl)]


async def _both(eval_fhir):
    from wardround.evals.chart import fetch_chart

    return [await fetch_chart(eval_fhir.client, eval_fhir.ids[n]) for n in ("ann", "bob")]


async def test_an_added_result_is_read_through_the_tools_not_the_server(eval_fhir):
    tmpl = medagentbench.templates(EvalEnv(settings=settings()))
    from wardround.evals.chart import fetch_chart

    bob = await fetch_chart(eval_fhir.client, eval_fhir.ids["bob"])
    sample = next(
        s
        for s in medagentbench.build_samples([bob], tmpl)
        if s.category == "task5" and s.target["outcome"] == "order"
    )
    added = sample.metadata["added"][0]
    env = EvalEnv(settings=settings(), fhir=eval_fhir.client, options={"choice": "one_call"})
    since = datetime.fromisoformat(sample.metadata["now"]) - timedelta(hours=24)
    read = {"patient": "7654321", "code": "19123-9", "date": f"ge{since.isoformat()}"}
    env.model = ScriptedChatModel(
        replies=[
            json.dumps({"action": "get_lab_observations", "args": read}),
            json.dumps({"action": "final_answer", "answer": f"FINISH([{sample.target['value']}])"}),
        ]
    )
    task = medagentbench.bind(env, [sample])
    trace = await task.solver(sample)
    result = trace.messages[2]
    assert result["role"] == "tool" and f"{sample.target['value']} mg/dL" in result["content"]
    assert result["artifact"] == [f"Observation/{added['id']}"]
    score = await task.scorer(sample, trace)
    assert not score.correct and "POSTs, expected 1" in score.explanation  # read, but no order
    assert not await eval_fhir.client.search("Observation", {"patient": bob.id, "code": "19123-9"})


async def test_added_records_answer_only_the_searches_they_match():
    from wardround.evals.tasks.mab_tools import added_matches

    obs = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
        "category": [{"coding": [{"code": "laboratory"}]}],
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-05-01T20:00:00+00:00",
    }
    assert added_matches(
        obs, "Observation", [("patient", "p1"), ("code", "http://loinc.org|19123-9")]
    )
    assert added_matches(
        obs, "Observation", [("patient", "p1"), ("date", "ge2024-05-01T12:00:00+00:00")]
    )
    assert added_matches(obs, "Observation", [("date", "2024-05-01")])
    assert not added_matches(obs, "Observation", [("date", "lt2024-05-01T12:00:00+00:00")])
    assert not added_matches(obs, "Observation", [("patient", "p2")])
    assert not added_matches(obs, "Observation", [("code", "2339-0")])
    assert not added_matches(obs, "Condition", [("patient", "p1")])
    assert not added_matches(obs, "Observation", [("category", "vital-signs")])
