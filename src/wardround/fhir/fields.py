"""Where each resource type keeps its clinical date and its main code (its patient: compartment.py).

FHIR spreads these over type-specific (and choice-typed) elements; rendering, the manifest
and record search all need the same answer, so it lives here once.
"""

from __future__ import annotations

from datetime import date
from typing import Any

# Whose record a resource is: the Patient compartment's rules, kept in one place.
from wardround.fhir.compartment import belongs_to as belongs_to

# Elements holding the date a record is "about", most specific first. Choice types
# ([x]) are listed per variant; a Period contributes its start.
DATE_FIELDS: dict[str, tuple[str, ...]] = {
    "Observation": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "Condition": ("onsetDateTime", "onsetPeriod", "recordedDate"),
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod", "dateAsserted"),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod"),
    "AllergyIntolerance": ("recordedDate", "onsetDateTime", "onsetPeriod"),
    "Procedure": ("performedDateTime", "performedPeriod"),
    "Encounter": ("period",),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
    "Immunization": ("occurrenceDateTime", "recorded"),
    "DocumentReference": ("date", "context.period"),
    "ServiceRequest": ("occurrenceDateTime", "occurrencePeriod", "authoredOn"),
    "CarePlan": ("period", "created"),
    "CareTeam": ("period",),
    "Goal": ("startDate",),
    "ImagingStudy": ("started",),
    "Device": ("manufactureDate",),
    "SupplyDelivery": ("occurrenceDateTime", "occurrencePeriod"),
    "Claim": ("created", "billablePeriod"),
    "ExplanationOfBenefit": ("created", "billablePeriod"),
    "Coverage": ("period",),
    "Patient": ("birthDate",),
}
_GENERIC_DATE_FIELDS = (
    "effectiveDateTime",
    "effectivePeriod",
    "occurrenceDateTime",
    "occurrencePeriod",
    "performedDateTime",
    "performedPeriod",
    "authoredOn",
    "recordedDate",
    "date",
    "issued",
    "period",
    "created",
    "started",
    "onsetDateTime",
)

# The element naming *what* a record is (the thing a planner filters on).
CODE_FIELDS: dict[str, str] = {
    "Observation": "code",
    "Condition": "code",
    "Procedure": "code",
    "MedicationRequest": "medicationCodeableConcept",
    "MedicationStatement": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
    "AllergyIntolerance": "code",
    "Immunization": "vaccineCode",
    "DiagnosticReport": "code",
    "DocumentReference": "type",
    "Encounter": "type",
    "ServiceRequest": "code",
    "CarePlan": "category",
    "Goal": "description",
    "Device": "type",
    "ImagingStudy": "procedureCode",
    "SupplyDelivery": "suppliedItem.itemCodeableConcept",
}


def get_path(resource: dict[str, Any], path: str) -> Any:
    """Follow a dotted path; lists are entered at their first item."""
    node: Any = resource
    for part in path.split("."):
        if isinstance(node, list):
            node = node[0] if node else None
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _as_datetime_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # Period
        return value.get("start") or value.get("end")
    return None


def resource_datetime(resource: dict[str, Any]) -> str | None:
    """The record's clinical date/time as the server sent it (FHIR dateTime text), or None."""
    fields = DATE_FIELDS.get(resource.get("resourceType", ""), _GENERIC_DATE_FIELDS)
    for field in fields:
        text = _as_datetime_text(get_path(resource, field))
        if text:
            return text
    return None


def resource_date(resource: dict[str, Any]) -> str | None:
    """The record's clinical date, `YYYY-MM-DD` (or shorter if the source is partial)."""
    text = resource_datetime(resource)
    return text[:10] if text else None


def primary_concept(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The CodeableConcept naming what the record is, if it has one."""
    field = CODE_FIELDS.get(resource.get("resourceType", ""), "code")
    value = get_path(resource, field)
    if isinstance(value, list):  # Encounter.type, CarePlan.category: prefer one with a display
        concepts = [v for v in value if isinstance(v, dict)]
        value = next((v for v in concepts if _has_display(v)), concepts[0] if concepts else None)
    return value if isinstance(value, dict) else None


def _has_display(concept: dict[str, Any]) -> bool:
    return bool(concept.get("text") or any(c.get("display") for c in concept.get("coding") or []))


def concept_text(concept: dict[str, Any] | None) -> str | None:
    """Human text of a CodeableConcept: its text, else the first coding display, else a code."""
    if not concept:
        return None
    if concept.get("text"):
        return str(concept["text"])
    codings = concept.get("coding") or []
    for coding in codings:
        if coding.get("display"):
            return str(coding["display"])
    for coding in codings:
        if coding.get("code"):
            return str(coding["code"])
    return None


def reference_of(resource: dict[str, Any]) -> str:
    """`Type/id` of a resource."""
    return f"{resource.get('resourceType', 'Resource')}/{resource.get('id', '?')}"


def status_code(resource: dict[str, Any], field_name: str) -> str | None:
    """A status element's code: the string itself, or a CodeableConcept's first coding."""
    value = resource.get(field_name)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        codings = value.get("coding") or []
        return str(codings[0].get("code")) if codings and codings[0].get("code") else None
    return None


def age_on(birth: date, day: date) -> int:
    """Whole years from `birth` to `day` (a birthday not yet reached that year not counted)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
