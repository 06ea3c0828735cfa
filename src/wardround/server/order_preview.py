"""The exact resource an approved order would write, shown on its card before approval.

The write tool's own description builds it (`FhirTool.resource`), from the same checked
arguments, with the identifier the approved write carries (`order_key`); only the timestamps
differ, set when written. The patient is read first, so an order for a patient who does not
exist fails here as it would at approval.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from wardround.fhir.client import FhirClient
from wardround.fhir.errors import FhirNotFound
from wardround.tools.evidence import validation_problems
from wardround.tools.fhir.tools import write_spec
from wardround.tools.fhir.writes import order_key, with_order_key


async def order_resource(
    client: FhirClient, patient_id: str, thread_id: str, pending: dict[str, Any]
) -> dict[str, Any]:
    """The resource `pending` (an approval's data) would write; ValueError if it cannot."""
    try:
        spec = write_spec(str(pending.get("tool")))
    except KeyError:
        raise ValueError(f"{pending.get('tool')!r} does not write a FHIR resource") from None
    assert spec.resource is not None
    try:
        args = spec.args.model_validate(pending.get("args") or {})
    except ValidationError as exc:
        raise ValueError(f"the order could not be built: {validation_problems(exc, 3)}") from None
    try:
        await client.read(f"Patient/{patient_id}")
    except FhirNotFound as exc:
        raise ValueError(f"the order could not be built: {exc}") from None
    resource = spec.resource(args, patient_id)
    return with_order_key(resource, order_key(thread_id, str(pending["call_id"])))
