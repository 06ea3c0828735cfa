"""A patient's chart at a glance, and the history of one result, computed from FHIR alone.

No model is involved: the summary is what a clinician looks at before asking anything. Each
item carries its record's reference and the compact line the agent reads for that record
(`render.render_resource`), so the page and the agent show the same words.

Reference-range flags come from the record itself (`interpretation`, then `referenceRange`).
Many sources (PySynthea among them) send neither; for a short list of common tests we then
use a typical adult range, only when the record's unit is the one the range is written in,
and say so (`flag_source: "typical"`), so a flag never pretends to be the lab's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from wardround.fhir.bounded import ReadState
from wardround.fhir.fields import (
    age_on,
    belongs_to,
    concept_text,
    primary_concept,
    reference_of,
    resource_date,
    resource_datetime,
)
from wardround.fhir.records import RECORD_TYPES, code_token, fetch_records
from wardround.fhir.render import _components as component_text  # the compact line's own wording
from wardround.fhir.render import _value as value_text
from wardround.fhir.render import render_resource

if TYPE_CHECKING:
    from wardround.fhir.client import FhirClient

__all__ = [
    "ChartItem",
    "ChartSummary",
    "PatientHeader",
    "Trend",
    "chart_summary",
    "patient_record",
    "result_trend",
    "summarize_chart",
    "trend_of",
]

LOINC = "http://loinc.org"
BP_PANEL, SYSTOLIC, DIASTOLIC = "85354-9", "8480-6", "8462-4"
MAX_TREND_POINTS = 2000
FlagSource = Literal["record", "typical"]
Flag = Literal["H", "L", "A"]  # high, low, abnormal


class TypicalRange(BaseModel):
    label: str
    unit: str  # UCUM code (or unit text) the range is written in
    low: float | None = None
    high: float | None = None


def _r(label: str, unit: str, low: float | None, high: float | None) -> TypicalRange:
    return TypicalRange(label=label, unit=unit, low=low, high=high)


# Typical adult ranges (both sexes), conventional US units as PySynthea writes them. Used
# only when a record has no range or interpretation of its own. Order = display order.
COMMON_LABS: dict[str, TypicalRange] = {
    "4548-4": _r("HbA1c", "%", 4.0, 5.6),
    "2339-0": _r("Glucose", "mg/dL", 70, 99),
    "2345-7": _r("Glucose", "mg/dL", 70, 99),
    "2951-2": _r("Sodium", "mmol/L", 135, 145),
    "2947-0": _r("Sodium", "mmol/L", 135, 145),
    "2823-3": _r("Potassium", "mmol/L", 3.5, 5.1),
    "6298-4": _r("Potassium", "mmol/L", 3.5, 5.1),
    "2075-0": _r("Chloride", "mmol/L", 98, 107),
    "2069-3": _r("Chloride", "mmol/L", 98, 107),
    "2028-9": _r("CO2", "mmol/L", 22, 29),
    "20565-8": _r("CO2", "mmol/L", 22, 29),
    "6299-2": _r("Urea nitrogen", "mg/dL", 7, 20),
    "3094-0": _r("Urea nitrogen", "mg/dL", 7, 20),
    "38483-4": _r("Creatinine", "mg/dL", 0.6, 1.3),
    "2160-0": _r("Creatinine", "mg/dL", 0.6, 1.3),
    "33914-3": _r("eGFR", "mL/min/{1.73_m2}", 60, None),
    "49765-1": _r("Calcium", "mg/dL", 8.5, 10.5),
    "17861-6": _r("Calcium", "mg/dL", 8.5, 10.5),
    "2093-3": _r("Cholesterol", "mg/dL", None, 200),
    "18262-6": _r("LDL", "mg/dL", None, 100),
    "2085-9": _r("HDL", "mg/dL", 40, None),
    "2571-8": _r("Triglycerides", "mg/dL", None, 150),
    "718-7": _r("Hemoglobin", "g/dL", 12.0, 17.5),
    "4544-3": _r("Hematocrit", "%", 36, 50),
    "6690-2": _r("WBC", "10*3/uL", 4.5, 11.0),
    "777-3": _r("Platelets", "10*3/uL", 150, 450),
    "1742-6": _r("ALT", "U/L", 7, 56),
    "1920-8": _r("AST", "U/L", 10, 40),
    "14959-1": _r("Albumin/creatinine", "mg/g", None, 30),
    "3016-3": _r("TSH", "m[IU]/L", 0.4, 4.0),
}
# Vital signs in display order; ranges are typical resting adult values.
VITALS: dict[str, TypicalRange] = {
    BP_PANEL: _r("Blood pressure", "mm[Hg]", None, None),
    SYSTOLIC: _r("Systolic", "mm[Hg]", 90, 129),
    DIASTOLIC: _r("Diastolic", "mm[Hg]", 60, 79),
    "8867-4": _r("Heart rate", "/min", 60, 100),
    "9279-1": _r("Respiratory rate", "/min", 12, 20),
    "8310-5": _r("Temperature", "Cel", 36.1, 37.5),
    "2708-6": _r("SpO2", "%", 95, 100),
    "59408-5": _r("SpO2", "%", 95, 100),
    "29463-7": _r("Weight", "kg", None, None),
    "8302-2": _r("Height", "cm", None, None),
    "39156-5": _r("BMI", "kg/m2", 18.5, 24.9),
    "72514-3": _r("Pain (0-10)", "{score}", None, None),
}
_SEMANTIC_TAG = re.compile(r"\s*\((disorder|finding|situation|morphologic abnormality)\)\s*$")


# ------------------------------------------------------------------- models


class PatientHeader(BaseModel):
    ref: str
    line: str
    name: str
    sex: str | None = None
    birth_date: str | None = None
    age: int | None = Field(None, description="Years, at death for a deceased patient")
    deceased: str | None = Field(None, description="Date of death, or 'yes' without a date")


class ChartItem(BaseModel):
    ref: str
    line: str = Field(description="The record as the agent reads it")
    label: str
    value: str = ""
    date: str | None = None
    status: str | None = None
    kind: str | None = Field(default=None, description="Conditions: disorder, finding or situation")
    code: str | None = Field(None, description="system|code, for the trend endpoint")
    flag: Flag | None = None
    flag_source: FlagSource | None = None
    numeric: bool = Field(default=False, description="Has a number to plot")


class ChartSummary(BaseModel):
    patient: PatientHeader
    problems: list[ChartItem]
    medications: list[ChartItem]
    allergies: list[ChartItem]
    vitals: list[ChartItem]
    labs: list[ChartItem] = Field(description="Latest result of each common lab")
    other_results: list[ChartItem] = Field(
        description="Latest of every other lab or vital-sign code"
    )
    records: int = Field(description="How many records the summary was built from")
    partial: str | None = Field(
        default=None, description="Set when not every record was read (a read bound): why"
    )


class TrendPoint(BaseModel):
    ref: str
    date: str
    value: float


class TrendSeries(BaseModel):
    label: str
    code: str
    unit: str
    points: list[TrendPoint]
    low: float | None = None
    high: float | None = None
    range_source: FlagSource | None = None


class Trend(BaseModel):
    code: str
    label: str
    records: int = Field(description="Records with this code (one point each per series)")
    series: list[TrendSeries]


class NoResults(LookupError):
    """The patient has no Observation with the code asked for."""


# ------------------------------------------------------------------ helpers


def _coding(concept: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(system, code) of a concept's first LOINC coding, else of its first coding."""
    codings = [c for c in (concept or {}).get("coding") or [] if c.get("code")]
    chosen = next((c for c in codings if c.get("system") == LOINC), codings[0] if codings else {})
    return chosen.get("system"), chosen.get("code")


def _token(concept: dict[str, Any] | None) -> str | None:
    system, code = _coding(concept)
    if not code:
        return None
    return f"{system}|{code}" if system else str(code)


def _loinc(concept: dict[str, Any] | None) -> str | None:
    system, code = _coding(concept)
    return str(code) if code and system == LOINC else None


def _unit_key(text: Any) -> str:
    return re.sub(r"[\[\]{}\s]", "", str(text or "")).lower()


def _number(holder: dict[str, Any]) -> tuple[float, str] | None:
    """(value, unit) of a numeric valueQuantity, else None."""
    q = holder.get("valueQuantity")
    if not isinstance(q, dict) or isinstance(q.get("value"), bool):
        return None
    if not isinstance(q.get("value"), int | float):
        return None
    return float(q["value"]), str(q.get("unit") or q.get("code") or "")


# v3 ObservationInterpretation codes as a flag; "" = the lab calls it normal.
_INTERPRETATION_FLAGS: dict[str, Flag | Literal[""]] = {"H": "H", "HH": "H", "HU": "H", ">": "H", "L": "L", "LL": "L",
                         "LU": "L", "<": "L", "A": "A", "AA": "A", "POS": "A", "DET": "A",
                         "N": "", "NEG": "", "ND": ""}  # fmt: skip


def _interpretation(holder: dict[str, Any]) -> Flag | Literal[""] | None:
    """The record's own judgement: a flag, "" for normal, None if absent or not a level."""
    for concept in holder.get("interpretation") or []:
        _, code = _coding(concept)
        if code and str(code).upper() in _INTERPRETATION_FLAGS:
            return _INTERPRETATION_FLAGS[str(code).upper()]
    return None


def _compare(value: float, low: float | None, high: float | None) -> Flag | None:
    if high is not None and value > high:
        return "H"
    if low is not None and value < low:
        return "L"
    return None


def _record_range(holder: dict[str, Any]) -> tuple[float | None, float | None] | None:
    for item in holder.get("referenceRange") or []:
        low = (item.get("low") or {}).get("value")
        high = (item.get("high") or {}).get("value")
        if low is not None or high is not None:
            return low, high
    return None


def _typical(code: str | None, holder: dict[str, Any]) -> TypicalRange | None:
    """The typical range for `code`, if the holder's unit is the one it is written in."""
    spec = COMMON_LABS.get(code or "") or VITALS.get(code or "")
    q = holder.get("valueQuantity") or {}
    if spec is None or (spec.low is None and spec.high is None):
        return None
    units = {_unit_key(q.get("code")), _unit_key(q.get("unit"))}
    return spec if _unit_key(spec.unit) in units else None


def value_range(
    holder: dict[str, Any], code: str | None
) -> tuple[float | None, float | None, FlagSource] | None:
    """The range a value is judged against: the record's own, else a typical one."""
    own = _record_range(holder)
    if own is not None:
        return own[0], own[1], "record"
    spec = _typical(code, holder)
    return (spec.low, spec.high, "typical") if spec else None


def value_flag(holder: dict[str, Any], code: str | None) -> tuple[Flag | None, FlagSource | None]:
    """H/L/A for one value (an Observation or a component), and where the judgement came from."""
    judged = _interpretation(holder)
    if judged is not None:  # the lab said it: normal stays unflagged whatever the range
        return (judged, "record") if judged else (None, None)
    number = _number(holder)
    bounds = value_range(holder, code)
    if number is None or bounds is None:
        return None, None
    flag = _compare(number[0], bounds[0], bounds[1])
    return (flag, bounds[2]) if flag else (None, None)


def _numeric_components(resource: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [
        (_loinc(c.get("code")), c)
        for c in resource.get("component") or []
        if isinstance(c, dict) and _number(c) is not None
    ]


def _combined_flag(flags: Iterable[Flag | None]) -> Flag | None:
    got = [f for f in flags if f]
    return "H" if "H" in got else "L" if "L" in got else "A" if got else None


def observation_item(resource: dict[str, Any]) -> ChartItem:
    """One result: its value text, date and flag (a panel is flagged if any component is)."""
    code = _loinc(resource.get("code"))
    spec = COMMON_LABS.get(code or "") or VITALS.get(code or "")
    value = value_text(resource)
    flag, source = value_flag(resource, code)
    parts = _numeric_components(resource)
    if parts:
        value = value or component_text(resource)
        judged = [value_flag(holder, part) for part, holder in parts]
        if flag is None:
            flag = _combined_flag(f for f, _ in judged)
            source = next((s for f, s in judged if f == flag), None) if flag else None
    return ChartItem(
        ref=reference_of(resource),
        line=render_resource(resource),
        label=(spec.label if spec else None) or concept_text(resource.get("code")) or "?",
        value=value,
        date=resource_date(resource),
        status=resource.get("status"),
        code=_token(resource.get("code")),
        flag=flag,
        flag_source=source,
        numeric=_number(resource) is not None or bool(parts),
    )


def _categories(resource: dict[str, Any]) -> set[str]:
    return {
        str(c.get("code"))
        for concept in resource.get("category") or []
        for c in concept.get("coding") or []
    }


def _newest_first(resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(resources, key=lambda r: resource_datetime(r) or "", reverse=True)


def _latest_per_code(observations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for resource in _newest_first(observations):
        key = _token(resource.get("code")) or concept_text(resource.get("code")) or ""
        seen.setdefault(key, resource)
    return list(seen.values())


def _order(items: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    rank = {code: n for n, code in enumerate(order)}
    return sorted(items, key=lambda r: rank.get(_loinc(r.get("code")) or "", len(rank)))


# ------------------------------------------------------------------ sections


def _day(text: Any) -> date | None:
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def _age(birth: str | None, until: date) -> int | None:
    born = _day(birth)
    if born is None:
        return None
    return age_on(born, until)


def patient_header(patient: dict[str, Any], today: date) -> PatientHeader:
    died = patient.get("deceasedDateTime")
    deceased = str(died)[:10] if died else ("yes" if patient.get("deceasedBoolean") else None)
    until = (_day(died) if died else None) or today
    line = render_resource(patient)
    names = patient.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    full = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    return PatientHeader(
        ref=reference_of(patient),
        line=line,
        name=full or reference_of(patient),
        sex=patient.get("gender"),
        birth_date=patient.get("birthDate"),
        age=_age(patient.get("birthDate"), until),
        deceased=deceased,
    )


def _status_code(concept: dict[str, Any] | None) -> str | None:
    _, code = _coding(concept)
    return str(code) if code else (concept or {}).get("text")


def problems(conditions: Iterable[dict[str, Any]]) -> list[ChartItem]:
    """Active conditions, one per code (the newest record; sources repeat the same finding
    at every visit): disorders first, then findings and situations, newest first."""
    items: dict[str, ChartItem] = {}
    for r in _newest_first(conditions):
        if _status_code(r.get("clinicalStatus")) not in ("active", "recurrence", "relapse"):
            continue
        text = concept_text(r.get("code")) or "?"
        key = _token(r.get("code")) or text
        if key in items:
            continue
        tag = _SEMANTIC_TAG.search(text)
        items[key] = ChartItem(
            ref=reference_of(r),
            line=render_resource(r),
            label=_SEMANTIC_TAG.sub("", text),
            date=resource_date(r),
            status="active",
            kind=tag.group(1) if tag else "disorder",
            code=_token(r.get("code")),
        )
    return sorted(items.values(), key=lambda i: i.kind != "disorder")


def medications(resources: Iterable[dict[str, Any]]) -> list[ChartItem]:
    """Active medication orders and statements, one per medication (the newest)."""
    current = {"MedicationRequest": {"active", "on-hold"}, "MedicationStatement": {"active"}}
    items: dict[str, ChartItem] = {}
    for r in _newest_first(resources):
        if r.get("status") not in current.get(r.get("resourceType", ""), set()):
            continue
        concept = r.get("medicationCodeableConcept")
        label = concept_text(concept) or (r.get("medicationReference") or {}).get("display")
        if label and label not in items:
            items[label] = ChartItem(
                ref=reference_of(r),
                line=render_resource(r),
                label=label,
                date=resource_date(r),
                status=r.get("status"),
                code=_token(concept),
            )
    return list(items.values())


def allergies(resources: Iterable[dict[str, Any]]) -> list[ChartItem]:
    """Allergies and intolerances that are not resolved or inactive."""
    items = []
    for r in _newest_first(resources):
        status = _status_code(r.get("clinicalStatus"))
        if status in ("resolved", "inactive"):
            continue
        crit = r.get("criticality")
        items.append(
            ChartItem(
                ref=reference_of(r),
                line=render_resource(r),
                label=concept_text(primary_concept(r)) or "?",
                value=f"{crit} criticality" if crit in ("high", "low") else "",
                date=resource_date(r),
                status=status,
                code=_token(r.get("code")),
            )
        )
    return items


def _is_vital(r: dict[str, Any]) -> bool:
    return _loinc(r.get("code")) in VITALS


def _is_result(r: dict[str, Any]) -> bool:
    return (
        bool({"laboratory", "vital-signs"} & _categories(r)) or _loinc(r.get("code")) in COMMON_LABS
    )


def results(observations: list[dict[str, Any]]) -> tuple[list, list, list]:
    """(vitals, common labs, other results): the newest record of each code.

    Vitals are the usual adult set; a systolic or diastolic record of its own is left out
    when a blood pressure panel shows both. Other vital-sign codes (growth percentiles, head
    circumference) go with the other results.
    """
    vitals = _latest_per_code(r for r in observations if _is_vital(r))
    if any(_loinc(r.get("code")) == BP_PANEL for r in vitals):
        vitals = [r for r in vitals if _loinc(r.get("code")) not in (SYSTOLIC, DIASTOLIC)]
    vitals = _order(vitals, list(VITALS))
    labs = _latest_per_code(r for r in observations if _is_result(r) and not _is_vital(r))
    common = _order([r for r in labs if _loinc(r.get("code")) in COMMON_LABS], list(COMMON_LABS))
    other = [r for r in labs if _loinc(r.get("code")) not in COMMON_LABS]
    other.sort(key=lambda r: (concept_text(r.get("code")) or "").lower())
    return (
        [observation_item(r) for r in vitals],
        [observation_item(r) for r in common],
        [observation_item(r) for r in other],
    )


class _Gathered:
    """What the summary needs of a chart read page by page: every problem, medicine and
    allergy, the newest Observation of each code (as a vital, as a result), and a count."""

    KEPT = ("Condition", "MedicationRequest", "MedicationStatement", "AllergyIntolerance")

    def __init__(self) -> None:
        self.kept: dict[str, list[dict[str, Any]]] = {t: [] for t in self.KEPT}
        self.latest: dict[tuple[str, bool, bool], dict[str, Any]] = {}
        self.records = 0

    def add(self, resources: Iterable[dict[str, Any]]) -> None:
        for r in resources:
            rtype = str(r.get("resourceType"))
            self.records += rtype != "Patient"
            if rtype in self.kept:
                self.kept[rtype].append(r)
            elif rtype == "Observation" and (_is_vital(r) or _is_result(r)):
                code = r.get("code")
                key = (_token(code) or concept_text(code) or "", _is_vital(r), _is_result(r))
                held = self.latest.get(key)  # the first of equally new ones, as a sort keeps
                if held is None or (resource_datetime(r) or "") > (resource_datetime(held) or ""):
                    self.latest[key] = r

    def summary(self, patient: dict[str, Any], today: date) -> ChartSummary:
        vitals, labs, other = results(list(self.latest.values()))
        meds = self.kept["MedicationRequest"] + self.kept["MedicationStatement"]
        return ChartSummary(
            patient=patient_header(patient, today),
            problems=problems(self.kept["Condition"]),
            medications=medications(meds),
            allergies=allergies(self.kept["AllergyIntolerance"]),
            vitals=vitals,
            labs=labs,
            other_results=other,
            records=self.records,
        )


def summarize_chart(
    patient: dict[str, Any], resources: Iterable[dict[str, Any]], today: date
) -> ChartSummary:
    """The chart at a glance from a patient's resources (e.g. `$everything`)."""
    gathered = _Gathered()
    gathered.add(resources)
    return gathered.summary(patient, today)


async def chart_summary(
    client: FhirClient, patient_id: str, today: date | None = None
) -> ChartSummary:
    """Read the patient (FhirNotFound if there is none) and summarise their whole chart,
    read page by page (only what the summary shows is kept); `partial` says why when a read
    bound stopped it before the end."""
    patient = await client.read(f"Patient/{patient_id}")
    gathered, state = _Gathered(), ReadState()
    pages = client.iter_everything(patient_id, fallback_types=RECORD_TYPES, state=state)
    async for page in pages:
        gathered.add(page)
    summary = gathered.summary(patient, today or date.today())
    summary.partial = state.why if state.truncated else None
    return summary


# -------------------------------------------------------------------- trends


def _series_range(holder: dict[str, Any], code: str | None) -> dict[str, Any]:
    bounds = value_range(holder, code)
    if bounds is None:
        return {}
    return {"low": bounds[0], "high": bounds[1], "range_source": bounds[2]}


def _trend_label(concept: dict[str, Any] | None, fallback: str) -> str:
    code = _loinc(concept) or ""
    spec = COMMON_LABS.get(code) or VITALS.get(code)
    return (spec.label if spec else None) or concept_text(concept) or fallback


def trend_of(observations: list[dict[str, Any]], code: str) -> Trend:
    """Oldest-first series of an Observation code: its value, or each numeric component
    (a blood pressure panel gives systolic and diastolic)."""
    ordered = sorted(observations, key=lambda r: resource_datetime(r) or "")
    series: dict[str, TrendSeries] = {}
    for r in ordered:
        when = resource_datetime(r)
        holders = [r] if _number(r) else [h for _, h in _numeric_components(r)]
        for holder in holders if when else []:
            concept = holder.get("code")
            key = _token(concept) or "value"
            value, unit = _number(holder) or (0.0, "")
            entry = series.get(key)
            if entry is None:
                label = _trend_label(concept, key)
                entry = series[key] = TrendSeries(label=label, code=key, unit=unit, points=[])
            entry.points.append(TrendPoint(ref=reference_of(r), date=str(when), value=value))
            bounds = _series_range(holder, _loinc(concept))
            if bounds and (entry.range_source != "record" or bounds["range_source"] == "record"):
                for name, bound in bounds.items():  # the newest wins; the lab's over typical
                    setattr(entry, name, bound)
    newest = ordered[-1].get("code") if ordered else None
    return Trend(
        code=code,
        label=_trend_label(newest, code),
        records=len(observations),
        series=list(series.values()),
    )


async def result_trend(client: FhirClient, patient_id: str, code: str) -> Trend:
    """Every Observation of `code` (`system|code`) for the patient, as plottable series."""
    code_token(code)  # ValueError for a malformed code, before any request
    found = await fetch_records(
        client, patient_id, "Observation", codes=[code], sort="date", limit=MAX_TREND_POINTS
    )
    if not found:
        raise NoResults(f"no Observation with code {code} for Patient/{patient_id}")
    trend = trend_of(found, code)
    if not trend.series:
        raise NoResults(f"the Observations with code {code} hold no numbers to plot")
    return trend


async def patient_record(client: FhirClient, patient_id: str, reference: str) -> dict[str, Any]:
    """Read `reference`; PermissionError if it belongs to another patient."""
    resource = await client.read(reference)
    if not belongs_to(resource, patient_id):
        raise PermissionError(f"{reference} is not a record of Patient/{patient_id}")
    return resource
