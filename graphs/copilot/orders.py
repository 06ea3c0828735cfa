"""Proposed orders: what a clinician is shown, what they may answer, and writes that happen once.

A write tool call from the model becomes a proposal (tool, arguments, a one-line summary).
The clinician's decision is `approve`, `edit` (with corrected arguments) or `reject`. An
approved order is written with a client-made identifier derived from the thread and the
tool call, and only after a search for that identifier comes back empty; a step that runs
again after a crash or a repeated resume therefore finds its order instead of adding one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, ValidationError, model_validator

from wardround.tools.fhir.client import FhirClient, escape_value

# The identifier system of orders the copilot writes; the value is `order_key(...)`.
ORDER_SYSTEM = "urn:wardround:copilot-order"

RESOURCE_OF_TOOL = {
    "create_observation": "Observation",
    "create_medication_request": "MedicationRequest",
    "create_service_request": "ServiceRequest",
}


class Decision(BaseModel):
    """A clinician's answer to a proposed order."""

    action: Literal["approve", "edit", "reject"]
    args: dict[str, Any] | None = Field(
        None, description="For `edit`: the corrected arguments (all of them)"
    )
    reason: str | None = Field(None, max_length=500, description="For `reject`: why")

    @model_validator(mode="after")
    def _args_for_edit(self) -> Decision:
        if self.action == "edit" and not self.args:
            raise ValueError("an edit needs the corrected `args`")
        if self.action != "edit" and self.args is not None:
            raise ValueError("`args` only goes with action `edit`")
        return self


def check_decision(raw: Any, tool: BaseTool) -> Decision:
    """Validate a decision (and, for an edit, its arguments against the tool); ValueError if not."""
    try:
        decision = Decision.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_first_error(exc)) from None
    if decision.action == "edit":
        decision.args = check_args(decision.args or {}, tool)
    return decision


def check_args(args: dict[str, Any], tool: BaseTool) -> dict[str, Any]:
    """`args` checked against the tool's full schema (field and cross-field rules)."""
    schema = tool.args_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    try:
        checked = schema.model_validate(args)
    except ValidationError as exc:
        raise ValueError(f"invalid order arguments: {_first_error(exc)}") from None
    return checked.model_dump(exclude_none=True, mode="json")


def _first_error(exc: ValidationError) -> str:
    problems = []
    for item in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "value"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(problems)


def order_key(thread_id: str, call_id: str) -> str:
    """The identifier value of the order proposed by tool call `call_id` in a thread."""
    return hashlib.sha256(f"{thread_id}\x00{call_id}".encode()).hexdigest()[:32]


def summarize(tool_name: str, args: dict[str, Any]) -> str:
    """One line a clinician can read at a glance: what, how much, how often, why."""
    kind = RESOURCE_OF_TOOL.get(tool_name, tool_name)
    what = str(args.get("display") or args.get("code") or "?")
    code = args.get("code")
    parts = [f"{kind}: {what}" + (f" [{code}]" if code and code != what else "")]
    if args.get("value") is not None:
        parts.append(f"value {args['value']}{' ' + args['unit'] if args.get('unit') else ''}")
    if args.get("value_text"):
        parts.append(f"value {args['value_text']}")
    if args.get("dose_value") is not None:
        parts.append(f"{args['dose_value']} {args.get('dose_unit') or ''}".strip())
    for key in ("dosage_text", "route"):
        if args.get(key):
            parts.append(str(args[key]))
    if args.get("times_per_day"):
        parts.append(f"{args['times_per_day']}x daily")
    if args.get("as_needed"):
        parts.append("as needed")
    if args.get("priority"):
        parts.append(f"priority {args['priority']}")
    for key in ("occurrence", "effective"):
        if args.get(key):
            parts.append(f"{key} {args[key]}")
    if args.get("reason"):
        parts.append(f"reason: {args['reason']}")
    if args.get("note"):
        parts.append(f"note: {args['note']}")
    return "; ".join(parts)


async def find_order(client: FhirClient, resource_type: str, key: str) -> dict[str, Any] | None:
    """The resource written earlier under `key`, if any."""
    found = await client.search(
        resource_type, [("identifier", f"{ORDER_SYSTEM}|{escape_value(key)}")], limit=1
    )
    return found[0] if found else None


class OnceWrites:
    """Stands in for a `FhirClient` under the write tools: each create happens at most once.

    The resource gets the identifier (`ORDER_SYSTEM`, key); if the server already holds a
    resource with it, that one is returned and nothing is posted. Everything else is the
    wrapped client's.
    """

    def __init__(self, client: FhirClient, key: str) -> None:
        self._client = client
        self.key = key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        resource_type = str(resource.get("resourceType", ""))
        existing = await find_order(self._client, resource_type, self.key)
        if existing is not None:
            return existing
        mark = {"system": ORDER_SYSTEM, "value": self.key}
        stamped = {**resource, "identifier": [*(resource.get("identifier") or []), mark]}
        # Conditional create: two API workers approving at once can both miss the search
        # above; a server that honours If-None-Exist then keeps one.
        condition = f"identifier={escape_value(ORDER_SYSTEM)}|{escape_value(self.key)}"
        return await self._client.create(stamped, if_none_exist=condition)
