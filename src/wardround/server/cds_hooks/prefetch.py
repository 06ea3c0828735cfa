"""The chart a hook is answered from: prefetched data where the EHR sent it, FHIR reads with
the hook's `fhirServer` and `fhirAuthorization` where it did not, and only the hook
patient's records either way.

The templates keep to what the specification lets every EHR fill in (an instance read,
type searches by `patient`, `_sort`, `_count`). A key the EHR left out of `prefetch` means
it would not or could not fill it; the service then reads it itself, or answers 412.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from wardround.fhir.auth import BearerAuth
from wardround.fhir.client import FhirClient
from wardround.fhir.compartment import CompartmentGuard, belongs_to
from wardround.server.cds_hooks.models import HookRequest

__all__ = [
    "PREFETCH",
    "ChartData",
    "FhirFactory",
    "PrefetchUnavailable",
    "fill_template",
    "gather_chart",
]

# The same chart serves every hook: results, problems, medicines and allergies are what the
# patient-view cards and the order checks read.
PREFETCH: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&_sort=-date&_count=200",
    "conditions": "Condition?patient={{context.patientId}}",
    "medications": "MedicationRequest?patient={{context.patientId}}",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
}
# Most records one search may bring back (a whole-life chart holds thousands of results).
SEARCH_LIMIT = 500
_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z0-9_]+)\s*\}\}")

FhirFactory = Callable[[str, str | None], FhirClient]


class PrefetchUnavailable(Exception):
    """The chart could not be had: nothing prefetched for these keys and no FHIR access."""


@dataclass
class ChartData:
    """The hook patient's records by prefetch key, and the refs of foreign ones dropped."""

    patient_id: str
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)  # keys read from FHIR, not prefetched

    def of(self, key: str) -> list[dict[str, Any]]:
        return self.records.get(key, [])

    @property
    def patient(self) -> dict[str, Any] | None:
        found = self.of("patient")
        return found[0] if found else None


def default_fhir(base_url: str, token: str | None) -> FhirClient:
    """A client for the EHR's FHIR server with the hook's access token (if any)."""
    return FhirClient(base_url, auth=BearerAuth(token) if token else None, timeout=10, retries=1)


def fill_template(template: str, context: dict[str, Any]) -> str:
    """A prefetch template with its `{{context.x}}` tokens replaced; KeyError if absent."""

    def value(match: re.Match[str]) -> str:
        found = context.get(match.group(1))
        if not isinstance(found, str) or not found:
            raise KeyError(match.group(1))
        return found

    return _TOKEN.sub(value, template)


def _resources(value: Any) -> list[dict[str, Any]]:
    """The resources of one prefetch value: a resource, or a Bundle's entries."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") != "Bundle":
        return [value]
    entries = value.get("entry") or []
    found = (e.get("resource") for e in entries if isinstance(e, dict))
    return [r for r in found if isinstance(r, dict) and r.get("resourceType") != "OperationOutcome"]


async def _read(client: FhirClient, query: str, patient_id: str) -> list[dict[str, Any]]:
    """Run one filled template against the FHIR server (a read or a type search)."""
    path, _, params = query.partition("?")
    if not params and path.count("/") == 1:
        return [await client.read(path, patient_id=patient_id)]
    return await client.search(path, parse_qsl(params), limit=SEARCH_LIMIT)


async def gather_chart(
    hook: HookRequest,
    templates: dict[str, str],
    fhir: FhirFactory = default_fhir,
) -> ChartData:
    """The records the templates name, for the hook's patient (see the module docstring)."""
    patient_id = hook.patient_id
    if not patient_id:
        raise ValueError("context.patientId is required")
    granted = hook.fhirAuthorization.patient if hook.fhirAuthorization else None
    if granted and granted != patient_id:
        raise ValueError("fhirAuthorization.patient is not context.patientId")
    sent = hook.prefetch or {}
    chart = ChartData(patient_id)
    guard = CompartmentGuard(hook.fhirServer or "prefetch")
    for key in templates:
        if sent.get(key) is not None:
            chart.records[key] = _own(guard, _resources(sent[key]), chart, f"prefetch {key}")
    missing = [k for k in templates if k not in chart.records]
    if missing:
        await _fetch(hook, {k: templates[k] for k in missing}, chart, guard, fhir)
    return chart


def _own(
    guard: CompartmentGuard, resources: list[dict[str, Any]], chart: ChartData, via: str
) -> list[dict[str, Any]]:
    """Keep the patient's own records; note and report every other one."""
    for r in resources:
        if not belongs_to(r, chart.patient_id):
            chart.dropped.append(f"{r.get('resourceType')}/{r.get('id')}")
    return guard.keep(resources, chart.patient_id, via)


async def _fetch(
    hook: HookRequest,
    templates: dict[str, str],
    chart: ChartData,
    guard: CompartmentGuard,
    fhir: FhirFactory,
) -> None:
    if not hook.fhirServer:
        raise PrefetchUnavailable(
            f"prefetch is missing {sorted(templates)} and the request has no fhirServer to read"
        )
    token = hook.fhirAuthorization.access_token if hook.fhirAuthorization else None
    client = fhir(hook.fhirServer, token)
    try:
        queries = {k: fill_template(t, hook.context) for k, t in templates.items()}
        found = await asyncio.gather(
            *(_read(client, q, chart.patient_id) for q in queries.values())
        )
    except KeyError as exc:
        raise PrefetchUnavailable(f"context.{exc.args[0]} is needed to read the chart") from None
    finally:
        await client.aclose()
    for key, resources in zip(queries, found, strict=True):
        chart.records[key] = _own(guard, resources, chart, f"read {key}")
        chart.fetched.append(key)
