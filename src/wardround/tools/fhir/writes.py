"""What the FHIR write tools create: R4 resources built from checked arguments, written once.

A resource is built (and validated against the R4 model) before anything is sent, so a graph
can show the clinician exactly what approval would write. `create_once` stamps it with an
order identifier and writes it at most once per identifier: a step that runs again after a
crash, or two workers approving at the same moment, find the order instead of adding one.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from wardround.fhir.client import FhirClient, escape_value
from wardround.tools.fhir.args import (
    CreateMedicationRequestArgs,
    CreateObservationArgs,
    CreateServiceRequestArgs,
)

UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
# The identifier system of orders written through approval; the value is `order_key(...)`.
ORDER_SYSTEM = "urn:wardround:copilot-order"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(value: datetime | None) -> str:
    value = value or _now()
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # FHIR instants/dateTimes with a time need a zone
    return value.isoformat()


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _validated(resource: dict[str, Any]) -> dict[str, Any]:
    """Check a resource against the R4 (R4B) model before it is sent; raises ValueError."""
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(
            f"not a valid R4 {resource['resourceType']}: {where}: {first.get('msg')}"
        ) from exc
    return resource


def observation_resource(args: CreateObservationArgs, patient_id: str) -> dict[str, Any]:
    """The R4 Observation `create_observation` posts (a graph can show it before approval)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": _concept(args.system, args.code, args.display),
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": _iso(args.effective),
        "issued": _iso(None),
    }
    if args.category:
        coding = {"system": OBSERVATION_CATEGORY_SYSTEM, "code": args.category}
        resource["category"] = [{"coding": [coding]}]
    if args.value is not None:
        quantity: dict[str, Any] = {"value": args.value}
        if args.unit:
            quantity.update(unit=args.unit, system=UCUM, code=args.unit)
        resource["valueQuantity"] = quantity
    else:
        resource["valueString"] = args.value_text
    if args.note:
        resource["note"] = [{"text": args.note}]
    return _validated(resource)


def medication_request_resource(
    args: CreateMedicationRequestArgs, patient_id: str
) -> dict[str, Any]:
    """The R4 MedicationRequest `create_medication_request` posts."""
    dosage: dict[str, Any] = {}
    if args.dosage_text:
        dosage["text"] = args.dosage_text
    if args.route:
        dosage["route"] = {"text": args.route}
    if args.times_per_day:
        repeat = {"frequency": args.times_per_day, "period": 1, "periodUnit": "d"}
        dosage["timing"] = {"repeat": repeat}
    if args.as_needed:
        dosage["asNeededBoolean"] = True
    if args.dose_value is not None:
        dose: dict[str, Any] = {"value": args.dose_value}
        if args.dose_unit:
            dose.update(unit=args.dose_unit, system=UCUM, code=args.dose_unit)
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": _concept(args.system, args.code, args.display),
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": _iso(None),
    }
    if dosage:
        resource["dosageInstruction"] = [dosage]
    if args.reason:
        resource["reasonCode"] = [{"text": args.reason}]
    if args.note:
        resource["note"] = [{"text": args.note}]
    return _validated(resource)


def service_request_resource(args: CreateServiceRequestArgs, patient_id: str) -> dict[str, Any]:
    """The R4 ServiceRequest `create_service_request` posts."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "priority": args.priority,
        "code": _concept(args.system, args.code, args.display),
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": _iso(None),
    }
    if args.occurrence:
        resource["occurrenceDateTime"] = _iso(args.occurrence)
    if args.reason:
        resource["reasonCode"] = [{"text": args.reason}]
    if args.note:
        resource["note"] = [{"text": args.note}]
    return _validated(resource)


def order_key(thread_id: str, call_id: str) -> str:
    """The identifier value of the order proposed by tool call `call_id` in a thread."""
    return hashlib.sha256(f"{thread_id}\x00{call_id}".encode()).hexdigest()[:32]


def with_order_key(resource: dict[str, Any], key: str) -> dict[str, Any]:
    """`resource` carrying the order identifier `key` (what approval writes)."""
    mark = {"system": ORDER_SYSTEM, "value": key}
    return {**resource, "identifier": [*(resource.get("identifier") or []), mark]}


async def find_order(client: FhirClient, resource_type: str, key: str) -> dict[str, Any] | None:
    """The resource written earlier under `key`, if any."""
    found = await client.search(
        resource_type, [("identifier", f"{ORDER_SYSTEM}|{escape_value(key)}")], limit=1
    )
    return found[0] if found else None


async def create_once(client: FhirClient, resource: dict[str, Any], key: str) -> dict[str, Any]:
    """Create `resource` under the order identifier `key`, or return the one already there."""
    existing = await find_order(client, str(resource.get("resourceType", "")), key)
    if existing is not None:
        return existing
    # Conditional create: two API workers approving at once can both miss the search above;
    # a server that honours If-None-Exist then keeps one.
    condition = f"identifier={escape_value(ORDER_SYSTEM)}|{escape_value(key)}"
    return await client.create(with_order_key(resource, key), if_none_exist=condition)
