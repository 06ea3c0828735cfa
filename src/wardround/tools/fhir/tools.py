"""The FHIR tools a model calls: find a patient, see the chart's manifest, search, read, write.

Every tool is a module-level function of a `ChartScope` (the client, the patient the tools are
bound to, the order key of an approved write) and its checked arguments, returning
`tool_result(text, ids)`: compact lines for the model and the references of the records those
lines came from. `FHIR_TOOLS` describes each one once; `make_fhir_tools(scope)` binds them.

Bound to a patient, the tools take no patient argument and refuse records of other patients,
so a model cannot wander out of the chart. A write tool describes itself: its metadata says it
needs approval and which resource type it creates, and `FhirTool.resource` builds exactly what
approval would write, so a graph can show and approve an order without knowing the tool.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from wardround.fhir.client import (
    FHIR_ID,
    FhirClient,
    FhirError,
    FhirForeignRecord,
    FhirNotFound,
    FhirUnsupportedSearch,
    escape_value,
    parse_reference,
)
from wardround.fhir.compartment import owner_id
from wardround.fhir.fields import reference_of
from wardround.fhir.manifest import build_manifest
from wardround.fhir.records import fetch_records
from wardround.fhir.render import render_resource, render_resources
from wardround.tools.evidence import (
    REQUIRES_APPROVAL,
    WRITES_RESOURCE,
    cited_tool,
    invalid_arguments,
    tool_result,
)
from wardround.tools.fhir.args import (
    REFERENCE_PATTERN,
    CreateMedicationRequestArgs,
    CreateObservationArgs,
    CreateServiceRequestArgs,
    FindPatientArgs,
    ManifestArgs,
    ReadRecordArgs,
    RecordType,
    SearchRecordsArgs,
    with_patient,
)
from wardround.tools.fhir.writes import (
    create_once,
    medication_request_resource,
    observation_resource,
    service_request_resource,
)

__all__ = [
    "FHIR_TOOLS",
    "ChartScope",
    "CreateMedicationRequestArgs",
    "CreateObservationArgs",
    "CreateServiceRequestArgs",
    "FhirTool",
    "FindPatientArgs",
    "ManifestArgs",
    "ReadRecordArgs",
    "RecordType",
    "SearchRecordsArgs",
    "checked_tool",
    "make_fhir_tools",
    "write_spec",
]

log = logging.getLogger(__name__)

DETAIL_NOTE_CHARS = 2000
# The manifest a model reads must fit a small context: top codes per type, or one type in full.
MANIFEST_CODES_PER_TYPE = 5
MANIFEST_CODES_ONE_TYPE = 60
MAX_REPORT_RESULTS = 30
CODES_AFTER_MISS = 15  # codes listed when a filtered search finds nothing
ToolOutput = tuple[str, list[str]]


@dataclass(frozen=True)
class ChartScope:
    """What the FHIR tools run against.

    fhir: the client every tool uses. patient_id: the one patient the tools are bound to
    (None: each patient-scoped tool takes a required `patient_id` argument). order_key: set
    for an approved write, whose create then happens at most once under that identifier.
    """

    fhir: FhirClient
    patient_id: str | None = None
    order_key: str | None = None

    def __post_init__(self) -> None:
        if self.patient_id is not None and not FHIR_ID.fullmatch(self.patient_id):
            raise ValueError(f"not a FHIR id: {self.patient_id!r}")

    def patient(self, args: BaseModel) -> str:
        """The bound patient, else the `patient_id` argument (`with_patient`'s models)."""
        if self.patient_id:
            return self.patient_id
        given = getattr(args, "patient_id", None)
        if not isinstance(given, str):
            raise ValueError("no patient: the tool is bound to none and its arguments name none")
        return given


# -------------------------------------------------------------------- reads


def _describe_search(args: SearchRecordsArgs) -> str:
    parts = [f"{k}={v}" for k, v in (("code", args.code), ("text", args.text), ("status", args.status),
                                      ("from", args.date_from), ("to", args.date_to)) if v]  # fmt: skip
    return ", ".join(parts)


async def find_patient(scope: ChartScope, args: FindPatientArgs) -> ToolOutput:
    # Each word is its own `name` (FHIR matches one name part per value), so a full name
    # finds the patient in either order; "Family, Given" loses its comma first.
    words = (args.name or "").replace(",", " ").split()
    params: list[tuple[str, str]] = [("name", escape_value(word)) for word in words]
    if args.birth_date:
        params.append(("birthdate", args.birth_date.isoformat()))
    if args.identifier:
        params.append(("identifier", escape_value(args.identifier)))
    params.append(("_count", "10"))
    found = await scope.fhir.search("Patient", params, limit=10)
    if not found:
        return tool_result("No patient matches. Try fewer or different criteria.")
    text = "\n".join([f"{len(found)} patient(s):", render_resources(found)])
    return tool_result(text, [reference_of(p) for p in found])


async def patient_manifest(scope: ChartScope, args: ManifestArgs) -> ToolOutput:
    patient = scope.patient(args)
    manifest = await build_manifest(scope.fhir, patient)
    if args.resource_type:
        text = manifest.render(
            max_codes_per_type=MANIFEST_CODES_ONE_TYPE, types=[args.resource_type]
        )
    else:
        text = manifest.render(max_codes_per_type=MANIFEST_CODES_PER_TYPE)
    return tool_result(text, [f"Patient/{patient}"])


async def search_records(scope: ChartScope, args: SearchRecordsArgs) -> ToolOutput:
    found = await fetch_records(
        scope.fhir,
        scope.patient(args),
        args.resource_type,
        codes=[args.code] if args.code else None,
        text=args.text,
        status=args.status,
        date_from=args.date_from,
        date_to=args.date_to,
        sort=args.sort,
        limit=args.limit,
    )
    criteria = _describe_search(args)
    if not found:
        return await _nothing_found(scope, args, criteria)
    order = "newest first" if args.sort == "-date" else "oldest first"
    header = f"{len(found)} {args.resource_type} record(s), {order}"
    header += f" [{criteria}]:" if criteria else ":"
    return tool_result(
        "\n".join([header, render_resources(found)]), [reference_of(r) for r in found]
    )


async def _nothing_found(scope: ChartScope, args: SearchRecordsArgs, criteria: str) -> ToolOutput:
    """An empty search says so; when filters were given, it lists the codes the chart does
    hold for the type, so the next call can use one of them."""
    text = f"No {args.resource_type} records match ({criteria or 'no filters'})."
    if not criteria:
        return tool_result(text)
    manifest = await build_manifest(scope.fhir, scope.patient(args))
    codes = manifest.render(max_codes_per_type=CODES_AFTER_MISS, types=[args.resource_type])
    return tool_result(
        f"{text} What this chart holds:\n{codes}", [f"Patient/{scope.patient(args)}"]
    )


async def read_record(scope: ChartScope, args: ReadRecordArgs) -> ToolOutput:
    parse_reference(args.reference)
    bound = scope.patient_id
    try:
        resource = await scope.fhir.read(args.reference, patient_id=bound)
    except FhirForeignRecord:
        return tool_result(f"Error: {args.reference} is not a record of Patient/{bound}.")
    lines = [render_resource(resource, note_chars=DETAIL_NOTE_CHARS)]
    ids = [reference_of(resource)]
    if resource.get("resourceType") == "DiagnosticReport":
        # A report is read for its results: fetch them so they can be cited (only those of
        # the report's own patient: another's are dropped by the client).
        owner = bound or owner_id(resource)
        refs = [r.get("reference", "") for r in resource.get("result") or []]
        refs = [r for r in refs[:MAX_REPORT_RESULTS] if re.fullmatch(REFERENCE_PATTERN, r)]
        reads = (scope.fhir.read(r, patient_id=owner) for r in refs)
        results = await asyncio.gather(*reads, return_exceptions=True)
        for result in results:
            if isinstance(result, dict):
                lines.append("  " + render_resource(result))
                ids.append(reference_of(result))
    return tool_result("\n".join(lines), ids)


# -------------------------------------------------------------------- writes


async def create_record(scope: ChartScope, resource: dict[str, Any]) -> ToolOutput:
    """Write `resource` (once per `scope.order_key` when one is set)."""
    # Many servers accept a dangling subject; an order for a patient who does not exist
    # must fail here instead (FhirNotFound becomes text for the model).
    await scope.fhir.read(resource["subject"]["reference"])
    if scope.order_key:
        created = await create_once(scope.fhir, resource, scope.order_key)
    else:
        created = await scope.fhir.create(resource)
    return tool_result(f"Created {render_resource(created)}", [reference_of(created)])


Builder = Callable[[Any, str], dict[str, Any]]


def _writer(build: Builder) -> Callable[[ChartScope, Any], Awaitable[ToolOutput]]:
    async def write(scope: ChartScope, args: BaseModel) -> ToolOutput:
        return await create_record(scope, build(args, scope.patient(args)))

    return write


# --------------------------------------------------------------------- specs


@dataclass(frozen=True)
class FhirTool:
    """One FHIR tool, described once. `description` may name `{who}` (the patient, or a
    patient by id when unbound); `resource` is set for writes: the resource they create."""

    name: str
    description: str
    args: type[BaseModel]
    run: Callable[[ChartScope, Any], Awaitable[ToolOutput]]
    patient_scoped: bool = True
    resource: Builder | None = None
    resource_type: str | None = None

    @property
    def writes(self) -> bool:
        return self.resource is not None


def _write(
    name: str, description: str, args: type[BaseModel], build: Builder, rtype: str
) -> FhirTool:
    text = f"{description} Needs approval."
    return FhirTool(name, text, args, _writer(build), resource=build, resource_type=rtype)


FHIR_TOOLS: tuple[FhirTool, ...] = (
    FhirTool(
        "find_patient",
        "Find patients by name, birth date (YYYY-MM-DD) or identifier. Returns Patient ids.",
        FindPatientArgs,
        find_patient,
        patient_scoped=False,
    ),
    FhirTool(
        "patient_manifest",
        "Summary of {who}'s chart: record types and codes with counts and date ranges. "
        "Call it first to learn what exists.",
        ManifestArgs,
        patient_manifest,
    ),
    FhirTool(
        "search_records",
        "Search {who}'s records of one type by code or text, status and date range. "
        "One line per record: Type/id date name value unit status.",
        SearchRecordsArgs,
        search_records,
    ),
    FhirTool(
        "read_record",
        "Read one record by Type/id, with full note text; a DiagnosticReport comes with its results.",
        ReadRecordArgs,
        read_record,
        patient_scoped=False,
    ),
    _write(
        "create_observation",
        "Record a new Observation for {who}.",
        CreateObservationArgs,
        observation_resource,
        "Observation",
    ),
    _write(
        "create_medication_request",
        "Order a medication for {who} (MedicationRequest).",
        CreateMedicationRequestArgs,
        medication_request_resource,
        "MedicationRequest",
    ),
    _write(
        "create_service_request",
        "Order a test, procedure or referral for {who} (ServiceRequest).",
        CreateServiceRequestArgs,
        service_request_resource,
        "ServiceRequest",
    ),
)


def write_spec(name: str) -> FhirTool:
    """The write tool called `name`; KeyError if there is none."""
    for spec in FHIR_TOOLS:
        if spec.name == name and spec.writes:
            return spec
    raise KeyError(f"no write tool named {name!r}")


# --------------------------------------------------------------------- binding


Run = Callable[[Any], Awaitable[ToolOutput]]


async def _guarded(
    name: str, schema: type[BaseModel], run: Run, kwargs: dict[str, Any]
) -> ToolOutput:
    """Run one tool; whatever goes wrong comes back as text telling the model what to do."""
    try:
        return await run(schema.model_validate(kwargs))
    except FhirNotFound as exc:
        return tool_result(f"Error: not found. {exc}")
    except FhirUnsupportedSearch as exc:
        return tool_result(f"Error: {exc}. Use another record type.")
    except FhirError as exc:
        return tool_result(f"Error from the FHIR server: {exc}")
    except ValidationError as exc:
        return tool_result(invalid_arguments(name, exc))
    except ValueError as exc:
        return tool_result(f"Error: {exc}. Fix the arguments and call again.")
    except Exception as exc:  # a tool must never end the graph; the log keeps the trace
        log.exception("tool %s failed", name)
        return tool_result(f"Error: {name} failed unexpectedly ({type(exc).__name__}).")


def checked_tool(
    name: str, description: str, schema: type[BaseModel], run: Run, metadata: dict[str, Any]
) -> BaseTool:
    """An async content-and-artifact tool whose arguments are `schema`, checked before `run`
    sees them; errors (bad arguments, FHIR failures) come back to the model as text."""

    # A plain function, not functools.partial: ToolNode reads the coroutine's type hints.
    async def call(**kwargs: Any) -> ToolOutput:
        return await _guarded(name, schema, run, kwargs)

    return cited_tool(name, description, schema, coroutine=call, metadata=metadata)


def bind_tool(spec: FhirTool, scope: ChartScope) -> BaseTool:
    """`spec` as a LangChain tool over `scope`."""
    bound = scope.patient_id is not None
    schema = spec.args if bound or not spec.patient_scoped else with_patient(spec.args)
    who = "the patient" if bound else "a patient (patient_id)"
    metadata = {REQUIRES_APPROVAL: True, WRITES_RESOURCE: spec.resource_type} if spec.writes else {}
    run = partial(spec.run, scope)
    return checked_tool(spec.name, spec.description.format(who=who), schema, run, metadata)


def make_fhir_tools(
    client: FhirClient, *, patient_id: str | None = None, order_key: str | None = None
) -> list[BaseTool]:
    """The FHIR tools over `client`, in `FHIR_TOOLS` order: find_patient, patient_manifest,
    search_records, read_record, create_observation, create_medication_request,
    create_service_request (the `create_*` carry REQUIRES_APPROVAL and WRITES_RESOURCE).

    With `patient_id`, the tools work on that patient only and take no patient argument;
    without it, every patient-scoped tool takes a required `patient_id`.
    """
    scope = ChartScope(client, patient_id, order_key)
    return [bind_tool(spec, scope) for spec in FHIR_TOOLS]
