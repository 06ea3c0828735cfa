"""The chart at a glance and result trends: computed from FHIR records, no model."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from fhir_fixtures import FhirFixture
from wardround.fhir.errors import FhirNotFound
from wardround.server.chart import (
    NoResults,
    chart_summary,
    patient_record,
    result_trend,
    summarize_chart,
    trend_of,
    value_flag,
)
from wardround.testing.sample_charts import handmade_resources

LOINC = "http://loinc.org"
TODAY = date(2024, 3, 1)
SYSTOLIC_CODE = "8480-6"


def by_id() -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in handmade_resources()}


def handmade_summary(**patient_changes: Any):
    resources = handmade_resources()
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    patient.update(patient_changes)
    return summarize_chart(patient, resources, TODAY)


def test_the_handmade_chart_at_a_glance() -> None:
    chart = handmade_summary()
    head = chart.patient
    assert (head.name, head.sex, head.birth_date, head.age) == (
        "Ada Testwell",
        "female",
        "1960-02-29",
        64,
    )
    assert head.deceased is None and head.ref == "Patient/ex-patient"
    # Active only: the resolved sinusitis and the stopped amoxicillin are not current.
    assert [p.label for p in chart.problems] == ["Diabetes mellitus type 2"]
    assert {m.ref for m in chart.medications} == {
        "MedicationRequest/ex-metformin-rx",
        "MedicationStatement/ex-aspirin-stmt",
    }
    (allergy,) = chart.allergies
    assert allergy.label == "Allergy to peanut" and allergy.value == "high criticality"
    (bp,) = chart.vitals
    assert (bp.ref, bp.value, bp.date) == ("Observation/ex-bp", "132/84 mmHg", "2023-11-12")
    assert bp.line.startswith("Observation/ex-bp 2023-11-12 Blood pressure panel")
    # Typical range: systolic 132 is above 129, and the record has no range of its own.
    assert (bp.flag, bp.flag_source, bp.numeric) == ("H", "typical", True)
    (a1c,) = chart.labs
    assert (a1c.ref, a1c.value, a1c.label) == ("Observation/ex-hba1c-new", "6.1 %", "HbA1c")
    assert a1c.code == f"{LOINC}|4548-4" and a1c.flag == "H"
    assert chart.other_results == []
    assert chart.records == len(handmade_resources()) - 1


def test_a_deceased_patient_shows_the_date_and_the_age_at_death() -> None:
    chart = handmade_summary(deceasedDateTime="2020-02-28T10:00:00Z")
    assert chart.patient.deceased == "2020-02-28"
    assert chart.patient.age == 59  # one day short of the 60th birthday (29 Feb)
    assert handmade_summary(deceasedBoolean=True).patient.deceased == "yes"


def quantity_obs(code: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "valueQuantity": {"value": value, "unit": unit, "code": unit},
        **extra,
    }


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (quantity_obs("2823-3", 5.9, "mmol/L"), ("H", "typical")),
        (quantity_obs("2823-3", 4.2, "mmol/L"), (None, None)),
        (quantity_obs("2823-3", 3.1, "mmol/L"), ("L", "typical")),
        # A unit the typical range is not written in: no flag rather than a wrong one.
        (quantity_obs("2339-0", 12.0, "mmol/L"), (None, None)),
        # The record's own range and interpretation win over the typical range.
        (
            quantity_obs("2823-3", 5.3, "mmol/L", referenceRange=[{"high": {"value": 5.5}}]),
            (None, None),
        ),
        (
            quantity_obs("2823-3", 4.0, "mmol/L", interpretation=[{"coding": [{"code": "L"}]}]),
            ("L", "record"),
        ),
        # The lab called it normal: no flag, even outside the typical range.
        (
            quantity_obs("2823-3", 5.3, "mmol/L", interpretation=[{"coding": [{"code": "N"}]}]),
            (None, None),
        ),
        # "W" (worse) is not a level: the range decides.
        (
            quantity_obs("2823-3", 5.9, "mmol/L", interpretation=[{"coding": [{"code": "W"}]}]),
            ("H", "typical"),
        ),
        (quantity_obs("99999-9", 4.0, "mg"), (None, None)),
    ],
)
def test_flags(obs: dict[str, Any], expected: tuple[str | None, str | None]) -> None:
    assert value_flag(obs, obs["code"]["coding"][0]["code"]) == expected


def test_newest_result_per_code_with_common_labs_first() -> None:
    resources = handmade_resources()
    patient = resources[0]
    lab = [{"coding": [{"system": "x", "code": "laboratory"}]}]
    extra = [
        quantity_obs(
            "2823-3", 4.0, "mmol/L", id="k-old", effectiveDateTime="2020-01-01", category=lab
        ),
        quantity_obs(
            "2823-3", 5.8, "mmol/L", id="k-new", effectiveDateTime="2023-01-01", category=lab
        ),
        quantity_obs("12345-6", 1.0, "mg", id="odd", effectiveDateTime="2023-01-01", category=lab),
    ]
    chart = summarize_chart(patient, [*resources, *extra], TODAY)
    assert [i.ref for i in chart.labs] == ["Observation/ex-hba1c-new", "Observation/k-new"]
    assert chart.labs[1].flag == "H" and chart.labs[1].label == "Potassium"
    assert [i.ref for i in chart.other_results] == ["Observation/odd"]


def condition(cid: str, text: str, onset: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"code": status}]},
        "code": {
            "coding": [{"system": "http://snomed.info/sct", "code": text[:6], "display": text}]
        },
        "onsetDateTime": onset,
    }


def test_repeated_conditions_show_once_with_disorders_first() -> None:
    conditions = [
        condition("r1", "Medication review due (situation)", "2020-01-01"),
        condition("r2", "Medication review due (situation)", "2023-01-01"),
        condition("s1", "Stress (finding)", "2022-01-01"),
        condition("h1", "Hypertension (disorder)", "2010-01-01"),
        condition("x1", "Old fracture (disorder)", "2001-01-01", status="resolved"),
    ]
    chart = summarize_chart(handmade_resources()[0], conditions, TODAY)
    assert [(i.ref, i.label, i.kind) for i in chart.problems] == [
        ("Condition/h1", "Hypertension", "disorder"),
        ("Condition/r2", "Medication review due", "situation"),
        ("Condition/s1", "Stress", "finding"),
    ]


def test_vitals_are_the_usual_set_and_a_panel_hides_its_parts() -> None:
    vital = [{"coding": [{"code": "vital-signs"}]}]
    bp = by_id()["ex-bp"]
    extra = [
        quantity_obs(SYSTOLIC_CODE, 132, "mm[Hg]", id="sys", effectiveDateTime="2023-11-12", category=vital),
        quantity_obs("8287-5", 35.0, "cm", id="head", effectiveDateTime="1970-01-01", category=vital),
    ]  # fmt: skip
    chart = summarize_chart(handmade_resources()[0], [bp, *extra], TODAY)
    assert [i.ref for i in chart.vitals] == ["Observation/ex-bp"]
    assert [i.ref for i in chart.other_results] == ["Observation/head"]


def test_trend_of_blood_pressure_has_both_components_oldest_first() -> None:
    older = copy.deepcopy(by_id()["ex-bp"])
    older.update(id="bp-old", effectiveDateTime="2022-01-05")
    older["component"][0]["valueQuantity"]["value"] = 150
    trend = trend_of([by_id()["ex-bp"], older], f"{LOINC}|85354-9")
    assert trend.records == 2
    systolic, diastolic = trend.series
    assert (systolic.label, diastolic.label) == ("Systolic", "Diastolic")
    assert [p.value for p in systolic.points] == [150, 132]
    assert [p.ref for p in diastolic.points] == ["Observation/bp-old", "Observation/ex-bp"]
    assert (systolic.low, systolic.high, systolic.range_source) == (90, 129, "typical")


def test_trend_band_comes_from_the_record_when_it_has_a_range() -> None:
    obs = quantity_obs(
        "2823-3", 4.0, "mmol/L", id="k", effectiveDateTime="2023-01-01",
        referenceRange=[{"low": {"value": 3.4}, "high": {"value": 5.2}}],
    )  # fmt: skip
    (series,) = trend_of([obs], f"{LOINC}|2823-3").series
    assert (series.low, series.high, series.range_source) == (3.4, 5.2, "record")


# ---------------------------------------------------------- over a real server

pytestmark_async = pytest.mark.asyncio(loop_scope="session")


@pytestmark_async
async def test_chart_and_trend_from_sekmet(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    chart = await chart_summary(fhir.client, pid, today=TODAY)
    assert chart.patient.ref == f"Patient/{pid}" and chart.patient.name == "Ada Testwell"
    assert [i.value for i in chart.labs] == ["6.1 %"]
    trend = await result_trend(fhir.client, pid, f"{LOINC}|4548-4")
    (series,) = trend.series
    assert [p.value for p in series.points] == [7.4, 6.1]  # oldest first
    assert trend.records == 2


@pytestmark_async
async def test_bad_input_and_missing_data(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    with pytest.raises(FhirNotFound):
        await chart_summary(fhir.client, "no-such-patient")
    with pytest.raises(ValueError, match="not a code"):
        await result_trend(fhir.client, pid, "two words")
    with pytest.raises(NoResults, match="no Observation with code"):
        await result_trend(fhir.client, pid, f"{LOINC}|2823-3")
    with pytest.raises(NoResults, match="no numbers"):
        await result_trend(fhir.client, pid, f"{LOINC}|72166-2")  # smoking status: text


@pytestmark_async
async def test_a_record_of_another_patient_is_refused(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    other = fhir.patients["diabetes"]
    (obs,) = await fhir.client.search("Observation", {"patient": other, "_count": 1}, limit=1)
    with pytest.raises(PermissionError, match="not a record of"):
        await patient_record(fhir.client, pid, f"Observation/{obs['id']}")
    mine = await patient_record(fhir.client, other, f"Observation/{obs['id']}")
    assert mine["id"] == obs["id"]
