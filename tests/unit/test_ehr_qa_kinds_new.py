"""The planner's newer kinds (extremes, first, ever, thresholds, what happened, statuses) on
a real in-process FHIR server with a hand-built chart, and a scripted model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import BaseMessage

from fakes import ScriptedChatModel
from wardround.chart import analyte, record_kinds
from wardround.chart.dates import Window
from wardround.chart.kinds import KIND_HELP, Kind
from wardround.chart.options import NOT_IN_CHART
from wardround.chart.steer import asks_ever
from wardround.chart.thresholds import find_threshold
from wardround.fhir.fields import reference_of, resource_date
from wardround.graphs.ehr_qa import answer_question, reading
from wardround.graphs.ehr_qa.prompts import PLAN_SYSTEM
from wardround.testing.sample_charts import ChartBuilder
from wardround.testing.sekmet_inprocess import asgi_client, load_chart, sekmet_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _cc(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}]}


SNOMED, CVX = "http://snomed.info/sct", "http://hl7.org/fhir/sid/cvx"
CHOL = "Cholesterol [Mass/volume] in Serum or Plasma [Observation]"
HDL = "Cholesterol in HDL [Mass/volume] in Serum or Plasma [Observation]"
SMOKING = "Tobacco smoking status [Observation]"
HTN = "Essential hypertension [Condition]"
LISINOPRIL = "lisinopril 10 MG Oral Tablet [MedicationRequest]"
FLU = "Influenza, seasonal, injectable [Immunization]"
CONDITIONS = "all conditions, problems and diagnoses [Condition]"
IMMUNIZATIONS = "all immunizations and vaccines [Immunization]"


def cara() -> dict:
    """Cholesterol four times (240 first, 190 lowest, 208.6 latest), HDL twice, smoking
    status twice, hypertension from 2012, a visit on 2021-02-01 with a reason, a procedure
    and a diagnosis that day, flu shots in 2020 and 2021 and a Td shot in 2021."""
    c = ChartBuilder("Cara", "Tester", "1965-05-05", "female", "5550001")
    chol = "Cholesterol [Mass/volume] in Serum or Plasma"
    for day, value in [("2019-03-01", 240), ("2021-02-01", 212), ("2021-08-01", 190),
                       ("2023-05-01", 208.6)]:  # fmt: skip
        c.lab("2093-3", chol, f"{day}T09:00:00+00:00", value, "mg/dL")
    hdl = "Cholesterol in HDL [Mass/volume] in Serum or Plasma"
    c.lab("2085-9", hdl, "2021-02-01T09:00:00+00:00", 45, "mg/dL")
    c.lab("2085-9", hdl, "2023-05-01T09:00:00+00:00", 52, "mg/dL")
    for day, status in [("2020-01-01", "Never smoker"), ("2023-05-01", "Former smoker")]:
        c.add({"resourceType": "Observation", "status": "final",
               "code": _cc("http://loinc.org", "72166-2", "Tobacco smoking status"),
               "subject": {"reference": c.urn}, "effectiveDateTime": day,
               "valueCodeableConcept": _cc(SNOMED, "8517006", status)})  # fmt: skip
    c.condition("59621000", "Essential hypertension", "2012-04-10")
    c.condition("59621000", "Essential hypertension", "2018-06-01")
    c.condition("444814009", "Viral sinusitis", "2021-02-01")
    c.med("314076", "lisinopril 10 MG Oral Tablet", "active", "2018-06-01")
    c.med("314076", "lisinopril 10 MG Oral Tablet", "stopped", "2012-04-10")
    c.add({"resourceType": "Encounter", "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
           "type": [_cc(SNOMED, "185349003", "Encounter for check up")],
           "subject": {"reference": c.urn},
           "period": {"start": "2021-02-01T08:30:00+00:00", "end": "2021-02-01T09:30:00+00:00"},
           "reasonCode": [{"text": "Lipid review"}]})  # fmt: skip
    c.encounter("2023-05-01T08:30:00+00:00")
    c.add({"resourceType": "Procedure", "status": "completed",
           "code": _cc(SNOMED, "73761001", "Colonoscopy"), "subject": {"reference": c.urn},
           "performedDateTime": "2021-02-01"})  # fmt: skip
    for code, name, day in [("141", "Influenza, seasonal, injectable", "2020-10-01"),
                            ("141", "Influenza, seasonal, injectable", "2021-10-05"),
                            ("113", "Td (adult) preservative free", "2021-03-03")]:  # fmt: skip
        c.add({"resourceType": "Immunization", "status": "completed",
               "vaccineCode": _cc(CVX, code, name), "patient": {"reference": c.urn},
               "occurrenceDateTime": day})  # fmt: skip
    return c.bundle()


class Chart:
    def __init__(self, client, patient_id: str) -> None:
        self.client, self.patient_id = client, patient_id


@pytest.fixture(scope="module")
async def chart(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chart]:
    app = sekmet_app(Path(tmp_path_factory.mktemp("sekmet-kinds")))
    client = asgi_client(app)
    patient_id = await load_chart(client, cara())
    yield Chart(client, patient_id)
    await client.aclose()


def favouring(about: str):
    """A stand-in ranking that offers the planned option first (the ranking has its own tests)."""

    def similarity(question: str, labels: Sequence[str]) -> np.ndarray:
        return np.array([1.0 if label == about else 0.0 for label in labels])

    return similarity


def scripted(*replies: object) -> ScriptedChatModel:
    model = ScriptedChatModel(
        replies=[r if isinstance(r, str) or callable(r) else json.dumps(r) for r in replies]
    )
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    return model


async def ask(chart: Chart, question: str, kind: str, about: str, *more: object):
    model = scripted({"kind": kind, "about": about}, *more)
    result = await answer_question(
        question, chart.patient_id, model=model, fhir=chart.client, similarity=favouring(about)
    )
    assert result.error is None, result.error
    return result, model


async def refs(chart: Chart, rtype: str, **params: str) -> dict[str, str]:
    """Reference by date (YYYY-MM-DD) of the chart's records of one type."""
    found = await chart.client.search(rtype, {"patient": chart.patient_id, **params})
    return {str(resource_date(r)): reference_of(r) for r in found}


# ------------------------------------------------------------ the kind enum


async def test_every_new_kind_is_offered_with_its_help() -> None:
    for kind in ("highest_value", "lowest_value", "first_value", "first_diagnosed",
                 "medication_started", "ever_had", "above_or_below", "what_happened"):  # fmt: skip
        assert Kind(kind) in KIND_HELP
        assert f"- {kind}: {KIND_HELP[Kind(kind)]}" in PLAN_SYSTEM


# ------------------------------------------------------------ values


async def test_highest_ever_is_the_maximum_not_the_latest(chart: Chart) -> None:
    result, _ = await ask(chart, "what was her peak total cholesterol", "highest_value", CHOL)
    assert result.answer.startswith("240 mg/dL on 2019-03-01 (the highest of 4")
    by_day = await refs(chart, "Observation", code="2093-3")
    assert result.citations == [by_day["2019-03-01"]] and result.computed


async def test_lowest_within_a_named_year(chart: Chart) -> None:
    result, _ = await ask(chart, "lowest cholesterol during 2021", "lowest_value", CHOL)
    assert result.answer.startswith("190 mg/dL on 2021-08-01 (the lowest of 2")
    result, _ = await ask(chart, "lowest cholesterol in 2015", "lowest_value", CHOL)
    assert (
        result.answer
        == "No Cholesterol [Mass/volume] in Serum or Plasma result is recorded in 2015."
    )
    assert result.citations == []


async def test_first_value_is_the_oldest(chart: Chart) -> None:
    result, _ = await ask(chart, "her very first cholesterol reading", "first_value", CHOL)
    assert result.answer.startswith("240 mg/dL on 2019-03-01 (the first")


async def test_a_status_observation_reads_its_coded_value(chart: Chart) -> None:
    result, _ = await ask(chart, "does she smoke", "latest_value", SMOKING)
    assert result.answer == "Former smoker on 2023-05-01." and len(result.citations) == 1


async def test_last_vaccine_of_a_kind_is_its_newest_date(chart: Chart) -> None:
    result, _ = await ask(chart, "when was her last flu jab", "latest_value", FLU)
    assert result.answer.startswith("2021-10-05 ") and result.citations[0].startswith("Immun")


# ------------------------------------------------------------ first diagnosed, started


async def test_first_diagnosed_is_the_earliest_onset(chart: Chart) -> None:
    result, _ = await ask(
        chart, "since when has she had high blood pressure", "first_diagnosed", HTN
    )
    assert result.answer == "First diagnosed on 2012-04-10 (Essential hypertension)."
    assert result.citations == [(await refs(chart, "Condition"))["2012-04-10"]]


async def test_medication_started_is_the_first_prescription_even_if_stopped(chart: Chart) -> None:
    result, _ = await ask(chart, "when did she go on lisinopril", "medication_started", LISINOPRIL)
    assert result.answer.startswith("Started on 2012-04-10")
    # The same computation, whichever of the three first-kinds the model picked.
    other, _ = await ask(chart, "when did she go on lisinopril", "first_diagnosed", LISINOPRIL)
    assert other.answer == result.answer


# ------------------------------------------------------------ ever / never


async def test_ever_with_a_charted_code_is_yes_with_its_records(chart: Chart) -> None:
    result, _ = await ask(chart, "has she ever been hypertensive", "ever_had", HTN)
    assert result.answer.startswith(
        "Yes: Essential hypertension (first 2012-04-10, latest 2018-06-01"
    )
    assert len(result.citations) == 2 and all(c.startswith("Condition/") for c in result.citations)


async def test_ever_in_a_year_reads_only_that_year(chart: Chart) -> None:
    yes, _ = await ask(chart, "did she get a flu shot in 2021", "ever_had", FLU)
    assert yes.answer.startswith("Yes: Influenza, seasonal, injectable in 2021 (2021-10-05")
    assert yes.citations == [(await refs(chart, "Immunization"))["2021-10-05"]]
    no, _ = await ask(chart, "was she given a flu vaccine in 2019", "ever_had", FLU)
    assert no.answer.startswith("No: no Influenza, seasonal, injectable is recorded in 2019")
    assert no.citations == []


def which(pick: str | None):
    """The follow-up choice's reply: `pick` if the prompt offers it, else "none"."""

    def reply(messages: list[BaseMessage]) -> str:
        offered = str(messages[-1].content)
        assert NOT_IN_CHART in offered
        return json.dumps({"about": pick if pick and pick in offered else NOT_IN_CHART})

    return reply


async def test_never_is_no_once_the_whole_type_was_read(chart: Chart) -> None:
    result, model = await ask(
        chart, "was she ever diagnosed with asthma", "ever_had", CONDITIONS, which(None)
    )
    assert result.answer.startswith("No: nothing of the kind is recorded")
    assert "all 3 of the patient's conditions records were read" in result.answer
    enum = model.calls[1]["kwargs"]["response_format"]["schema"]["properties"]["about"]["enum"]
    assert set(enum) == {"Essential hypertension", "Viral sinusitis", NOT_IN_CHART}
    assert result.steps == 2 and len(result.retrieved) == 3


async def test_never_over_a_truncated_read_is_not_known(
    chart: Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "ALL", 2)  # 3 conditions, read 2: the absence is unproven
    result, _ = await ask(
        chart, "was she ever diagnosed with asthma", "ever_had", CONDITIONS, which(None)
    )
    assert result.answer.startswith("Not known:") and not result.answer.startswith("No:")


async def test_ever_over_a_whole_type_finds_what_the_model_picks(chart: Chart) -> None:
    result, _ = await ask(
        chart, "has she had a sinus infection", "ever_had", CONDITIONS, which("Viral sinusitis")
    )
    assert result.answer.startswith("Yes: Viral sinusitis (2021-02-01; 1 record)")
    assert result.citations == [(await refs(chart, "Condition"))["2021-02-01"]]


async def test_ever_with_no_record_chosen_reads_the_types_the_question_names(chart: Chart) -> None:
    result, model = await ask(
        chart, "has she ever had surgery like an appendectomy", "ever_had", NOT_IN_CHART,
        which(None),
    )  # fmt: skip
    assert result.answer.startswith("No: nothing of the kind is recorded")
    assert "procedures" in result.answer and "conditions" not in result.answer
    offered = str(model.calls[1]["messages"][-1].content)
    assert "Colonoscopy" in offered and "Viral sinusitis" not in offered


async def test_no_says_not_known_unless_complete() -> None:
    assert record_kinds.no(("Condition",), 5, True, "", None).answer.startswith("No: ")
    unsure = record_kinds.no(("Condition",), 5, False, "", None).answer
    assert unsure.startswith("Not known") and "conditions" in unsure


# ------------------------------------------------------------ thresholds


async def test_above_a_limit_in_a_year_is_yes_with_the_deciding_value(chart: Chart) -> None:
    result, _ = await ask(
        chart, "was her cholesterol over 200 at any point in 2021?", "above_or_below", CHOL
    )
    assert result.answer.startswith("Yes: 212 mg/dL on 2021-02-01 was above 200 (1 of 2")
    assert result.citations == [(await refs(chart, "Observation", code="2093-3"))["2021-02-01"]]


async def test_not_past_the_limit_is_no_with_the_closest_value(chart: Chart) -> None:
    result, _ = await ask(chart, "cholesterol above 220 in 2021?", "above_or_below", CHOL)
    assert result.answer.startswith("No: the highest Cholesterol")
    assert "was 212 mg/dL on 2021-02-01, not above 220" in result.answer
    assert len(result.citations) == 1
    low, _ = await ask(chart, "has cholesterol ever been under 150", "above_or_below", CHOL)
    assert low.answer.startswith("No: the lowest") and "190 mg/dL" in low.answer


async def test_a_limit_question_without_a_number_goes_to_the_general_path(chart: Chart) -> None:
    result, _ = await ask(
        chart, "was her cholesterol ever too high", "above_or_below", CHOL,
        lambda m: json.dumps({"citations": [m[-1].content.split("\n")[1].split(" ")[0]]}),
        {"answer": "208.6 mg/dL on 2023-05-01"},
    )  # fmt: skip
    assert not result.computed and result.steps == 3


@pytest.mark.parametrize(
    ("text", "above", "limit", "inclusive"),
    [
        ("A1c above 7 in 2021", True, 7.0, False),
        ("was it ever greater than 7.5%", True, 7.5, False),
        ("systolic under 90 on 2021-03-04", False, 90.0, False),
        ("at least 140 since March 4, 2021", True, 140.0, True),
        ("potassium < 3.5", False, 3.5, False),
    ],
)
async def test_limits_are_read_from_the_question(
    text: str, above: bool, limit: float, inclusive: bool
) -> None:
    found = find_threshold(text)
    assert found is not None and (found.above, found.limit, found.inclusive) == (
        above, limit, inclusive,
    )  # fmt: skip


async def test_dates_are_not_limits() -> None:
    assert find_threshold("cholesterol over the year 2021") is None
    assert find_threshold("potassium on 2021-03-04") is None


# ------------------------------------------------------------ what happened


async def test_what_happened_on_a_day_names_visit_reason_procedure_and_diagnosis(
    chart: Chart,
) -> None:
    result, _ = await ask(chart, "what went on at her 1 Feb 2021 appointment", "what_happened",
                          NOT_IN_CHART)  # fmt: skip
    assert result.answer.startswith(
        "On 2021-02-01: visits: Encounter for check up (reason: Lipid review)"
    )
    assert "procedures: Colonoscopy" in result.answer and "Viral sinusitis" in result.answer
    assert "Influenza" not in result.answer
    kinds_cited = {c.split("/")[0] for c in result.citations}
    assert kinds_cited == {"Encounter", "Procedure", "Condition"}


async def test_a_day_with_nothing_says_so(chart: Chart) -> None:
    result, _ = await ask(chart, "anything on 2022-07-07?", "what_happened", NOT_IN_CHART)
    assert result.answer.startswith("Nothing is recorded on 2022-07-07") and not result.citations


async def test_vaccines_in_a_year_list_that_year_only(chart: Chart) -> None:
    result, _ = await ask(
        chart, "which shots did she receive in 2021", "what_happened", IMMUNIZATIONS
    )
    assert result.answer.startswith("In 2021: immunizations:")
    assert "Td (adult) preservative free (2021-03-03)" in result.answer
    assert "Influenza, seasonal, injectable (2021-10-05)" in result.answer
    assert "2020-10-01" not in result.answer and len(result.citations) == 2


async def test_what_happened_skips_records_not_done() -> None:
    window = Window(date(2021, 1, 1), date(2021, 1, 1))
    shot = {"resourceType": "Immunization", "id": "x", "status": "not-done",
            "vaccineCode": {"text": "Flu"}, "occurrenceDateTime": "2021-01-01"}  # fmt: skip
    assert record_kinds.happened_on({"Immunization": [shot]}, window).answer.startswith("Nothing")


# ------------------------------------------------------------ the analyte check in the graph


async def test_a_near_miss_analyte_choice_is_corrected(chart: Chart) -> None:
    result, _ = await ask(chart, "latest total cholesterol", "latest_value", HDL)
    assert result.answer == "208.6 mg/dL on 2023-05-01." and result.plan == f"latest_value: {CHOL}"


async def test_a_qualifier_no_charted_test_carries_is_not_recorded(chart: Chart) -> None:
    result, _ = await ask(chart, "most recent LDL cholesterol", "latest_value", HDL)
    assert result.answer.startswith("Nothing is recorded") and result.citations == []


# ------------------------------------------------------------ words that decide the kind (chart.steer)


async def test_a_peak_planned_as_latest_is_the_highest(chart: Chart) -> None:
    result, _ = await ask(chart, "top cholesterol reading she has had", "latest_value", CHOL)
    assert result.answer.startswith("240 mg/dL on 2019-03-01 (the highest")
    assert result.plan is not None and result.plan.startswith("highest_value: ")


async def test_vaccines_in_a_year_planned_as_a_current_list(chart: Chart) -> None:
    result, _ = await ask(chart, "immunisations she got in 2021", "list_current", IMMUNIZATIONS)
    assert "Td (adult)" in result.answer and "2021-10-05" in result.answer
    assert "2020-10-01" not in result.answer
    assert result.plan is not None and result.plan.startswith("what_happened: ")
    assert all(c.startswith("Immunization/") for c in result.citations)


async def test_a_day_planned_as_other_is_what_happened_that_day(chart: Chart) -> None:
    result, _ = await ask(chart, "what was done for her on 1 Feb 2021", "other", CONDITIONS)
    assert "Colonoscopy" in result.answer and "Lipid review" in result.answer
    assert result.computed


async def test_a_diagnosis_question_is_never_answered_with_a_procedure(chart: Chart) -> None:
    colonoscopy = "Colonoscopy [Procedure]"
    result, model = await ask(
        chart, "was she ever diagnosed with colitis", "ever_had", colonoscopy, which(None)
    )
    assert result.answer.startswith("No:") and "Colonoscopy" not in result.answer
    offered = str(model.calls[1]["messages"][-1].content)
    assert "Viral sinusitis" in offered and "Colonoscopy" not in offered


async def test_a_limit_without_ever_or_a_year_judges_the_latest_value(chart: Chart) -> None:
    now, _ = await ask(chart, "is her cholesterol above 230 now?", "above_or_below", CHOL)
    assert now.answer.startswith("No: the latest") and "208.6 mg/dL" in now.answer
    ever, _ = await ask(chart, "was her cholesterol ever above 230?", "above_or_below", CHOL)
    assert ever.answer.startswith("Yes: 240 mg/dL on 2019-03-01")
    assert asks_ever("any reading over 140") and not asks_ever("is the BP over 140 now")


async def test_a_result_question_is_not_answered_from_a_prescription(chart: Chart) -> None:
    result, _ = await ask(chart, "most recent magnesium level", "latest_value", LISINOPRIL)
    assert result.answer.startswith("Nothing is recorded") and result.citations == []


async def test_a_medication_start_planned_as_latest_is_the_first_prescription(
    chart: Chart,
) -> None:
    result, _ = await ask(chart, "when was she put on lisinopril", "latest_value", LISINOPRIL)
    assert result.answer.startswith("Started on 2012-04-10")
    by_day = await refs(chart, "MedicationRequest")
    assert result.citations == [by_day["2012-04-10"]]


async def test_ever_with_a_code_the_question_does_not_name_asks_again(chart: Chart) -> None:
    """'multiple sclerosis' planned as the charted hypertension: not a Yes; the model
    chooses again among the conditions' names, and none is it."""
    result, model = await ask(chart, "ever had multiple sclerosis?", "ever_had", HTN, which(None))
    assert result.answer.startswith("No:") and "hypertension" not in result.answer.lower()
    offered = str(model.calls[1]["messages"][-1].content)
    assert "Essential hypertension" in offered and "Viral sinusitis" in offered
    assert analyte.names("any hx of HTN?", "Essential hypertension (disorder)")
    assert not analyte.names("ever had MS?", "Chronic pain (finding)")


def dora() -> dict:
    """Two disorders and two SNOMED findings (one clinical, one social) after 2023 began."""
    c = ChartBuilder("Dora", "Tester", "1970-02-02", "female", "5550002")
    c.condition("48694002", "Anxiety disorder (disorder)", "2019-05-01")
    c.condition("444814009", "Viral sinusitis (disorder)", "2023-03-01")
    c.condition("714628002", "Prediabetes (finding)", "2023-04-01")
    c.condition("224295006", "Received higher education (finding)", "2023-05-01")
    return c.bundle()


async def test_a_list_question_planned_on_one_record_reads_the_whole_type(chart: Chart) -> None:
    """'What's been diagnosed since ...' names no one condition: every condition since."""
    dora_id = await load_chart(chart.client, dora())
    dora_chart = Chart(chart.client, dora_id)
    anxiety = "Anxiety disorder (disorder) [Condition]"
    since, _ = await ask(dora_chart, "anything new diagnosed from 2023-01-01 on?",
                         "list_since_date", anxiety)  # fmt: skip
    assert since.answer == (
        "Viral sinusitis (disorder); Prediabetes (finding); Received higher education (finding)."
    )
    assert len(since.citations) == 3
    # "disorders" asked: SNOMED's findings are none
    new, _ = await ask(dora_chart, "new disorders since 2023-01-01?", "list_since_date", anxiety)
    assert new.answer == "Viral sinusitis (disorder)." and len(new.citations) == 1
    # one condition named: that one only
    named, _ = await ask(dora_chart, "anxiety since 2018-01-01?", "list_since_date", anxiety)
    assert named.answer == "Anxiety disorder (disorder)."


async def test_the_loop_lists_disorders_when_the_question_says_disorders(chart: Chart) -> None:
    """The loop's list tools read "conditions (disorders)" as the planner does: no findings."""
    dora_id = await load_chart(chart.client, dora())
    replies = [{"action": "items_since"}, {"items": "conditions", "date": "2023-01-01"},
               {"action": "final_answer"}, {"answer": "Viral sinusitis", "citations": []}]  # fmt: skip
    model = ScriptedChatModel(replies=[json.dumps(r) for r in replies])
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    question = "Which conditions (disorders) were diagnosed on or after 2023-01-01?"
    result = await answer_question(question, dora_id, model=model, fhir=chart.client, graph="loop")
    tool = next(m for m in result.messages if m["role"] == "tool")
    assert "Viral sinusitis" in tool["content"] and "(finding)" not in tool["content"]
    call = next(c for m in result.messages for c in m.get("tool_calls") or [])
    assert call["args"]["items"] == "disorders"


NOTES = "all clinical notes and documents [DocumentReference]"


async def test_a_result_the_question_names_wins_over_a_record_it_does_not(chart: Chart) -> None:
    """Plans on a record (or a whole type) the question holds no word of give way to the
    charted result it names; a value asked of an unnamed prescription is not recorded."""
    count, _ = await ask(chart, "how many times was her HDL checked?", "how_many", NOTES)
    assert count.answer.startswith("2 Cholesterol in HDL")
    on_day, _ = await ask(chart, "HDL on Feb 1 2021?", "value_on_date", FLU)
    assert on_day.answer.startswith("45 mg/dL on 2021-02-01")
    gfr, _ = await ask(chart, "Latest eGFR?", "latest_value", LISINOPRIL)
    assert gfr.answer.startswith("Nothing is recorded") and gfr.citations == []


async def test_a_list_question_reads_the_type_its_words_name(chart: Chart) -> None:
    since, _ = await ask(chart, "new diagnoses from 2020-01-01 on?", "list_since_date", HDL)
    assert since.answer == "Viral sinusitis."


async def test_a_kind_the_words_name_replaces_other_for_a_result_only(chart: Chart) -> None:
    newest, _ = await ask(chart, "newest cholesterol reading please", "other", CHOL)
    assert newest.answer.startswith("208.6 mg/dL on 2023-05-01") and newest.computed
    undated, _ = await ask(chart, "her latest total cholesterol", "value_on_date", CHOL)
    assert undated.answer.startswith("208.6 mg/dL on 2023-05-01")
    visits = "all encounters and visits [Encounter]"
    visit, _ = await ask(chart, "Date of her latest visit?", "latest_value", visits)
    assert visit.answer.startswith("2023-05-01") and visit.computed


async def test_an_ever_question_planned_on_an_unnamed_result_reads_the_types(chart: Chart) -> None:
    """'Any history of atrial fibrillation?' planned on the HDL result is a No from every
    condition read, not "nothing recorded"; a follow-up pick of a name neither the words nor
    the meaning tie to the question (the ranking here scores every name 0) is no Yes."""
    result, _ = await ask(chart, "Any history of atrial fibrillation? y/n", "ever_had", HDL,
                          which("Viral sinusitis"))  # fmt: skip
    assert result.answer.startswith("No:") and "sinusitis" not in result.answer.lower()
    named, _ = await ask(chart, "ever had sinusitis?", "ever_had", CONDITIONS,
                         which("Viral sinusitis"))  # fmt: skip
    assert named.answer.startswith("Yes: Viral sinusitis")
