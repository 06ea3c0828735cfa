"""Each task's answer, computed from the FHIR server at grading time, as the original's
reference solutions (refsol.py) compute it, in the target shape `mab_grading` reads.

The original's rules per category: task1 the MRN of the patient with that name and birth
date; task2 the age at "now"; task4 the last magnesium ("MG") in the 24 hours before now,
and task5 a magnesium order by its dosing bands if that value is low; task6 the mean CBG
("GLU") of the last 24 hours and task7 the last CBG; task9 the last potassium ("K") and an
order if below 3.5; task10 the last HbA1c ("A1C") with its date, and an order if it is older
than a year or missing. -1 stands for "not available". Tasks 3 and 8 are writes whose
expected content is in the instruction.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from wardround.evals.chart import Chart, mrn_of
from wardround.evals.task import Sample
from wardround.evals.tasks.mab_grading import NOT_FOUND, SBAR, magnesium_dose, potassium_dose
from wardround.evals.tasks.medagentbench import latest_before
from wardround.fhir.client import FhirClient
from wardround.fhir.fields import age_on

PAGE = "500"
DAY = timedelta(hours=24)
YEAR = timedelta(days=365)  # as our instantiation; the same cutoff as the original's here
_LOOKUP = re.compile(r"name (?P<name>.+?) and DOB of (?P<dob>\d{4}-\d{2}-\d{2})")
_MEASURED = re.compile(r'it is "(?P<value>[^"]+)"')

Rows = list[tuple[datetime, float, str]]


async def find_patient(client: FhirClient, mrn: str) -> dict[str, Any] | None:
    """The Patient with this MRN (the original server also uses the MRN as the id)."""
    found = await client.search("Patient", {"identifier": mrn}, limit=2)
    return found[0] if len(found) == 1 else None


async def lookup_mrn(client: FhirClient, instruction: str) -> str:
    """task1: the MRN of the patient with the instruction's name and birth date."""
    match = _LOOKUP.search(instruction)
    if match is None:
        raise ValueError(f"no name and DOB in {instruction!r}")
    given, _, family = match["name"].strip().partition(" ")
    params = {"given": given, "family": family, "birthdate": match["dob"]}
    found = await client.search("Patient", params, limit=2)
    if len(found) != 1:
        return NOT_FOUND
    return mrn_of(found[0]) or str(found[0]["id"])


async def readings(client: FhirClient, patient: dict[str, Any], code: str) -> Rows:
    """(time, value, ref) of the patient's results with the original's local code, oldest first."""
    found = await client.search(
        "Observation", {"patient": str(patient["id"]), "code": code, "_count": PAGE}
    )
    chart = Chart(patient=patient, resources={"Observation": found})
    return [(t, v, f"Observation/{o['id']}") for t, v, _, o in chart.observations(code)]


def _value(hit: tuple[datetime, float, str] | None) -> dict[str, Any]:
    if hit is None:
        return {"value": -1, "evidence": []}
    return {"value": hit[1], "evidence": [hit[2]]}


def _task4(rows: Rows, now: datetime) -> dict[str, Any]:
    return _value(latest_before(rows, now, DAY))


def _task5(rows: Rows, now: datetime) -> dict[str, Any]:
    found = _task4(rows, now)
    found["dose"] = magnesium_dose(found["value"]) if found["value"] != -1 else None
    return found


def _task6(rows: Rows, now: datetime) -> dict[str, Any]:
    inside = [r for r in rows if now - DAY <= r[0] <= now]
    if not inside:
        return {"value": -1, "evidence": []}
    return {"value": sum(r[1] for r in inside) / len(inside), "evidence": [r[2] for r in inside]}


def _task7(rows: Rows, now: datetime) -> dict[str, Any]:
    return _value(latest_before(rows, now))


def _task9(rows: Rows, now: datetime) -> dict[str, Any]:
    found = _task7(rows, now)
    found["dose_meq"] = potassium_dose(found["value"]) if found["value"] != -1 else None
    return found


def _task10(rows: Rows, now: datetime) -> dict[str, Any]:
    hit = latest_before(rows, now)
    if hit is None:
        return {"value": -1, "date": None, "order": True, "evidence": []}
    stale = hit[0] < now - YEAR
    return {"value": hit[1], "date": hit[0].isoformat(), "order": stale, "evidence": [hit[2]]}


# category -> (the original's local lab code, the rule over that lab's results)
LAB_RULES = {
    "task4": ("MG", _task4),
    "task5": ("MG", _task5),
    "task6": ("GLU", _task6),
    "task7": ("GLU", _task7),
    "task9": ("K", _task9),
    "task10": ("A1C", _task10),
}


def outcome_of(category: str, target: dict[str, Any]) -> str:
    """The branch a reference takes, in the names our own instantiation uses."""
    value = target.get("value")
    if category == "task1":
        return "not_found" if target["expected"] == NOT_FOUND else "found"
    if category == "task5":
        return "none" if value == -1 else "order" if target["dose"] else "normal"
    if category == "task9":
        return "none" if value == -1 else "order" if target["dose_meq"] else "normal"
    if category == "task10":
        return "none" if value == -1 else "stale" if target["order"] else "recent"
    if category in LAB_RULES:
        return "none" if value == -1 else "value"
    return "write" if category in {"task3", "task8"} else "age"


async def reference(client: FhirClient, sample: Sample) -> dict[str, Any]:
    """The target `mab_grading.grade` reads for this task, from the server as it is now."""
    now = datetime.fromisoformat(sample.metadata["now"])
    category, mrn = sample.category, sample.target.get("mrn")
    common = {"mrn": mrn, "patient_id": mrn, "now": sample.metadata["now"]}
    if category == "task1":
        target = {**common, "expected": await lookup_mrn(client, sample.input)}
        return {**target, "outcome": outcome_of(category, target)}
    patient = await find_patient(client, str(mrn))
    if patient is None:
        raise LookupError(f"no patient with MRN {mrn} on {client.base_url}")
    common["patient_id"] = str(patient["id"])
    if category == "task2":
        target = {**common, "age": age_on(date.fromisoformat(patient["birthDate"]), now.date())}
    elif category == "task3":
        match = _MEASURED.search(sample.input)
        target = {**common, "value": match["value"] if match else ""}
    elif category == "task8":
        target = {**common, "note": SBAR}
    else:
        code, rule = LAB_RULES[category]
        target = {**common, **rule(await readings(client, patient, code), now)}
    return {**target, "outcome": outcome_of(category, target)}
