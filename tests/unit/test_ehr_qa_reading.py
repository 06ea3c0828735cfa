"""Dates read from questions, code-computed answers and the faithfulness check, without a model."""

from __future__ import annotations

from datetime import date

import pytest

from wardround.chart import kinds
from wardround.chart.dates import find_day, find_window
from wardround.chart.faithfulness import unsupported


@pytest.mark.parametrize(
    "text",
    [
        "value on 2021-03-04?",
        "value on March 4, 2021",
        "value on 4 March 2021",
        "value on the 4th of Mar 2021",
        "value on 03/04/2021",
        "value on Mar. 4th, 2021",
    ],
)
def test_days_in_every_common_form(text: str) -> None:
    assert find_day(text) == date(2021, 3, 4)


def test_impossible_days_and_bare_years() -> None:
    assert find_day("on 2021-02-30") is None
    window = find_window("How many visits in 2019?")
    assert (
        window
        and window.year
        and (window.start, window.end) == (date(2019, 1, 1), date(2019, 12, 31))
    )
    assert find_window("the last 2019 values") is None  # a number, not "in 2019"
    assert find_window("what is the latest potassium") is None


def _obs(day: str, value: float, oid: str, **extra: object) -> dict:
    return {"resourceType": "Observation", "id": oid, "effectiveDateTime": day,
            "valueQuantity": {"value": value, "unit": "mmol/L"}, **extra}  # fmt: skip


def test_readings_newest_first_and_components() -> None:
    panel = {
        "resourceType": "Observation", "id": "bp", "effectiveDateTime": "2024-01-02",
        "component": [{"code": {"coding": [{"code": "8480-6"}]}, "valueQuantity": {"value": 120, "unit": "mm[Hg]"}}],
    }  # fmt: skip
    values = kinds.readings([_obs("2023-01-01", 4.1, "a"), _obs("2024-01-01", 3.1, "b")])
    assert [v.ref for v in values] == ["Observation/b", "Observation/a"]
    assert kinds.readings([panel], "8480-6")[0].value == 120
    assert kinds.readings([panel]) == []


def test_trend_words_and_ties() -> None:
    up = kinds.readings([_obs("2023-01-01", 4.0, "a"), _obs("2024-01-01", 5.0, "b")])
    assert kinds.trend(up, "potassium").answer.startswith("Increased: from 4 mmol/L on 2023-01-01")
    same = kinds.readings([_obs("2023-01-01", 4.0, "a"), _obs("2024-01-01", 4.0, "b")])
    assert kinds.trend(same, "potassium").answer.startswith("Stayed the same")
    assert "fewer than two" in kinds.trend(up[:1], "potassium").answer


def test_age_handles_birthdays_death_and_unborn() -> None:
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1960-02-29"}
    assert kinds.age(patient, date(2020, 2, 28)).answer.startswith("59 ")
    assert kinds.age(patient, date(2020, 2, 29)).answer.startswith("60 ")
    dead = {**patient, "deceasedDateTime": "2000-06-01T10:00:00Z"}
    assert kinds.age(dead, None).answer.startswith("40 years old on 2000-06-01")
    assert "not yet born" in kinds.age(patient, date(1950, 1, 1)).answer
    assert "not recorded" in kinds.age({"resourceType": "Patient", "id": "x"}, None).answer


def test_count_within_a_year() -> None:
    records = [_obs("2023-01-01", 1, "a"), _obs("2023-06-01", 1, "b")]
    assert kinds.count(records, "visit", 2023).answer.startswith("2 visit records in 2023")
    assert kinds.count([], "visit", 2022).answer == "No visit records are recorded in 2022."


def test_unsupported_finds_values_missing_from_the_evidence() -> None:
    lines = [
        "Observation/a 2023-11-12 Potassium 3.10 mmol/L",
        "Observation/b 2022-01-05 Potassium 4 mmol/L",
    ]
    assert unsupported("3.1 mmol/L on 2023-11-12", lines) == []
    assert unsupported("4.0 on 2022-01-05", lines) == []
    assert unsupported("3.8 mmol/L on 2023-11-13", lines) == ["2023-11-13", "3.8"]
    assert unsupported("Potassium was low", lines) == []


def test_a_named_day_turns_undated_kinds_into_their_dated_siblings() -> None:
    assert kinds.with_day(kinds.Kind.LATEST, True) is kinds.Kind.ON_DATE
    assert kinds.with_day(kinds.Kind.CURRENT, True) is kinds.Kind.SINCE
    assert kinds.with_day(kinds.Kind.LATEST, False) is kinds.Kind.LATEST
    assert kinds.with_day(kinds.Kind.ON_DATE, False) is kinds.Kind.OTHER
    assert kinds.with_day(kinds.Kind.COUNT, True) is kinds.Kind.COUNT
