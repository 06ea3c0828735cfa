"""The MedAgentBench function profile: its nine FHIR functions as LangChain tools.

MedAgentBench (funcs_v1.json) offers an agent five searches (Patient, Condition, lab and
vital-sign Observations, MedicationRequest, Procedure) and three writes (a vital-sign
Observation, a MedicationRequest, a ServiceRequest), with FHIR-shaped arguments: the writes
take the resource body itself. These tools keep those names' meaning and argument shapes,
over any `FhirClient`, and keep our evidence contract (text plus record ids).

Two behaviours make them usable for the benchmark on other data:
- `as_of`: the chart as it was at the task's fixed "now"; records dated later are hidden.
- `patient` accepts a FHIR id or an MRN (MedAgentBench's server used the MRN as the id).
- `added`: records a task adds to the chart (results our synthetic patients lack) are
  searched beside the server's, and never written to it.

Writes go to an `OrderLog`. In "capture" mode (the default for evaluation) a POST is
recorded and acknowledged but not sent, exactly as MedAgentBench's harness does: graders
read the captured bodies, concurrent samples cannot see each other's orders, and reruns
leave the reference data untouched. In "server" mode the body is also created on the server.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

from langchain_core.tools import BaseTool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from wardround.fhir.client import FHIR_ID, FhirClient, escape_value
from wardround.fhir.fields import reference_of, resource_date, resource_datetime
from wardround.fhir.render import render_resource
from wardround.tools.evidence import REQUIRES_APPROVAL, WRITES_RESOURCE, tool_result
from wardround.tools.fhir.tools import ToolOutput, checked_tool

__all__ = ["MAB_TOOLS", "TOOL_NAMES", "MabScope", "OrderLog", "bind_mab_tool", "make_mab_tools"]

MAX_LINES = 60
# A result's text budget: eight turns of 60 full lines outgrew an 8k-token context, so a
# listing keeps its newest lines up to about 600 tokens and says how many older it left out.
MAX_RESULT_CHARS = 2400


@dataclass
class OrderLog:
    """The writes an agent made in one task: what it POSTed, and (server mode) what was created."""

    mode: Literal["capture", "server"] = "capture"
    posts: list[dict[str, Any]] = field(default_factory=list)

    def as_artifact(self) -> list[dict[str, Any]]:
        return [dict(p) for p in self.posts]


# ---------------------------------------------------------------- argument models


def _closed_schema(schema: dict[str, Any]) -> None:
    # Extra keys are kept when validating, but not advertised: `additionalProperties` makes
    # every key ambiguous in a decoding grammar, and llama.cpp then slows to a crawl.
    schema.pop("additionalProperties", None)


class _Loose(BaseModel):
    """A FHIR-shaped body: the elements graders read, plus whatever else the agent sends."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_closed_schema)


# Argument checks live in validators, not in JSON-schema `pattern`s: the schemas become
# grammars for constrained decoding, and llama.cpp's converter rejects regex escapes.
_TOKEN_RE = re.compile(r"[^\s,|&=?#]{1,100}")
_DATE_RE = re.compile(
    r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?\d{4}(-\d{2}(-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def _token(value: str | None) -> str | None:
    if value is not None and not _TOKEN_RE.fullmatch(value):
        raise ValueError("must be one code or word, without spaces or , | & = ? #")
    return value


def _date(value: str | None) -> str | None:
    if value is not None and not _DATE_RE.fullmatch(value):
        raise ValueError("must be a FHIR date filter such as 'ge2023-11-12T10:15:00+00:00'")
    return value


def _text(value: str | None) -> str | None:
    if value is not None and (len(value) > 100 or re.search(r"[\x00-\x1f]", value)):
        raise ValueError("must be plain text of at most 100 characters")
    return value


# The checked strings of the searches; a check runs after type validation (None skips it).
Token = Annotated[str, AfterValidator(_token)]
DateFilter = Annotated[str, AfterValidator(_date)]
PlainText = Annotated[str, AfterValidator(_text)]
PatientRef = Annotated[str, Field(description="The patient's FHIR id or MRN")]


class ConditionSearch(BaseModel):
    patient: PatientRef
    category: Token | None = Field(None, description="e.g. 'problem-list-item'")


class LabSearch(BaseModel):
    patient: PatientRef
    code: Token = Field(description="The lab's code, e.g. '4548-4'")
    date: DateFilter | None = Field(
        None, description="FHIR date filter, e.g. 'ge2023-11-12T10:15:00+00:00'"
    )


class VitalSearch(BaseModel):
    patient: PatientRef
    category: Token = Field("vital-signs", description="Use 'vital-signs'")
    date: DateFilter | None = Field(None, description="FHIR date filter")


class MedicationSearch(BaseModel):
    patient: PatientRef
    category: Token | None = Field(None, description="Inpatient, Outpatient, Community, Discharge")
    date: DateFilter | None = Field(None, description="FHIR date filter")


class ProcedureSearch(BaseModel):
    patient: PatientRef
    date: DateFilter | None = Field(None, description="FHIR date filter")
    code: Token | None = Field(None, description="Procedure code")


class PatientSearch(BaseModel):
    name: PlainText | None = Field(None, description="Any part of the name")
    family: PlainText | None = Field(None, description="Family (last) name")
    given: PlainText | None = Field(None, description="Given (first) name")
    birthdate: DateFilter | None = Field(None, description="YYYY-MM-DD")
    identifier: Token | None = Field(None, description="An identifier, e.g. an MRN")
    gender: Literal["male", "female", "other", "unknown"] | None = None
    telecom: PlainText | None = Field(None, description="Phone number or email")


class Reference(_Loose):
    reference: str = Field(description="'Patient/<id>'")


class Coding(_Loose):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class Concept(_Loose):
    coding: list[Coding] | None = None
    text: str | None = None


class Quantity(_Loose):
    value: float | None = None
    unit: str | None = None


class DoseAndRate(_Loose):
    doseQuantity: Quantity | None = None
    rateQuantity: Quantity | None = None


class Dosage(_Loose):
    route: Concept | None = None
    doseAndRate: list[DoseAndRate] | None = None


class Note(_Loose):
    text: str | None = None


class VitalPost(_Loose):
    resourceType: Literal["Observation"] = "Observation"
    category: list[Concept] = Field(description="[{coding: [{system, code: 'vital-signs'}]}]")
    code: Concept = Field(description="{text: flowsheet ID}")
    effectiveDateTime: str = Field(description="ISO date-time")
    status: str = Field(description="'final'")
    valueString: str = Field(description="The measurement, e.g. '118/77 mmHg'")
    subject: Reference


class MedicationPost(_Loose):
    resourceType: Literal["MedicationRequest"] = "MedicationRequest"
    medicationCodeableConcept: Concept = Field(description="{coding: [{system, code, display}]}")
    authoredOn: str = Field(description="ISO date-time the order was written")
    dosageInstruction: list[Dosage] = Field(description="[{route, doseAndRate}]")
    status: str = Field(description="'active'")
    intent: str = Field(description="'order'")
    subject: Reference


class ServicePost(_Loose):
    resourceType: Literal["ServiceRequest"] = "ServiceRequest"
    code: Concept = Field(description="{coding: [{system, code, display}]}")
    authoredOn: str = Field(description="ISO date-time of the order")
    status: str = Field(description="'active'")
    intent: str = Field(description="'order'")
    priority: str = Field(description="'stat'")
    subject: Reference
    note: Note | list[Note] | None = None
    occurrenceDateTime: str | None = None


_SHORT = {
    "get_conditions": "Search a patient's problem list (Condition).",
    "get_lab_observations": "Search a patient's lab results (Observation) by code, newest first.",
    "get_vital_signs": "Search a patient's vital signs (Observation, category vital-signs).",
    "post_vital_observation": "File a vital-sign Observation (the resource body). Needs approval.",
    "get_medication_requests": "Search a patient's medication orders (MedicationRequest).",
    "post_medication_request": "Order a medication: POST a MedicationRequest body. Needs approval.",
    "get_procedures": "Search a patient's procedures (Procedure).",
    "post_service_request": "Order a test or referral: POST a ServiceRequest body. Needs approval.",
    "get_patients": "Search patients by name, birth date, identifier (MRN) and more.",
}


def original_descriptions(funcs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Our tool names mapped to the descriptions of funcs_v1.json (same order, 9 entries)."""
    if len(funcs) != len(TOOL_NAMES):
        raise ValueError(f"expected {len(TOOL_NAMES)} functions, got {len(funcs)}")
    return {name: str(f.get("description", "")) for name, f in zip(TOOL_NAMES, funcs, strict=True)}


def patient_queries(fields: dict[str, Any]) -> list[list[tuple[str, str]]]:
    """Patient searches to try in turn; the first that finds anyone wins.

    FHIR's `name` matches each part of a name on its own, so a full name ("Verna
    Satterfield") as one `name` value finds nobody. A clinician's full name is reasonable
    phrasing, so after the search as asked come: given=first word & family=last word, the
    reverse ("Satterfield, Verna"), and every word as its own `name` (all must match).
    The other criteria (birth date, identifier...) are kept in every search.
    """
    rest = [(k, escape_value(str(v))) for k, v in fields.items() if k != "name"]
    name = str(fields.get("name") or "")
    words = name.replace(",", " ").split()
    queries = [[("name", escape_value(name)), *rest] if name else rest]
    if len(words) > 1:
        first, last = escape_value(words[0]), escape_value(words[-1])
        queries.append([("given", first), ("family", last), *rest])
        queries.append([("given", last), ("family", first), *rest])
        queries.append([*(("name", escape_value(w)) for w in words), *rest])
    return queries


def budgeted(lines: Sequence[str], max_chars: int) -> list[str]:
    """The leading lines whose joined length fits `max_chars` (always at least one)."""
    kept: list[str] = []
    used = 0
    for line in lines:
        used += len(line) + 1
        if kept and used > max_chars:
            break
        kept.append(line)
    return kept


def _line(resource: dict[str, Any]) -> str:
    """The compact line, with the full date-time (time windows need it), not just the day."""
    line = render_resource(resource)
    ref, day, stamp = reference_of(resource), resource_date(resource), resource_datetime(resource)
    if day and stamp and line.startswith(f"{ref} {day}"):
        line = f"{ref} {stamp}{line[len(ref) + 1 + len(day) :]}"
    return line


def record_time(resource: dict[str, Any]) -> datetime | None:
    """The record's date-time, parsed (naive if the record gives no offset); None if it has
    none or it does not parse."""
    stamp = resource_datetime(resource)
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def _after(resource: dict[str, Any], as_of: datetime | None) -> bool:
    if as_of is None or resource.get("resourceType") == "Patient":
        return False
    value = record_time(resource)
    if value is None:
        return False
    if value.tzinfo is None:
        value = value.replace(tzinfo=as_of.tzinfo)
    return value > as_of


@dataclass
class MabScope:
    """What the nine tools of one task run against: the client, where writes go, the task's
    "now" (records dated later are hidden), the MRN -> id lookups made so far and the
    records the task adds."""

    client: FhirClient | None  # None: tools built for their schemas only
    orders: OrderLog
    as_of: datetime | None = None
    patient_ids: dict[str, str] = field(default_factory=dict)
    # Records the task adds to the chart (results our synthetic patients lack), searched
    # beside the server's and never written to it.
    added: Sequence[dict[str, Any]] = ()

    def fhir(self) -> FhirClient:
        if self.client is None:
            raise RuntimeError("these MedAgentBench tools were made without a FHIR client")
        return self.client


async def resolve(scope: MabScope, value: str) -> str:
    """A Patient id from an id, 'Patient/<id>' or an MRN."""
    value = value.strip().removeprefix("Patient/")
    if value in scope.patient_ids:
        return scope.patient_ids[value]
    if not FHIR_ID.fullmatch(value):
        raise ValueError(f"not a patient id or MRN: {value!r}")
    found = await scope.fhir().search("Patient", {"identifier": escape_value(value)}, limit=2)
    scope.patient_ids[value] = str(found[0]["id"]) if len(found) == 1 else value
    return scope.patient_ids[value]


def _codes(concepts: Any) -> set[str]:
    concepts = concepts if isinstance(concepts, list) else [concepts]
    return {
        str(c.get("code")) for k in concepts if isinstance(k, dict) for c in k.get("coding") or []
    }


def _date_matches(stamp: str | None, value: str) -> bool:
    """A FHIR date filter (prefix + date or date-time) against a record's date-time."""
    op = value[:2] if value[:2] in {"eq", "ne", "gt", "lt", "ge", "le"} else "eq"
    text = value[2:] if value[:2] == op else value
    if not stamp:
        return False
    if len(text) <= 10:  # a day (or month, year): compare that much of the date
        return _holds(op, stamp[: len(text)], text)
    try:
        mine = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        theirs = datetime.fromisoformat(text.replace("Z", "+00:00"))
        mine < theirs  # noqa: B015 (naive against aware raises here, not below)
    except (ValueError, TypeError):
        return False
    return _holds(op, mine, theirs)


_Stamp = TypeVar("_Stamp", str, datetime)


def _holds(op: str, mine: _Stamp, theirs: _Stamp) -> bool:
    """`mine op theirs` for a FHIR comparison prefix (eq, ne, gt, lt, ge, le)."""
    return {
        "eq": mine == theirs,
        "ne": mine != theirs,
        "gt": mine > theirs,
        "lt": mine < theirs,
        "ge": mine >= theirs,
        "le": mine <= theirs,
    }[op]


def added_matches(
    resource: dict[str, Any], resource_type: str, params: list[tuple[str, str]]
) -> bool:
    """Whether an added record answers this search (patient, code, category and date)."""
    if resource.get("resourceType") != resource_type:
        return False
    for name, value in params:
        if name == "patient":
            ok = (resource.get("subject") or {}).get("reference") == f"Patient/{value}"
        elif name in ("code", "category"):
            wanted = {v.rpartition("|")[2] for v in value.split(",")}
            ok = bool(wanted & _codes(resource.get(name)))
        elif name == "date":
            ok = _date_matches(resource_datetime(resource), value)
        else:  # a parameter an added record cannot be judged by: it stays out
            ok = False
        if not ok:
            return False
    return True


async def visible(
    scope: MabScope, resource_type: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The search's records, the task's added ones among them, as of the task's "now"."""
    found = await scope.fhir().search(resource_type, params)
    found += [r for r in scope.added if added_matches(r, resource_type, params)]
    return [r for r in found if not _after(r, scope.as_of)]


async def listing(scope: MabScope, resource_type: str, params: list[tuple[str, str]]) -> ToolOutput:
    """The search's records as of the task's "now", newest first, within the text budget."""
    shown = await visible(scope, resource_type, params)
    shown.sort(key=lambda r: resource_datetime(r) or "", reverse=True)
    if not shown:
        return tool_result(f"No {resource_type} records found.")
    kept = budgeted([_line(r) for r in shown[:MAX_LINES]], MAX_RESULT_CHARS)
    lines = list(kept)
    if len(shown) > len(kept):
        lines.append(f"({len(shown) - len(kept)} older records not shown)")
    head = f"{len(shown)} {resource_type} record(s), newest first:"
    return tool_result("\n".join([head, *lines]), [reference_of(r) for r in shown[: len(kept)]])


def _pairs(**values: str | None) -> list[tuple[str, str]]:
    return [(k, v) for k, v in values.items() if v]


Run = Callable[[MabScope, Any], Awaitable[ToolOutput]]


def patient_search(resource_type: str, *fields: str) -> Run:
    """A search of the patient's `resource_type` records by the arguments `fields` given."""

    async def run(scope: MabScope, a: Any) -> ToolOutput:
        given = {name: getattr(a, name) for name in fields}
        params = _pairs(patient=await resolve(scope, a.patient), **given)
        return await listing(scope, resource_type, params)

    return run


async def get_patients(scope: MabScope, a: PatientSearch) -> ToolOutput:
    fields = a.model_dump(exclude_none=True)
    if not fields:
        raise ValueError("give at least one search parameter")
    for params in patient_queries(fields):
        text, refs = await listing(scope, "Patient", params)
        if refs:
            break
    return text, refs


async def post(scope: MabScope, body: BaseModel) -> ToolOutput:
    """Record the POST (and, in "server" mode, create the resource)."""
    payload = body.model_dump(exclude_none=True, mode="json")
    entry: dict[str, Any] = {
        "method": "POST",
        "resourceType": payload["resourceType"],
        "body": payload,
    }
    scope.orders.posts.append(entry)
    if scope.orders.mode == "server":
        created = await scope.fhir().create(payload)
        entry["created"] = reference_of(created)
        return tool_result(f"POST request accepted: created {_line(created)}", [entry["created"]])
    return tool_result(f"POST request accepted ({payload['resourceType']}).")


# name -> (arguments, function), in funcs_v1.json order.
MAB_TOOLS: dict[str, tuple[type[BaseModel], Run]] = {
    "get_conditions": (ConditionSearch, patient_search("Condition", "category")),
    "get_lab_observations": (LabSearch, patient_search("Observation", "code", "date")),
    "get_vital_signs": (VitalSearch, patient_search("Observation", "category", "date")),
    "post_vital_observation": (VitalPost, post),
    # `date` is Epic's dosage-period filter; FHIR servers call it `authoredon` at best.
    "get_medication_requests": (MedicationSearch, patient_search("MedicationRequest", "category")),
    "post_medication_request": (MedicationPost, post),
    "get_procedures": (ProcedureSearch, patient_search("Procedure", "date", "code")),
    "post_service_request": (ServicePost, post),
    "get_patients": (PatientSearch, get_patients),
}
TOOL_NAMES = tuple(MAB_TOOLS)
# The writes and the resource type each creates (the loop offers a write only to a task
# that names it: graphs/tool_loop.offered_tools).
_CREATES = {
    "post_vital_observation": "Observation",
    "post_medication_request": "MedicationRequest",
    "post_service_request": "ServiceRequest",
}


def make_mab_tools(
    client: FhirClient | None,
    orders: OrderLog,
    *,
    as_of: datetime | None = None,
    descriptions: dict[str, str] | None = None,
    added: Sequence[dict[str, Any]] = (),
) -> list[BaseTool]:
    """The nine tools, in funcs_v1.json order (see TOOL_NAMES); writes go to `orders`;
    `added` records join the server's in the searches. `client` None: for the schemas only."""
    scope = MabScope(client, orders, as_of, added=added)
    return [bind_mab_tool(scope, name, descriptions) for name in MAB_TOOLS]


def bind_mab_tool(scope: MabScope, name: str, descriptions: dict[str, str] | None) -> BaseTool:
    """One of the nine tools over `scope` (the writes need approval)."""
    schema, run = MAB_TOOLS[name]
    description = (descriptions or {}).get(name, _SHORT[name])
    metadata = (
        {REQUIRES_APPROVAL: True, WRITES_RESOURCE: _CREATES[name]} if name in _CREATES else {}
    )
    return checked_tool(name, description, schema, partial(run, scope), metadata)
