"""Proposed orders: what a clinician is shown and what they may answer.

A write tool call from the model becomes a proposal (tool, arguments, the resource type the
tool says it writes, a one-line summary). The clinician's decision is `approve`, `edit` (with
corrected arguments) or `reject`. The write itself happens in the tool, once per order key
(`tools/fhir/writes.create_once`), so a step that runs again finds its order instead of adding
one.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, ValidationError, model_validator

from wardround.tools.evidence import WRITES_RESOURCE, validation_problems
from wardround.tools.fhir.writes import ORDER_SYSTEM, find_order, order_key

__all__ = ["ORDER_SYSTEM", "Decision", "check_args", "check_decision", "find_order", "order_key",
           "resource_type", "summarize"]  # fmt: skip


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
        raise ValueError(validation_problems(exc, 3)) from None
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
        raise ValueError(f"invalid order arguments: {validation_problems(exc, 3)}") from None
    return checked.model_dump(exclude_none=True, mode="json")


def resource_type(tool: BaseTool) -> str:
    """The FHIR resource type a write tool says it creates ("" for any other tool)."""
    return str((tool.metadata or {}).get(WRITES_RESOURCE) or "")


def summarize(kind: str, args: dict[str, Any]) -> str:
    """One line a clinician can read at a glance: what, how much, how often, why. Reads the
    argument names the write tools share (display, code, value, dose_*, reason, note, ...)."""
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
