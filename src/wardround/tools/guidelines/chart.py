"""Reading a chart by code: codes, dates, values, what is active, latest results.

Plain functions over FHIR R4 JSON (dicts), so a CDS hook's prefetched data, server reads
and an eval's synthetic records are read the same way. The guideline rules (`rules.py`)
stand on these; the CDS Hooks service and the `cds` eval task both import them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

LOINC = "http://loinc.org"

Resource = dict[str, Any]


def ref(resource: Resource) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def codes(concept: Any) -> set[str]:
    return {str(c.get("code")) for c in codings(concept) if c.get("code")}


def text_of(concept: Any) -> str:
    """What a person would call the concept: its text, else the first display, else a code."""
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for c in codings(concept):
        if c.get("display"):
            return str(c["display"])
    return next(iter(sorted(codes(concept))), "")


def when(resource: Resource) -> date | None:
    """The clinically relevant date of a record (effective, onset, authored, recorded)."""
    for name in ("effectiveDateTime", "effectiveInstant", "issued", "authoredOn", "onsetDateTime",
                 "recordedDate", "date"):  # fmt: skip
        value = resource.get(name)
        if isinstance(value, str):
            return parse_date(value)
    period = resource.get("effectivePeriod") or {}
    return parse_date(period.get("start", "")) if isinstance(period, dict) else None


def parse_date(value: str) -> date | None:
    try:
        if len(value) <= 10:
            return date.fromisoformat(value + "-01" * (2 - value.count("-")))
        return datetime.fromisoformat(value).date()
    except ValueError:
        return None


def is_active(resource: Resource) -> bool:
    """Active Conditions and AllergyIntolerances (clinicalStatus), active or draft orders."""
    status = codes(resource.get("clinicalStatus"))
    if status:
        return bool(status & {"active", "recurrence", "relapse"})
    if resource.get("verificationStatus") and "entered-in-error" in codes(
        resource.get("verificationStatus")
    ):
        return False
    return resource.get("status", "active") in ("active", "draft", "on-hold")


@dataclass(frozen=True)
class Result:
    """One quantitative result: the Observation, its value and unit, its date."""

    resource: Resource
    value: float
    unit: str
    on: date | None

    @property
    def ref(self) -> str:
        return ref(self.resource)

    @property
    def name(self) -> str:
        return text_of(self.resource.get("code"))

    def line(self) -> str:
        shown = f"{self.value:g} {self.unit}".strip()
        return f"{self.name} {shown} on {self.on or 'an unknown date'}"


def quantity(resource: Resource) -> tuple[float, str] | None:
    q = resource.get("valueQuantity")
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
        return None
    return float(q["value"]), str(q.get("unit") or q.get("code") or "")


def results(observations: Iterable[Resource], loinc: Iterable[str]) -> list[Result]:
    """Final quantitative results with any of these codes, newest first."""
    wanted = set(loinc)
    found = []
    for obs in observations:
        if obs.get("status") in ("entered-in-error", "cancelled", "preliminary"):
            continue
        value = quantity(obs)
        if value is not None and codes(obs.get("code")) & wanted:
            found.append(Result(obs, value[0], value[1], when(obs)))
    return sorted(found, key=lambda r: r.on or date.min, reverse=True)


def latest(observations: Iterable[Resource], loinc: Iterable[str]) -> Result | None:
    found = results(observations, loinc)
    return found[0] if found else None


def latest_by_code(observations: Iterable[Resource]) -> list[Result]:
    """The newest quantitative result of each code (the first coding names the test)."""
    newest: dict[str, Result] = {}
    for obs in observations:
        first = next(iter(codings(obs.get("code"))), {})
        code = first.get("code")
        if code:
            for result in results([obs], [str(code)]):
                held = newest.get(str(code))
                if held is None or (result.on or date.min) > (held.on or date.min):
                    newest[str(code)] = result
    return list(newest.values())


def mentions(resource: Resource, pattern: re.Pattern[str], *fields: str) -> bool:
    """Whether the text or a display of any of `fields` matches `pattern`."""
    for name in fields:
        concept = resource.get(name)
        texts = [text_of(concept), *(str(c.get("display", "")) for c in codings(concept))]
        if any(pattern.search(t) for t in texts if t):
            return True
    return False


def medicine_name(request: Resource) -> str:
    concept = request.get("medicationCodeableConcept")
    if concept:
        return text_of(concept)
    reference = (request.get("medicationReference") or {}).get("display")
    return str(reference or "")
