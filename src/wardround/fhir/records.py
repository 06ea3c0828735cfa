"""Searching one patient's records by type, code, text, status and date, on any FHIR R4 server.

`fetch_records` is what the tools call, and what a graph calls directly when it has already
decided (without a model) what to retrieve. It knows which search parameter carries the
date, the code and the status of each resource type, and escapes every value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Literal, get_args

from wardround.fhir.client import FhirClient, FhirError, check_id, escape_value
from wardround.fhir.fields import primary_concept, resource_datetime

__all__ = [
    "CODE_CHARS",
    "CODE_PARAMS",
    "DATE_PARAMS",
    "RECORD_TYPES",
    "STATUS_CODES",
    "STATUS_PARAMS",
    "SYSTEM_CHARS",
    "RecordType",
    "Sort",
    "code_token",
    "date_value",
    "fetch_records",
]

# The patient-linked types a chart holds and the tools may search.
RecordType = Literal[
    "Observation", "Condition", "MedicationRequest", "MedicationStatement",
    "MedicationAdministration", "AllergyIntolerance", "Procedure", "Encounter",
    "DiagnosticReport", "Immunization", "DocumentReference", "ServiceRequest", "CarePlan",
    "CareTeam", "Goal", "Device", "ImagingStudy", "SupplyDelivery", "Claim",
    "ExplanationOfBenefit", "Coverage",
]  # fmt: skip
RECORD_TYPES: tuple[str, ...] = get_args(RecordType)

# Standard R4 search parameter carrying each type's clinical date (see fields.DATE_FIELDS).
DATE_PARAMS: dict[str, str] = {
    "Observation": "date",
    "Condition": "onset-date",
    "MedicationRequest": "authoredon",
    "MedicationStatement": "effective",
    "MedicationAdministration": "effective-time",
    "AllergyIntolerance": "date",
    "Procedure": "date",
    "Encounter": "date",
    "DiagnosticReport": "date",
    "Immunization": "date",
    "DocumentReference": "date",
    "ServiceRequest": "authored",
    "CarePlan": "date",
    "CareTeam": "date",
    "ImagingStudy": "started",
    "Claim": "created",
    "ExplanationOfBenefit": "created",
}
# Standard R4 token parameter on each type's main code (see fields.CODE_FIELDS).
CODE_PARAMS: dict[str, str] = {
    "Observation": "code",
    "Condition": "code",
    "MedicationRequest": "code",
    "MedicationStatement": "code",
    "MedicationAdministration": "code",
    "AllergyIntolerance": "code",
    "Procedure": "code",
    "Encounter": "type",
    "DiagnosticReport": "code",
    "Immunization": "vaccine-code",
    "DocumentReference": "type",
    "ServiceRequest": "code",
    "CarePlan": "category",
    "Device": "type",
}
# R4's status codes of the common types (for Condition and AllergyIntolerance: the clinical
# status searched by STATUS_PARAMS). A status the type does not have matches nothing on every
# server, so it is refused with the valid codes instead of returning an empty result.
STATUS_CODES: dict[str, tuple[str, ...]] = {
    "Observation": ("registered", "preliminary", "final", "amended", "corrected", "cancelled",
                    "entered-in-error", "unknown"),
    "DiagnosticReport": ("registered", "partial", "preliminary", "final", "amended",
                         "corrected", "appended", "cancelled", "entered-in-error", "unknown"),
    "Condition": ("active", "recurrence", "relapse", "inactive", "remission", "resolved"),
    "AllergyIntolerance": ("active", "inactive", "resolved"),
    "MedicationRequest": ("active", "on-hold", "cancelled", "completed", "entered-in-error",
                          "stopped", "draft", "unknown"),
    "Procedure": ("preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
                  "entered-in-error", "unknown"),
    "Encounter": ("planned", "arrived", "triaged", "in-progress", "onleave", "finished",
                  "cancelled", "entered-in-error", "unknown"),
    "Immunization": ("completed", "entered-in-error", "not-done"),
}  # fmt: skip

STATUS_PARAMS: dict[str, str] = {
    "Condition": "clinical-status",
    "AllergyIntolerance": "clinical-status",
    "Goal": "lifecycle-status",
}

Sort = Literal["-date", "date"]

# `code` or `system|code`. Codes (LOINC, SNOMED, RxNorm, ICD, NDC, local) never need
# whitespace or query/search syntax, so none is accepted, even though values are escaped anyway.
CODE_CHARS = r"[^\s|,&=?#$\\]"
SYSTEM_CHARS = r"[^\s|,&?#$\\]"
_TOKEN = re.compile(
    rf"(?:([A-Za-z][A-Za-z0-9+.\-]*:{SYSTEM_CHARS}{{1,200}})\|)?({CODE_CHARS}{{1,100}})"
)
_DATE = re.compile(r"(\d{4})(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?")
MIN_YEAR, MAX_YEAR = 1800, 2200
MAX_PAGE_SIZE = 100


def code_token(code: str) -> str:
    """Validate `code` or `system|code` and return it escaped as one FHIR token value."""
    match = _TOKEN.fullmatch(code.strip()) if isinstance(code, str) else None
    if not match:
        raise ValueError(f"not a code or system|code: {code!r}")
    system, value = match.groups()
    return f"{escape_value(system)}|{escape_value(value)}" if system else escape_value(value)


def date_value(value: date | datetime | str) -> str:
    """ISO text of a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime) with a sane year."""
    text = value.isoformat() if isinstance(value, date | datetime) else str(value).strip()
    if not _DATE.fullmatch(text):
        raise ValueError(f"not a date (YYYY-MM-DD): {value!r}")
    if not MIN_YEAR <= int(text[:4]) <= MAX_YEAR:
        raise ValueError(f"date out of range: {value!r}")
    return text


def _text_match(resource: dict[str, Any], words: list[str]) -> bool:
    concept = primary_concept(resource) or {}
    names = [concept.get("text") or ""]
    names += [f"{c.get('display', '')} {c.get('code', '')}" for c in concept.get("coding") or []]
    haystack = " ".join(names).lower()
    return all(w in haystack for w in words)


def search_params(
    patient_id: str,
    resource_type: str,
    codes: Sequence[str] | None,
    status: str | None,
    date_from: date | datetime | str | None,
    date_to: date | datetime | str | None,
    sort: Sort | None,
) -> list[tuple[str, str]]:
    """The search parameters of `fetch_records` (all but text and paging); ValueError if
    an argument is not valid for the type."""
    check_id(patient_id)
    if resource_type not in RECORD_TYPES:
        raise ValueError(
            f"unknown record type {resource_type!r}; use one of {', '.join(RECORD_TYPES)}"
        )
    date_param = DATE_PARAMS.get(resource_type)
    params: list[tuple[str, str]] = [("patient", patient_id)]
    if codes:
        params.append(
            (CODE_PARAMS.get(resource_type, "code"), ",".join(code_token(c) for c in codes))
        )
    if status:
        if not re.fullmatch(r"[a-z][a-z\-]{0,39}", status):
            raise ValueError(f"not a status code: {status!r}")
        known = STATUS_CODES.get(resource_type)
        if known and status not in known:
            raise ValueError(
                f"{resource_type} has no status {status!r}: use one of {', '.join(known)}, "
                "or leave status out"
            )
        params.append((STATUS_PARAMS.get(resource_type, "status"), status))
    for bound, prefix in ((date_from, "ge"), (date_to, "le")):
        if bound is not None:
            if date_param is None:
                raise ValueError(f"{resource_type} has no date to filter on")
            params.append((date_param, prefix + date_value(bound)))
    if sort and date_param:
        params.append(("_sort", f"{'-' if sort == '-date' else ''}{date_param}"))
    return params


async def _text_search(
    client: FhirClient, resource_type: str, params: list[tuple[str, str]], text: str, limit: int
) -> list[dict[str, Any]]:
    """Records whose code's display holds every word of `text`."""
    code_param = CODE_PARAMS.get(resource_type, "code")
    page = ("_count", str(min(limit, MAX_PAGE_SIZE)))
    found: list[dict[str, Any]] = []
    try:
        found = await client.search(
            resource_type, [*params, (f"{code_param}:text", escape_value(text)), page], limit=limit
        )
    except FhirError as exc:
        if exc.status not in (400, 422, 501):
            raise
    if not found:
        # `:text` is missing on some servers and a prefix match on others ("a1c" misses
        # "Hemoglobin A1c"): page through the type and match every word here instead.
        everything = await client.search(resource_type, [*params, ("_count", str(MAX_PAGE_SIZE))])
        found = [r for r in everything if _text_match(r, text.lower().split())]
    return found


async def fetch_records(
    client: FhirClient,
    patient_id: str,
    resource_type: str,
    *,
    codes: Sequence[str] | None = None,
    text: str | None = None,
    status: str | None = None,
    date_from: date | datetime | str | None = None,
    date_to: date | datetime | str | None = None,
    sort: Sort | None = "-date",
    limit: int = 50,
) -> list[dict[str, Any]]:
    """A patient's records of one type, newest first by default.

    Args:
        client: the FHIR client.
        patient_id: the Patient's id (validated against FHIR's id grammar).
        resource_type: one of `RECORD_TYPES`.
        codes: any of these codes (`code` or `system|code`, e.g. from `CodeSummary.token`).
        text: words that must appear in the code's display (server `:text` search, else
            filtered here on the rendered line).
        status: e.g. `active` (Condition/AllergyIntolerance: clinical status).
        date_from, date_to: inclusive bounds on the type's clinical date.
        sort: `-date` newest first, `date` oldest first, None for server order.
        limit: at most this many records (the server is asked for pages of up to 100).

    Raises ValueError on invalid arguments, `FhirError` (and subclasses) from the server.
    """
    params = search_params(patient_id, resource_type, codes, status, date_from, date_to, sort)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    page = ("_count", str(min(limit, MAX_PAGE_SIZE)))
    if text and text.split():
        found = await _text_search(client, resource_type, params, text, limit)
    else:
        found = await client.search(resource_type, [*params, page], limit=limit)
    date_param = DATE_PARAMS.get(resource_type)
    if sort and date_param:
        # Guards against servers that ignore _sort; stable for equal dates.
        found.sort(key=lambda r: resource_datetime(r) or "", reverse=sort == "-date")
    return found[:limit]
