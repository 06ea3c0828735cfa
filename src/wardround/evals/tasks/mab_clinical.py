"""MedAgentBench's "clinical" tool profile: the functions at the level a clinician asks.

The nine function tools (mab_tools.py) hand a small model the FHIR details: a date filter
with its prefix for "the last 24 hours", and whole resource bodies for an order. This
profile keeps the raw searches for the rest and replaces those parts with tools whose
arguments are what the task names:

- `patient_age`: the age on the task's "now" (never the wall clock).
- `lab_values`: one code's results newest first, optionally within the last N hours
  before "now", with the latest (and how long before "now" it was) and the mean.
- `record_vital`, `order_medication`, `order_service`: the flowsheet ID and value, the NDC
  and dose, the code and note; the tool writes the FHIR body (category, status, intent,
  subject, the order time = "now"). They need approval, as the raw writes do.

Writes are captured by the same `OrderLog`, so the graders read the same bodies.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field

from wardround.chart.kinds import age as age_text
from wardround.evals.tasks.mab_tools import (
    MabScope,
    MedicationPost,
    OrderLog,
    PatientRef,
    PlainText,
    Run,
    ServicePost,
    Token,
    VitalPost,
    bind_mab_tool,
    post,
    record_time,
    resolve,
    visible,
)
from wardround.fhir.fields import reference_of
from wardround.tools.evidence import REQUIRES_APPROVAL, WRITES_RESOURCE, tool_result
from wardround.tools.fhir.tools import ToolOutput, checked_tool

__all__ = ["CLINICAL_TOOLS", "make_clinical_tools"]

SYSTEMS = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "ndc": "http://hl7.org/fhir/sid/ndc",
}
VITAL_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# The writes and the resource type each creates.
WRITES = {
    "record_vital": "Observation",
    "order_medication": "MedicationRequest",
    "order_service": "ServiceRequest",
}
SHOWN = 10  # results listed; the summary counts them all
HELD = 25  # codes listed when a code holds no result


class AgeArgs(BaseModel):
    patient: PatientRef


class LabArgs(BaseModel):
    patient: PatientRef
    code: Token = Field(description="The lab's code, e.g. '4548-4'")
    within_hours: int | None = Field(
        None,
        ge=1,
        description="Only results of the last N hours before now, if the task says",
        json_schema_extra={"unit": "hours"},
    )


class VitalArgs(BaseModel):
    patient: PatientRef
    flowsheet_id: Token = Field(description="The flowsheet ID of the measurement, e.g. 'BP'")
    value: PlainText = Field(description="The measurement as given, e.g. '118/77 mmHg'")


class MedicationArgs(BaseModel):
    patient: PatientRef
    ndc: Token = Field(description="The medication's NDC code")
    dose: float = Field(description="The dose's number")
    unit: Token = Field(description="The dose's unit, e.g. 'g' or 'mEq'")
    route: Token = Field(description="e.g. 'IV' or 'oral'")
    over_hours: float | None = Field(None, description="An infusion's duration in hours")


class ServiceArgs(BaseModel):
    patient: PatientRef
    system: Literal["loinc", "snomed"] = Field(description="The order code's system")
    code: Token = Field(description="The test's or referral's code")
    note: str | None = Field(None, description="Free text for the order, if the task gives it")
    at: str | None = Field(
        None, description="When it is to be done, ISO date-time, if the task says"
    )


def _now(scope: MabScope) -> datetime:
    if scope.as_of is None:
        raise ValueError("this task states no time: these tools need the task's 'now'")
    return scope.as_of


def _before(delta: timedelta) -> str:
    """How long ago, in the unit a task's rule is written in (hours, days, years)."""
    hours = delta.total_seconds() / 3600
    if hours < 48:
        return f"{hours:.1f} hours"
    return f"{delta.days} days" + (
        f" = {delta.days / 365.25:.1f} years" if delta.days >= 60 else ""
    )


async def patient_age(scope: MabScope, a: AgeArgs) -> ToolOutput:
    patient_id = await resolve(scope, a.patient)
    patient = await scope.fhir().read(f"Patient/{patient_id}")
    done = age_text(patient, _now(scope).date())
    return tool_result(done.answer, done.citations)


def _placed(resource: dict[str, Any], now: datetime) -> datetime | None:
    """The record's time if it is at or before "now"; None otherwise, and for a time without
    an offset, which cannot be placed in an hours window."""
    when = record_time(resource)
    return when if when is not None and when.tzinfo is not None and when <= now else None


async def _results(
    scope: MabScope, patient_id: str, code: str
) -> list[tuple[datetime, float, str, dict]]:
    """(time, value, unit, record) of the code's results up to "now", newest first."""
    now, rows = _now(scope), []
    for r in await visible(scope, "Observation", [("patient", patient_id), ("code", code)]):
        when, quantity = _placed(r, now), r.get("valueQuantity") or {}
        if when is not None and isinstance(quantity.get("value"), int | float):
            rows.append((when, float(quantity["value"]), str(quantity.get("unit") or ""), r))
    return sorted(rows, key=lambda row: row[0], reverse=True)


async def _held_codes(scope: MabScope, patient_id: str) -> str:
    """The codes of this patient's numeric results up to "now", most results first: what
    to ask for when a code the task names (an order code, say) holds none."""
    now, held = _now(scope), Counter[tuple[str, str]]()
    for r in await visible(scope, "Observation", [("patient", patient_id)]):
        coding = ((r.get("code") or {}).get("coding") or [{}])[0]
        if "valueQuantity" in r and coding.get("code") and _placed(r, now) is not None:
            held[(str(coding["code"]), str(coding.get("display") or ""))] += 1
    lines = [f"- {code} {name} ({n})".rstrip() for (code, name), n in held.most_common(HELD)]
    if not lines:
        return ""
    return (
        "Codes with results in this chart (count); if the result asked for is one of them "
        "under another code, ask for that code, and if none is, the chart has none:\n"
        + "\n".join(lines)
    )


async def lab_values(scope: MabScope, a: LabArgs) -> ToolOutput:
    now, patient_id = _now(scope), await resolve(scope, a.patient)
    rows = await _results(scope, patient_id, a.code)
    if not rows:
        held = await _held_codes(scope, patient_id)
        text = f"No result of code {a.code} in this patient's chart at any time."
        return tool_result(f"{text}\n{held}".strip())
    span = f" in the last {a.within_hours} hours" if a.within_hours else ""
    if a.within_hours:
        rows = [row for row in rows if now - row[0] <= timedelta(hours=a.within_hours)]
    if not rows:
        return tool_result(f"No result of code {a.code}{span} (before {now.isoformat()}).")
    lines = [f"{reference_of(r)} {t.isoformat()} {v:g} {u}".rstrip() for t, v, u, r in rows[:SHOWN]]
    t, v, u, _ = rows[0]
    mean = sum(row[1] for row in rows) / len(rows)
    summary = (
        f"Latest: {v:g} {u} at {t.isoformat()} ({_before(now - t)} before now). "
        f"{len(rows)} result(s){span}, mean {round(mean, 2):g} {u}."
    )
    if len(rows) > SHOWN:
        lines.append(f"({len(rows) - SHOWN} older not shown)")
    head = f"{len(rows)} result(s) of code {a.code}{span}, newest first:"
    return tool_result("\n".join([head, *lines, summary]), [reference_of(row[3]) for row in rows])


async def record_vital(scope: MabScope, a: VitalArgs) -> ToolOutput:
    body = {
        "category": [{"coding": [{"system": VITAL_CATEGORY, "code": "vital-signs"}]}],
        "code": {"text": a.flowsheet_id},
        "effectiveDateTime": _now(scope).isoformat(),
        "status": "final",
        "valueString": a.value,
        "subject": {"reference": f"Patient/{await resolve(scope, a.patient)}"},
    }
    return await post(scope, VitalPost.model_validate(body))


async def order_medication(scope: MabScope, a: MedicationArgs) -> ToolOutput:
    dose: dict[str, Any] = {"doseQuantity": {"value": a.dose, "unit": a.unit}}
    if a.over_hours is not None:
        dose["rateQuantity"] = {"value": a.over_hours, "unit": "h"}
    body = {
        "medicationCodeableConcept": {"coding": [{"system": SYSTEMS["ndc"], "code": a.ndc}]},
        "authoredOn": _now(scope).isoformat(),
        "dosageInstruction": [{"route": {"text": a.route}, "doseAndRate": [dose]}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{await resolve(scope, a.patient)}"},
    }
    return await post(scope, MedicationPost.model_validate(body))


async def order_service(scope: MabScope, a: ServiceArgs) -> ToolOutput:
    body: dict[str, Any] = {
        "code": {"coding": [{"system": SYSTEMS[a.system], "code": a.code}]},
        "authoredOn": _now(scope).isoformat(),
        "status": "active",
        "intent": "order",
        "priority": "stat",
        "subject": {"reference": f"Patient/{await resolve(scope, a.patient)}"},
    }
    if a.note:
        body["note"] = {"text": a.note}
    if a.at:
        body["occurrenceDateTime"] = a.at
    return await post(scope, ServicePost.model_validate(body))


_KEPT = ("get_patients", "get_conditions", "get_vital_signs", "get_medication_requests",
         "get_procedures")  # fmt: skip
# name -> (description, arguments, function, what the loop's first step may take it for).
CLINICAL_TOOLS: dict[str, tuple[str, type[BaseModel], Run, tuple[str, ...]]] = {
    "patient_age": ("A patient's age in whole years now.", AgeArgs, patient_age, ("age",)),
    "lab_values": (
        "One lab code's results newest first, optionally within the last N hours, with the "
        "latest, how long ago it was, and the mean.",
        LabArgs,
        lab_values,
        ("latest_value", "trend", "above_or_below"),
    ),
    "record_vital": (
        "File a vital sign (flowsheet ID and value), timed now. Needs approval.",
        VitalArgs,
        record_vital,
        (),
    ),
    "order_medication": (
        "Order a medication by NDC with its dose, unit, route and infusion hours. Needs approval.",
        MedicationArgs,
        order_medication,
        (),
    ),
    "order_service": (
        "Order a lab test or a referral by its LOINC or SNOMED code, with a note and a time "
        "if the task gives them. Needs approval.",
        ServiceArgs,
        order_service,
        (),
    ),
}


def make_clinical_tools(
    client: Any,
    orders: OrderLog,
    *,
    as_of: datetime | None = None,
    descriptions: dict[str, str] | None = None,
    added: Any = (),
) -> list[BaseTool]:
    """The raw searches that stay (Patient, Condition, vitals, medications, procedures) and
    the clinician-level tools above, over one task's scope."""
    scope = MabScope(client, orders, as_of, added=added)  # one MRN lookup for all tools
    kept = [bind_mab_tool(scope, name, descriptions) for name in _KEPT]
    for name, (text, schema, run, kinds) in CLINICAL_TOOLS.items():
        metadata: dict[str, Any] = (
            {REQUIRES_APPROVAL: True, WRITES_RESOURCE: WRITES[name]} if name in WRITES else {}
        )
        if kinds:  # the loop's first step takes this tool when the task's words say so
            metadata["kinds"] = list(kinds)
        kept.append(checked_tool(name, text, schema, partial(run, scope), metadata))
    return kept
