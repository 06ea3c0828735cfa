"""A patient's records as plain FHIR JSON, fetched once, with the lookups question generators need."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from wardround.fhir.fields import (
    concept_text,
    reference_of,
    resource_datetime,
    status_code,
)

# Resource types a question generator reads, and the page size asked for.
CHART_TYPES = ("Observation", "MedicationRequest", "AllergyIntolerance", "Condition", "Encounter")
PAGE = "500"


def parse_instant(text: str) -> datetime | None:
    """A FHIR date/dateTime as an aware datetime (dates become midnight UTC); None if unreadable."""
    if not text:
        return None
    value = text.strip().replace("Z", "+00:00")
    try:
        if len(value) == 10:
            return datetime.fromisoformat(value + "T00:00:00+00:00")
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def when(resource: dict[str, Any]) -> datetime | None:
    text = resource_datetime(resource)
    return parse_instant(text) if text else None


def codes_of(resource: dict[str, Any], field_name: str = "code") -> set[str]:
    concept = resource.get(field_name) or {}
    return {str(c.get("code")) for c in concept.get("coding") or [] if c.get("code")}


def quantity(resource: dict[str, Any]) -> tuple[float, str] | None:
    q = resource.get("valueQuantity")
    if isinstance(q, dict) and isinstance(q.get("value"), int | float):
        return float(q["value"]), str(q.get("unit") or q.get("code") or "")
    return None


def mrn_of(patient: dict[str, Any]) -> str | None:
    """The medical record number: the identifier typed MR, if any."""
    for ident in patient.get("identifier") or []:
        codings = (ident.get("type") or {}).get("coding") or []
        if any(c.get("code") == "MR" for c in codings) and ident.get("value"):
            return str(ident["value"])
    return None


def full_name(patient: dict[str, Any]) -> tuple[str, str]:
    names = patient.get("name") or []
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    given = " ".join(official.get("given") or [])
    return given, str(official.get("family") or "")


@dataclass
class Chart:
    patient: dict[str, Any]
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.patient["id"])

    @property
    def birth_date(self) -> date | None:
        text = self.patient.get("birthDate")
        try:
            return date.fromisoformat(text) if text else None
        except ValueError:
            return None

    @property
    def death(self) -> datetime | None:
        return parse_instant(self.patient.get("deceasedDateTime") or "")

    def of(self, resource_type: str) -> list[dict[str, Any]]:
        return self.resources.get(resource_type, [])

    def observations(self, code: str) -> list[tuple[datetime, float, str, dict[str, Any]]]:
        """(time, value, unit, resource) of numeric results with this code, oldest first."""
        rows = []
        for obs in self.of("Observation"):
            if code not in codes_of(obs) or status_code(obs, "status") == "entered-in-error":
                continue
            at, q = when(obs), quantity(obs)
            if at is not None and q is not None:
                rows.append((at, q[0], q[1], obs))
        return sorted(rows, key=lambda row: (row[0], row[3].get("id", "")))

    def codes_named(self, name: str) -> set[str]:
        """Observation codes whose display is exactly `name` (case aside)."""
        if not hasattr(self, "_named"):
            named: dict[str, set[str]] = {}
            for obs in self.of("Observation"):
                for coding in (obs.get("code") or {}).get("coding") or []:
                    if coding.get("display") and coding.get("code"):
                        named.setdefault(coding["display"].lower(), set()).add(coding["code"])
            self._named = named
        return self._named.get(name.lower(), set())

    def last_data_time(self) -> datetime | None:
        times = [t for rtype in CHART_TYPES for r in self.of(rtype) if (t := when(r)) is not None]
        return max(times) if times else None


def display(resource: dict[str, Any], field_name: str = "code") -> str:
    return concept_text(resource.get(field_name)) or "?"


def refs(resources: Iterable[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(reference_of(r) for r in resources))


async def fetch_chart(fhir: Any, patient_id: str, types: Iterable[str] = CHART_TYPES) -> Chart:
    """Read a patient and the record types asked for, through any client with `read`/`search`."""
    patient = await fhir.read(f"Patient/{patient_id}")
    chart = Chart(patient=patient)
    for rtype in types:
        chart.resources[rtype] = await fhir.search(rtype, {"patient": patient_id, "_count": PAGE})
    return chart


async def list_patient_ids(fhir: Any, limit: int | None = None) -> list[str]:
    """Ids of the server's patients, sorted so datasets built from them are reproducible."""
    patients = await fhir.search("Patient", {"_count": PAGE})
    ids = sorted(str(p["id"]) for p in patients if p.get("id"))
    return ids[:limit] if limit else ids
