"""Scorers: numbers, dates, sets, trends and 'nothing recorded', on answers a model might give."""

from __future__ import annotations

from datetime import date

import pytest

from wardround.evals import scorers


def test_numbers_skip_dates_times_and_codes():
    text = "On 2023-11-12T10:15:00+00:00 (LOINC 4548-4) the HbA1c was 6.1 % at 10:15"
    assert scorers.find_numbers(text) == [6.1]
    assert scorers.find_numbers("Sodium 1,234.5 mmol/L and −2") == [1234.5, -2.0]
    assert scorers.find_numbers("SpO2 and A1c only") == []


@pytest.mark.parametrize(
    ("answer", "target", "ok"),
    [
        ("The latest potassium is 3.1 mmol/L.", 3.1, True),
        ("3.14", 3.1, False),  # more precise than the target, and different
        ("Magnesium 1.69 mg/dL", 1.6943875923574907, True),  # rounded by the answer
        ("Magnesium 1.7 mg/dL", 1.6943875923574907, True),
        ("Magnesium 2 mg/dL", 1.6943875923574907, False),  # too coarse for a decimal value
        ("130.8 mg/dL", 130.3, False),  # a different reading, though within 1%
        ("120 mmHg", 120.0, True),
        ("It was measured on 12 November 2023 and was 88.6 mg/dL", 88.6, True),
        ("No value on file.", 3.1, False),
    ],
)
def test_score_numeric(answer, target, ok):
    assert scorers.score_numeric(answer, target).correct is ok


def test_score_numeric_exact_for_counts():
    assert scorers.score_numeric("There were 4 encounters", 4, exact=True).correct
    assert not scorers.score_numeric("About 5", 4, exact=True).correct
    assert not scorers.score_numeric("4.4", 4, exact=True).correct


def test_dates_in_many_formats():
    found = scorers.find_dates("Seen 2024-05-02, then May 3rd, 2024, 4 June 2024 and 07/08/2024.")
    assert found == [date(2024, 5, 2), date(2024, 5, 3), date(2024, 6, 4), date(2024, 7, 8)]
    assert scorers.score_date("The last visit was on May 2, 2024.", "2024-05-02T09:00:00Z").correct
    assert not scorers.score_date("The last visit was 2024-05-01.", "2024-05-02").correct


def test_set_match_needs_all_items_and_no_distractor():
    expected = ["Metformin 500 MG Oral Tablet", "Atorvastatin 20 MG Oral Tablet"]
    distractors = ["Lisinopril 10 MG Oral Tablet"]
    good = scorers.score_set("She takes metformin and atorvastatin.", expected, distractors)
    assert good.correct and good.value == 1.0
    partial = scorers.score_set("Metformin only.", expected, distractors)
    assert not partial.correct and partial.value == 0.5
    extra = scorers.score_set("Metformin, atorvastatin, lisinopril", expected, distractors)
    assert not extra.correct and extra.metadata["extra"] == distractors


def test_set_match_ignores_semantic_tags_and_empty_set_means_nothing():
    assert scorers.score_set("Allergic to peanuts? Peanut, yes.", ["Peanut (substance)"]).correct
    assert scorers.score_set("No allergies are recorded.", []).correct
    assert not scorers.score_set("Peanut", []).correct


def test_a_bracketed_qualifier_is_not_needed_to_name_an_item():
    eggs = ["Eggs (edible) (substance)", "Penicillin V"]
    assert scorers.score_set("Allergic to eggs and penicillin V.", eggs).correct
    assert not scorers.score_set("Allergic to penicillin V.", eggs).correct
    inhaler = "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler [Flovent]"
    assert not scorers.mentions("Flovent", inhaler)  # the words outside the brackets are needed
    assert scorers.mentions("fluticasone propionate metered dose inhaler, 120 actuat", inhaler)


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ("There is no magnesium result recorded for this patient.", True),
        ("None recorded.", True),
        ("Not found in the chart.", True),
        ("The magnesium was 2.0 mg/dL.", False),
        ("No, it was 2.0 mg/dL last time.", False),  # says 'no' but claims a value
    ],
)
def test_score_nothing(answer, ok):
    assert scorers.score_nothing(answer).correct is ok


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("It increased from 6.5 to 7.2.", "increased"),
        ("The value went down.", "decreased"),
        ("It stayed the same (4.4 both times).", "unchanged"),
        ("Lower than before, not higher.", "decreased"),
        ("I cannot tell.", None),
    ],
)
def test_trend_words(answer, label):
    assert scorers.trend_of(answer) == label


def test_text_match_with_synonyms():
    assert scorers.score_text(
        "Dx: Reiter syndrome.", "Reactive arthritis", ["Reiter syndrome"]
    ).correct
    assert not scorers.score_text("Gout", "Reactive arthritis").correct


def test_stored_messages_read_the_same_in_either_shape() -> None:
    from langchain_core.messages import AIMessage, ToolMessage, messages_to_dict

    from wardround.graphs.trace import message_fields, trace

    call = {"name": "search_records", "args": {"code": "4548-4"}, "id": "c1"}
    messages = [
        AIMessage("", tool_calls=[call]),
        ToolMessage(
            "HbA1c 6.1 %", tool_call_id="c1", name="search_records", artifact=["Observation/a"]
        ),
    ]
    current = trace(messages)
    legacy = [message_fields(m) for m in messages_to_dict(messages)]
    assert current == legacy
    assert current[1] == {"role": "tool", "content": "HbA1c 6.1 %", "name": "search_records",
                          "tool_call_id": "c1", "artifact": ["Observation/a"]}  # fmt: skip
    assert current[0]["tool_calls"] == [call]
