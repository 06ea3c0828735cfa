"""The exact resource an approved order would write, shown on its card before approval.

The write tool itself builds it: the patient's tools run over a client whose `create` keeps
the resource instead of posting it (reads still go to the server, so an order for a patient
who does not exist fails here as it would at approval). The identifier is the one the
approved write carries (`orders.order_key`); only the timestamps differ, set when written.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool

from wardround.graphs.copilot.orders import ORDER_SYSTEM, order_key
from wardround.tools.fhir.client import FhirClient
from wardround.tools.fhir.tools import make_fhir_tools


class _Keep:
    """A FhirClient stand-in: everything passes through except `create`, which is kept."""

    def __init__(self, client: FhirClient) -> None:
        self._client = client
        self.kept: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.kept = resource
        return {**resource, "id": "preview"}


async def order_resource(
    client: FhirClient, patient_id: str, thread_id: str, pending: dict[str, Any]
) -> dict[str, Any]:
    """The resource `pending` (an approval's data) would write; ValueError if it cannot."""
    keep = _Keep(client)
    tools: dict[str, BaseTool] = {
        t.name: t
        for t in make_fhir_tools(keep, patient_id=patient_id)  # type: ignore[arg-type]
    }
    tool = tools.get(str(pending.get("tool")))
    if tool is None:
        raise ValueError(f"{pending.get('tool')!r} does not write a FHIR resource")
    await tool.ainvoke(pending.get("args") or {})
    if keep.kept is None:
        raise ValueError(f"the order could not be built: {pending.get('summary', '')}")
    mark = {"system": ORDER_SYSTEM, "value": order_key(thread_id, str(pending["call_id"]))}
    return {**keep.kept, "identifier": [*(keep.kept.get("identifier") or []), mark]}
