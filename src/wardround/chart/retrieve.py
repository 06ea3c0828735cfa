"""Fetch the records one planner option points at, and the filters code applies to them."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from wardround.chart.options import Option
from wardround.fhir.client import FhirClient
from wardround.fhir.fields import (
    concept_text,
    primary_concept,
    reference_of,
    resource_date,
    resource_datetime,
    status_code,
)
from wardround.fhir.records import fetch_records

# Enough for a lifetime of one lab; counts and date matches need every record, not a page.
ALL = 2000
# Statuses that mean "current" for list questions ("active medications", "allergies").
_CURRENT = {"active", "recurrence", "relapse", "on-hold", "completed-current"}
_NOT_REAL = {"refuted", "entered-in-error"}


def status_of(resource: dict[str, Any], field_name: str | None = None) -> str:
    """A record's status code: `clinicalStatus` (or `field_name`) when coded, else `status`."""
    return (
        status_code(resource, field_name or "clinicalStatus")
        or status_code(resource, "status")
        or ""
    )


def is_current(resource: dict[str, Any]) -> bool:
    """Active now: an active prescription, an active problem, a confirmed active allergy."""
    if status_of(resource, "verificationStatus") in _NOT_REAL:
        return False
    return status_of(resource) in _CURRENT


def order_records(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Current records before others, each group newest first."""
    return sorted(
        resources, key=lambda r: (is_current(r), resource_datetime(r) or ""), reverse=True
    )


async def fetch(
    fhir: FhirClient, patient_id: str, option: Option, limit: int
) -> list[dict[str, Any]]:
    """The records an option points at: one code's newest first, a whole type current first."""
    if option.code:
        codes = [option.code]
        return await fetch_records(fhir, patient_id, option.resource_type, codes=codes, limit=limit)
    found = await fetch_records(fhir, patient_id, option.resource_type, limit=ALL)
    return order_records(found)[:limit]


def name_of(resource: dict[str, Any]) -> str:
    return concept_text(primary_concept(resource)) or reference_of(resource)


def current_items(resources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(name, reference) of the current records."""
    return [(name_of(r), reference_of(r)) for r in resources if is_current(r)]


def items_since(resources: list[dict[str, Any]], day: date) -> list[tuple[str, str]]:
    """(name, reference) of records dated on or after `day`, oldest first."""
    dated = [(d, r) for r in resources if (d := resource_date(r)) and d >= day.isoformat()]
    return [(name_of(r), reference_of(r)) for _, r in sorted(dated, key=lambda p: p[0])]


_SEMANTIC_TAG = re.compile(r"\(([a-z ]+)\)\s*$")
_DISORDERS = re.compile(r"\bdisorders?\b", re.I)


def asks_disorders(question: str) -> bool:
    """Whether a list question asks for disorders ("conditions (disorders)"): no findings."""
    return bool(_DISORDERS.search(question))


def disorders(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records whose SNOMED semantic tag is "(disorder)", or that carry no tag (other
    code systems): a "(finding)" or "(situation)" is no disorder."""
    tags = [_SEMANTIC_TAG.search(name_of(r)) for r in resources]
    return [r for r, tag in zip(resources, tags, strict=True) if not tag or tag[1] == "disorder"]


def in_year(resources: list[dict[str, Any]], year: int) -> list[dict[str, Any]]:
    return [r for r in resources if (resource_date(r) or "").startswith(f"{year}-")]


def ids_of(resources: list[dict[str, Any]]) -> list[str]:
    return [reference_of(r) for r in resources]
