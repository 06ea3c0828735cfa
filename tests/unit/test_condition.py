"""A conditional write judged in code from what the model reads (agents/condition.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from wardround.agents.condition import age_holds, condition_kind, threshold_holds

MG = [
    "1 result(s) of code 19123-9 in the last 24 hours:\nObservation/m1 2025-04-29T23:23:00+00:00 1.3 mg/dL"
]
A1C = ["Observation/a1 2023-06-01T09:00:00+00:00 7.2 %"]


@pytest.mark.parametrize(
    ("condition", "kind"),
    [
        (
            "If low, then order replacement IV magnesium according to dosing instructions.",
            "threshold",
        ),
        ("If the lab value result date is greater than 1 year old, order a new HbA1C.", "age"),
        ("Order a repeat lipid panel if the last one is more than 6 months old.", "age"),
        ("If the potassium is below 3.5, order replacement potassium.", "threshold"),
        ("If no level was recorded in the last 24 hours, don't order anything.", "threshold"),
    ],
)
def test_the_kind_of_a_condition(condition: str, kind: str) -> None:
    assert condition_kind(condition) == kind


def test_a_threshold_is_compared_by_code_on_the_side_the_task_gives() -> None:
    low = {"value": 1.3, "limit": 1.9, "holds_when": "at_or_below"}
    assert threshold_holds(low, MG)
    assert not threshold_holds({**low, "holds_when": "above"}, MG)
    assert threshold_holds({"value": 1.3, "limit": 1.3, "holds_when": "at_or_below"}, MG)
    assert not threshold_holds({"value": 1.3, "limit": 1.3, "holds_when": "below"}, MG)


def test_no_value_is_no_reason_to_write_and_an_invented_one_is_refused() -> None:
    assert not threshold_holds({"value": None, "limit": 1.9, "holds_when": "below"}, MG)
    with pytest.raises(ValueError, match=r"1\.1 is in no tool result"):
        threshold_holds({"value": 1.1, "limit": 1.9, "holds_when": "below"}, MG)


def test_an_age_limit_is_counted_from_the_tasks_now_in_its_unit() -> None:
    reading = {"recorded": "2023-06-01", "limit": 1, "unit": "years"}
    assert age_holds(reading, A1C, datetime.fromisoformat("2024-06-25T08:59:00+00:00"))
    assert not age_holds(reading, A1C, datetime.fromisoformat("2023-10-17T20:16:00+00:00"))
    months = {"recorded": "2023-06-01T09:00:00+00:00", "limit": 3, "unit": "months"}
    assert age_holds(months, A1C, datetime.fromisoformat("2023-10-17T20:16:00+00:00"))


def test_no_result_on_file_is_as_stale_as_can_be_and_an_invented_date_is_refused() -> None:
    now = datetime.fromisoformat("2024-02-03T10:15:00+00:00")
    assert age_holds({"recorded": None, "limit": 1, "unit": "years"}, [], now)
    with pytest.raises(ValueError, match="2020-01-01 is in no tool result"):
        age_holds({"recorded": "2020-01-01", "limit": 1, "unit": "years"}, A1C, now)
