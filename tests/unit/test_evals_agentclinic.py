"""AgentClinic: the doctor protocol, grounded actors, the moderator, and whole consultations."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

from eval_fixtures import BENCHMARK_DATA
from fakes import ScriptedChatModel
from wardround.evals.data import load_jsonl
from wardround.evals.runner import run_task
from wardround.evals.task import EvalEnv
from wardround.evals.tasks import agentclinic as ac
from wardround.evals.tasks.clinic_actors import Measurement, RetrievalPatient, diagnosis_matches
from wardround.settings import Settings
from wardround.testing.chat_simulator import doctor_responder

SETTINGS = Settings(benchmark_data_dir=BENCHMARK_DATA)
CASES = [r["OSCE_Examination"] for r in load_jsonl("agentclinic/agentclinic_medqa.jsonl", SETTINGS)]
MG = CASES[0]  # myasthenia gravis


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("DIAGNOSIS READY: Myasthenia gravis", ("diagnosis", "Myasthenia gravis")),
        (
            "I think so.\nDIAGNOSIS READY: **Myasthenia gravis**.\nThanks",
            ("diagnosis", "Myasthenia gravis"),
        ),
        ("diagnosis ready - Asthma", ("diagnosis", "Asthma")),
        ("REQUEST TEST: Chest_X-Ray", ("test", "Chest_X-Ray")),
        ("Let me check. REQUEST TEST: CBC.", ("test", "CBC")),
        (
            "<unused94>maybe MG<unused95>How long have you had this?",
            ("ask", "How long have you had this?"),
        ),
        ("<think>hmm</think>DIAGNOSIS READY: Gout", ("diagnosis", "Gout")),
    ],
)
def test_parse_doctor(text, parsed):
    assert ac.parse_doctor(text) == parsed


def test_dataset_has_107_cases():
    samples = ac.case_samples(load_jsonl("agentclinic/agentclinic_medqa.jsonl", SETTINGS))
    assert len(samples) == 107 and len({s.id for s in samples}) == 107
    assert samples[0].target == {"diagnosis": "Myasthenia gravis"}
    assert samples[0].input.startswith("Assess and diagnose")


def test_moderator_matching_with_synonyms():
    assert all(diagnosis_matches(c["Correct_Diagnosis"], c["Correct_Diagnosis"]) for c in CASES)
    assert diagnosis_matches("Ocular and generalised myasthenia gravis", "Myasthenia gravis")
    assert diagnosis_matches("Clostridioides difficile infection", "C. difficile colitis")
    assert diagnosis_matches("PML", "Progressive multifocal encephalopathy (PML)")
    assert diagnosis_matches("Pancoast tumour", "Apical lung tumor")
    assert diagnosis_matches("Hirschsprung disease", "Hirschsprung’s disease")
    assert not diagnosis_matches("Lambert-Eaton myasthenic syndrome", "Myasthenia gravis")
    assert not diagnosis_matches("Chronic lymphocytic leukemia", "Acute lymphoblastic leukemia")
    assert not diagnosis_matches("Hemophilia B", "Hemophilia A")
    assert not diagnosis_matches("", "Asthma")
    # across the 107 cases, only true equivalents match each other's diagnosis
    names = {c["Correct_Diagnosis"] for c in CASES}
    crossed = {(a, b) for a in names for b in names if a != b and diagnosis_matches(a, b)}
    assert crossed == {
        ("Benign Paroxysmal Positional Vertigo (BPPV)", "Benign paroxysmal positional vertigo"),
        ("Benign paroxysmal positional vertigo", "Benign Paroxysmal Positional Vertigo (BPPV)"),
        ("Hemophilia A", "Hemophilia"),
        ("Hirschsprung disease", "Hirschsprung’s disease"),
        ("Hirschsprung’s disease", "Hirschsprung disease"),
        ("Neonatal Respiratory Distress Syndrome (NRDS)", "Respiratory Distress Syndrome"),
        ("Respiratory Distress Syndrome", "Neonatal Respiratory Distress Syndrome (NRDS)"),
        (
            "Progressive multifocal encephalopathy (PML)",
            "Progressive multifocal leukoencephalopathy",
        ),
        (
            "Progressive multifocal leukoencephalopathy",
            "Progressive multifocal encephalopathy (PML)",
        ),
    }


def test_measurement_answers_from_the_case():
    m = Measurement.from_case(MG)
    assert m.reply("Chest CT") == (
        "RESULTS: Imaging Chest CT: Findings: Normal, no thymoma or other masses detected."
    )
    assert "Decreased muscle response" in m.reply("EMG")
    assert m.reply("acetylcholine receptor antibodies") == (
        "RESULTS: Blood Tests Acetylcholine Receptor Antibodies: Present (elevated)"
    )
    assert "ptosis" in m.reply("Neurological examination")
    assert "Blood Pressure: 125/80 mmHg" in m.reply("physical exam")
    assert m.reply("CBC") == "RESULTS: NORMAL READINGS"  # not in this case
    assert m.reply("MRI brain") == "RESULTS: NORMAL READINGS"


def test_patient_answers_only_from_case_facts():
    p = RetrievalPatient.from_case(MG)
    assert p.reply("Do you smoke or drink?") == "Non-smoker, drinks wine occasionally."
    assert "chest pain" in p.reply("Any chest pain?")
    assert "35-year-old female" in p.reply("How old are you?")
    first = p.reply("Hmm.")  # nothing relevant: the next untold fact, in order
    assert first in p.facts
    assert all(fact in " ".join(p.facts) for fact in [first])


async def test_a_consultation_follows_the_protocol():
    doctor = ScriptedChatModel(
        replies=[
            "Hello. What brings you in today?",
            "REQUEST TEST: Chest_CT",
            "<unused94>thymoma excluded<unused95>DIAGNOSIS READY: Myasthenia gravis",
        ]
    )
    result = await ac.run_consultation(doctor, MG, ac.retrieval_patient(MG))
    assert result["diagnosis"] == "Myasthenia gravis" and result["turns"] == 3
    assert result["tests"] == ["Chest_CT"]
    texts = [str(m.content) for m in result["dialogue"]]
    assert texts[0] == ac.OPENING
    assert texts[2].startswith("Patient: My main problem is: Double vision.")
    assert (
        texts[4]
        == "Measurement: RESULTS: Imaging Chest CT: Findings: Normal, no thymoma or other masses detected."
    )
    assert "thymoma excluded" not in texts[5]
    system = doctor.calls[0]["messages"][0].content
    assert "turn 1 of 20" in system and MG["Objective_for_Doctor"] in system


async def test_the_last_turn_demands_a_diagnosis_then_one_constrained_call_asks_for_it():
    doctor = ScriptedChatModel(
        replies=["Anything else?"] * 3 + ['{"diagnosis": "Myasthenia gravis."}']
    )
    doctor.metadata = {"dialect": "llamacpp", "protocol": "json"}
    result = await ac.run_consultation(doctor, MG, ac.retrieval_patient(MG), max_turns=3)
    assert result["diagnosis"] == "Myasthenia gravis" and result["forced"]
    assert result["turns"] == 3 and len(doctor.calls) == 4
    assert ac.LAST_TURN in doctor.calls[2]["messages"][0].content
    assert ac.LAST_TURN not in doctor.calls[0]["messages"][0].content
    schema = doctor.calls[3]["kwargs"]["response_format"]["schema"]
    assert schema["required"] == ["diagnosis"]


async def test_a_test_asked_for_again_is_answered_with_a_note_to_move_on():
    doctor = ScriptedChatModel(
        replies=["REQUEST TEST: Chest_CT", "REQUEST TEST: chest_ct", "DIAGNOSIS READY: MG"]
    )
    result = await ac.run_consultation(doctor, MG, ac.retrieval_patient(MG))
    texts = [str(m.content) for m in result["dialogue"]]
    assert ac.REPEATED not in texts[2] and ac.REPEATED in texts[4]
    assert result["diagnosis"] == "MG" and not result["forced"]


async def test_a_request_made_three_times_ends_the_consultation_with_a_forced_diagnosis():
    copies = ["REQUEST TEST: Chest_X-Ray, for example REQUEST TEST: Chest_X-Ray."] * 3
    doctor = ScriptedChatModel(replies=[*copies, '{"diagnosis": "Myasthenia gravis"}'])
    doctor.metadata = {"dialect": "llamacpp", "protocol": "json"}
    result = await ac.run_consultation(doctor, MG, ac.retrieval_patient(MG))
    assert result["stuck"] and result["forced"] and result["turns"] == 3
    assert result["diagnosis"] == "Myasthenia gravis" and len(doctor.calls) == 4


async def test_a_request_asked_twice_among_others_goes_on():
    replies = ["What brings you in?", "REQUEST TEST: Chest_CT", "What brings you in?"]
    doctor = ScriptedChatModel(replies=[*replies, "DIAGNOSIS READY: MG"])
    result = await ac.run_consultation(doctor, MG, ac.retrieval_patient(MG))
    assert not result["stuck"] and result["diagnosis"] == "MG" and result["turns"] == 4


async def test_the_task_through_the_runner(tmp_path):
    samples = ac.case_samples(load_jsonl("agentclinic/agentclinic_medqa.jsonl", SETTINGS))[:4]
    answers = {s.input: s.target["diagnosis"] for s in samples[:3]}  # the 4th gets it wrong
    env = EvalEnv(settings=SETTINGS, model=ScriptedChatModel(respond=doctor_responder(answers)))
    task = ac.bind(env, samples)
    assert "normalised matching with synonyms" in task.scoring and "retrieval" in task.scoring
    result = await run_task(task, model="rule", results_path=tmp_path / "r.jsonl", progress=False)
    assert [r.correct for r in result.records] == [True, True, True, False]
    first = result.records[0]
    assert first.trace.steps == 3 and first.trace.artifacts["tests"] == ["Complete_Blood_Count"]
    assert first.trace.tool_calls == [
        {"name": "request_test", "args": {"test": "Complete_Blood_Count"}}
    ]
    assert first.trace.tokens["prompt"] > 0 and first.score["moderator"] == "match"


async def test_llm_moderator_and_llm_patient():
    sample = ac.case_samples([{"OSCE_Examination": MG}])[0]
    judge = ScriptedChatModel(replies=["Yes, the same.", "No."])
    actor = ScriptedChatModel(replies=["I see double, doctor."])
    doctor = ScriptedChatModel(replies=["What is wrong?", "DIAGNOSIS READY: MG crisis"])
    env = EvalEnv(
        settings=SETTINGS,
        model=doctor,
        options={"patient": "llm", "moderator": "llm"},
        roles={"judge": judge, "actor": actor},
    )
    task = ac.bind(env, [sample])
    assert "LLM judge" in task.scoring and "an LLM given the case facts" in task.scoring
    trace = await task.solver(sample)
    assert trace.messages[2]["content"] == "Patient: I see double, doctor."
    assert "Double vision" in actor.calls[0]["messages"][0].content  # the facts reach the actor
    assert (await task.scorer(sample, trace)).correct
    assert not (await task.scorer(sample, trace)).correct
    assert "MG crisis" in judge.calls[0]["messages"][0].content


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        ac.bind(EvalEnv(settings=SETTINGS, options={"moderator": "vote"}), [])


async def test_a_real_openai_client_against_the_loopback_simulator(tmp_path):
    from langchain_openai import ChatOpenAI

    from wardround.testing.chat_simulator import SimulatorServer

    samples = ac.case_samples(load_jsonl("agentclinic/agentclinic_medqa.jsonl", SETTINGS))[:3]
    answers = {s.input: s.target["diagnosis"] for s in samples}
    with SimulatorServer(doctor_responder(answers), latency_s=0.05) as sim:
        model = ChatOpenAI(base_url=sim.base_url, model="sim", api_key="x", temperature=0)
        task = ac.bind(EvalEnv(settings=SETTINGS, model=model), samples)
        result = await run_task(
            task, model="sim", results_path=tmp_path / "r.jsonl", concurrency=3, progress=False
        )
        assert sim.app.state.completions == 9 and sim.app.state.max_in_flight == 3
    assert result.correct == 3 and result.errors == 0
    assert all(r.trace.tokens["completion"] > 0 for r in result.records)
    assert isinstance(AIMessage(content="x"), AIMessage)


async def test_a_timed_out_consultation_keeps_its_partial_trace(tmp_path):
    import time

    def slow(messages):
        time.sleep(0.05)
        return f"Tell me more about turn {len(messages)}."  # never the same request twice

    sample = ac.case_samples([{"OSCE_Examination": MG}])[0]
    task = ac.bind(EvalEnv(settings=SETTINGS, model=ScriptedChatModel(respond=slow)), [sample])
    result = await run_task(
        task, model="slow", results_path=tmp_path / "r.jsonl", timeout_s=0.6, progress=False
    )
    record = result.records[0]
    assert record.error and "did not finish" in record.error
    assert record.trace.steps >= 2 and len(record.trace.messages) >= 3
    assert record.trace.messages[0]["content"] == ac.OPENING
