"""The EHR QA graphs on a real in-process FHIR server, with a scripted model."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from langchain_core.messages import BaseMessage

from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture
from wardround.chart.options import LIST_TYPES, NOT_IN_CHART
from wardround.graphs.ehr_qa import answer_question
from wardround.graphs.ehr_qa.citations import check_citations
from wardround.graphs.ehr_qa.prompts import PLAN_SYSTEM

pytestmark = pytest.mark.asyncio(loop_scope="module")


def word_overlap(question: str, labels: Sequence[str]) -> np.ndarray:
    """A stand-in for MiniLM: shared lower-case words (deterministic, no model load)."""
    words = set(question.lower().replace("?", "").split())
    return np.array(
        [len(words & set(label.lower().replace("[", " ").split())) / 10 for label in labels]
    )


REF = re.compile(r"^([A-Za-z]+/[A-Za-z0-9\-.]+) ", re.M)


def refs_in_prompt(messages: list[BaseMessage]) -> list[str]:
    """The record references the answer prompt listed (the server assigned the ids)."""
    return REF.findall(str(messages[-1].content))


def cite_first(messages: list[BaseMessage]) -> str:
    """The citation step's reply: the first record the prompt listed."""
    return json.dumps({"citations": refs_in_prompt(messages)[:1]})


def scripted(*replies: dict | str | Callable[[list[BaseMessage]], str]) -> ScriptedChatModel:
    model = ScriptedChatModel(
        replies=[r if isinstance(r, str) or callable(r) else json.dumps(r) for r in replies]
    )
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    return model


A1C = "Hemoglobin A1c/Hemoglobin.total in Blood [Observation]"
ALLERGIES = "all allergies and intolerances [AllergyIntolerance]"
NOTES = "all clinical notes and documents [DocumentReference]"


def plan(kind: str, about: str) -> dict:
    return {"kind": kind, "about": about}


async def ask(fhir: FhirFixture, question: str, *replies: object, label: str = "handmade"):
    model = scripted(*replies)  # type: ignore[arg-type]
    result = await answer_question(
        question, fhir.patients[label], model=model, fhir=fhir.client, similarity=word_overlap
    )
    return result, model


async def test_latest_value_is_computed_from_the_newest_record(fhir: FhirFixture) -> None:
    result, model = await ask(fhir, "latest hemoglobin a1c in blood", plan("latest_value", A1C))
    assert result.error is None and result.computed and result.supported
    assert result.answer == "6.1 % on 2023-11-12."
    assert len(result.citations) == 1 and result.citations[0] in result.retrieved
    assert len(result.retrieved) == 2 and result.steps == 1
    schema = model.calls[0]["kwargs"]["response_format"]["schema"]
    assert "latest_value" in schema["$defs"]["Kind"]["enum"]
    about = schema["properties"]["about"]["enum"]
    assert A1C in about and NOT_IN_CHART in about
    assert len(about) <= len(LIST_TYPES) + 8 + 1  # whole types, the 8 nearest codes, none
    prompt = model.calls[0]["messages"]
    assert prompt[0].content == PLAN_SYSTEM, "fixed instructions first, for the prompt cache"


async def test_a_component_is_read_inside_its_panel(fhir: FhirFixture) -> None:
    result, _ = await ask(
        fhir,
        "most recent systolic blood pressure",
        plan("latest_value", "Systolic blood pressure [Observation]"),
    )
    assert result.answer == "132 mmHg on 2023-11-12." and result.computed
    assert result.citations[0].startswith("Observation/")


async def test_trend_compares_the_last_two_in_time_order(fhir: FhirFixture) -> None:
    result, _ = await ask(
        fhir, "is the hemoglobin a1c in blood going up or down", plan("trend", A1C)
    )
    assert result.answer == "Decreased: from 7.4 % on 2022-05-01 to 6.1 % on 2023-11-12."
    assert len(result.citations) == 2


async def test_value_on_a_date_written_out(fhir: FhirFixture) -> None:
    result, _ = await ask(
        fhir, "What was her hemoglobin A1c in blood on May 1, 2022?", plan("value_on_date", A1C)
    )
    assert result.answer == "7.4 % on 2022-05-01."
    result, _ = await ask(
        fhir, "hemoglobin A1c in blood on 2022-05-02?", plan("value_on_date", A1C)
    )
    assert "No" in result.answer and result.citations == []


async def test_count_counts_every_record(fhir: FhirFixture) -> None:
    result, _ = await ask(
        fhir, "how many hemoglobin a1c in blood tests has she had", plan("how_many", A1C)
    )
    assert result.answer.startswith("2 ") and len(result.citations) == 2


async def test_current_medications_leave_out_stopped_ones(fhir: FhirFixture) -> None:
    meds = "all medications (prescriptions) [MedicationRequest]"
    result, _ = await ask(fhir, "what is she taking", plan("list_current", meds))
    assert "metformin" in result.answer and "Amoxicillin" not in result.answer
    assert len(result.citations) == 1


async def test_conditions_since_a_date_use_the_window(fhir: FhirFixture) -> None:
    conditions = "all conditions, problems and diagnoses [Condition]"
    result, _ = await ask(fhir, "diagnoses since 1 Jan 2020?", plan("list_since_date", conditions))
    assert "sinusitis" in result.answer and "Diabetes" not in result.answer


async def test_age_on_a_date_is_arithmetic(fhir: FhirFixture) -> None:
    result, _ = await ask(fhir, "How old was she on 03/01/2020?", plan("age", NOT_IN_CHART))
    assert result.answer.startswith("60 years old on 2020-03-01")  # born 1960-02-29
    assert result.citations[0].startswith("Patient/")


async def test_last_visit(fhir: FhirFixture) -> None:
    result, _ = await ask(fhir, "when was she last seen", plan("last_visit", NOT_IN_CHART))
    assert result.answer.startswith("2023-11-12") and result.citations[0].startswith("Encounter/")


async def test_not_in_chart_is_an_answer_without_citations(fhir: FhirFixture) -> None:
    result, _ = await ask(fhir, "latest troponin", plan("latest_value", NOT_IN_CHART))
    assert result.error is None
    assert result.answer.startswith("Nothing is recorded") and result.citations == []


async def test_general_questions_cite_then_answer(fhir: FhirFixture) -> None:
    result, model = await ask(
        fhir, "what reaction does she get from peanuts", plan("other", ALLERGIES),
        cite_first, {"answer": "Hives (Allergy to peanut)"},
    )  # fmt: skip
    assert result.error is None and not result.computed and result.supported
    assert result.citations[0].startswith("AllergyIntolerance/") and result.steps == 3
    cite_schema = model.calls[1]["kwargs"]["response_format"]["schema"]
    items = cite_schema["properties"]["citations"]["items"]
    assert items.get("enum", [items.get("const")]) == result.retrieved
    answer_prompt = str(model.calls[2]["messages"][-1].content)
    assert "peanut" in answer_prompt and "Colonoscopy" not in answer_prompt


async def test_a_question_about_the_notes_reads_the_notes(fhir: FhirFixture) -> None:
    result, model = await ask(
        fhir, "summarise the latest progress note", plan("other", NOTES),
        cite_first, {"answer": "Walking daily; diabetes improving on metformin."},
    )  # fmt: skip
    assert (
        NOTES
        in model.calls[0]["kwargs"]["response_format"]["schema"]["properties"]["about"]["enum"]
    )
    assert result.error is None and result.citations[0].startswith("DocumentReference/")
    answer_prompt = str(model.calls[2]["messages"][-1].content)
    assert "walking 30 minutes daily" in answer_prompt  # the note's own text reaches the model


async def test_values_not_in_the_cited_records_are_repaired_then_flagged(fhir: FhirFixture) -> None:
    fixed, model = await ask(
        fhir, "tell me about the hemoglobin a1c in blood", plan("other", A1C), cite_first,
        {"answer": "7.9 % on 2023-11-12"}, {"answer": "6.1 % on 2023-11-12"},
    )  # fmt: skip
    assert fixed.answer == "6.1 % on 2023-11-12" and fixed.supported
    assert "7.9" in str(model.calls[3]["messages"][-1].content)
    flagged, _ = await ask(
        fhir, "tell me about the hemoglobin a1c in blood", plan("other", A1C), cite_first,
        {"answer": "7.9 %"}, {"answer": "still 7.9 %"},
    )  # fmt: skip
    assert flagged.unsupported == ["7.9"] and not flagged.supported
    assert flagged.public()["supported"] is False


async def test_a_date_kind_without_a_date_goes_to_the_general_path(fhir: FhirFixture) -> None:
    result, _ = await ask(
        fhir, "hemoglobin a1c in blood on the day of her check up", plan("value_on_date", A1C),
        cite_first, {"answer": "6.1 %"},
    )  # fmt: skip
    assert not result.computed and result.answer == "6.1 %" and result.steps == 3


async def test_empty_question_is_refused(fhir: FhirFixture) -> None:
    with pytest.raises(ValueError, match="empty"):
        await ask(fhir, "   ")


async def test_unknown_patient_is_a_clear_error(fhir: FhirFixture) -> None:
    result = await answer_question(
        "latest a1c", "no-such-patient", model=scripted(), fhir=fhir.client, similarity=word_overlap
    )
    assert result.error and "unknown patient 'no-such-patient'" in result.error
    bad = await answer_question(
        "latest a1c", "../Patient?x=1", model=scripted(), fhir=fhir.client, similarity=word_overlap
    )
    assert bad.error and "id" in bad.error.lower()


async def test_garbage_model_output_ends_with_an_error_not_an_exception(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    model = scripted("the answer is probably fine", "still not json")
    result = await answer_question(
        "latest hemoglobin a1c in blood", pid, model=model, fhir=fhir.client,
        similarity=word_overlap,
    )  # fmt: skip
    assert result.error and "not a valid JSON object" in result.error
    assert result.answer == "" and result.citations == []


async def test_loop_runs_tools_and_drops_citations_it_never_retrieved(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]

    def final(messages: list[BaseMessage]) -> str:
        found = re.findall(r"AllergyIntolerance/[A-Za-z0-9\-.]+", str(messages[-1].content))
        return json.dumps(
            {
                "action": "final_answer",
                "answer": "Allergy to peanut",
                "citations": [found[0], "Observation/invented"],
            }
        )

    model = scripted(
        {"action": "search_records", "args": {"resource_type": "AllergyIntolerance"}}, final
    )
    result = await answer_question(
        "What allergies does the patient have?", pid, model=model, fhir=fhir.client, graph="loop",
        choice="one_call",
    )  # fmt: skip
    assert result.error is None
    assert result.answer == "Allergy to peanut"
    assert len(result.citations) == 1 and result.citations[0] in result.retrieved
    assert result.flagged_citations == ["Observation/invented"]
    tool_msgs = [m for m in result.messages if m["role"] == "tool"]
    assert tool_msgs and "peanut" in tool_msgs[0]["content"].lower()
    assert result.steps == 2


async def test_loop_is_bounded(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    types = ("Condition", "Observation", "Procedure")  # different calls: none is a repeat
    model = scripted(*({"action": "patient_manifest", "args": {"resource_type": t}} for t in types))
    result = await answer_question(
        "loop forever",
        pid,
        model=model,
        fhir=fhir.client,
        graph="loop",
        choice="one_call",
        max_steps=3,
    )
    assert result.error == "no final answer after 3 steps"


async def test_a_repeated_call_is_not_run_again(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    call = {"action": "search_records", "args": {"resource_type": "AllergyIntolerance"}}
    answer = {"action": "final_answer", "answer": "Allergy to peanut", "citations": []}
    model = scripted(call, {**call, "args": {**call["args"]}}, answer)
    result = await answer_question(
        "Which allergies?",
        pid,
        model=model,
        fhir=fhir.client,
        graph="loop",
        choice="one_call",
        max_steps=4,
    )
    tool_texts = [m["content"] for m in result.messages if m["role"] == "tool"]
    assert len(tool_texts) == 2 and "peanut" in tool_texts[0].lower()
    assert tool_texts[1].startswith("Error: you already called search_records")
    asked = [m["content"] for m in result.messages if m["role"] == "human"]
    assert asked[-1].startswith("You called the same tool with the same arguments again")
    assert result.answer == "Allergy to peanut" and result.steps == 3


async def test_check_citations_keeps_order_and_flags_strangers() -> None:
    kept, flagged = check_citations(["B/2", "X/9", "A/1", "B/2"], ["A/1", "B/2"])
    assert kept == ["B/2", "A/1"] and flagged == ["X/9"]


async def test_a_latest_plan_with_a_named_day_reads_that_day(fhir: FhirFixture) -> None:
    result, _ = await ask(
        fhir, "hemoglobin a1c in blood measured 1 May 2022: what was it?", plan("latest_value", A1C)
    )
    assert result.answer == "7.4 % on 2022-05-01." and result.computed


async def test_a_general_question_over_an_empty_type_says_nothing_is_recorded(
    fhir: FhirFixture,
) -> None:
    """No records to cite must not reach the citation enum (an empty enum is no schema)."""
    result, model = await ask(
        fhir, "any immunizations and vaccines at all?",
        plan("other", "all immunizations and vaccines [Immunization]"), label="hypertension",
    )  # fmt: skip
    assert result.error is None and result.answer.startswith("Nothing is recorded")
    assert result.citations == [] and len(model.calls) == 1
