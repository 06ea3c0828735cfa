"""The FHIR tools a model calls: find a patient, see the chart's manifest, search, read, write.

Every tool returns `tool_result(text, ids)`: compact lines for the model and the references
of the records those lines came from. Arguments are pydantic models checked before any
request (FHIR id grammar, known types, codes without query syntax, sane dates); anything
that goes wrong comes back as text telling the model what to do instead.

Bound to a patient (`make_fhir_tools(client, patient_id=...)`), the tools take no patient
argument and refuse records of other patients, so a model cannot wander out of the chart.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any, Literal

from fhir.resources.R4B import get_fhir_model_class
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from wardround.tools.evidence import REQUIRES_APPROVAL, tool_result

from .client import FHIR_ID, FhirClient, FhirError, FhirNotFound, escape_value, parse_reference
from .fields import patient_reference, reference_of
from .manifest import build_manifest
from .records import (
    CODE_CHARS,
    MAX_YEAR,
    MIN_YEAR,
    RECORD_TYPES,
    SYSTEM_CHARS,
    code_token,
    fetch_records,
)
from .render import render_resource, render_resources

__all__ = [
    "CreateMedicationRequestArgs",
    "CreateObservationArgs",
    "CreateServiceRequestArgs",
    "FindPatientArgs",
    "ManifestArgs",
    "ReadRecordArgs",
    "RecordType",
    "SearchRecordsArgs",
    "make_fhir_tools",
    "medication_request_resource",
    "observation_resource",
    "service_request_resource",
]

log = logging.getLogger(__name__)

RecordType = Literal[RECORD_TYPES]  # type: ignore[valid-type]

DETAIL_NOTE_CHARS = 2000
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
# The manifest a model reads must fit a small context: top codes per type, or one type in full.
MANIFEST_CODES_PER_TYPE = 5
MANIFEST_CODES_ONE_TYPE = 60
MAX_REPORT_RESULTS = 30
_ID_PATTERN = FHIR_ID.pattern
_REFERENCE_PATTERN = rf"[A-Z][A-Za-z]{{1,63}}/{_ID_PATTERN}"
_URI_PATTERN = rf"(https?://|urn:){SYSTEM_CHARS}{{1,200}}"
_CODE_PATTERN = rf"{CODE_CHARS}{{1,100}}"
_UNIT_PATTERN = r"[^\s,|]{1,30}"

OBSERVATION_CATEGORIES = Literal[
    "vital-signs", "laboratory", "social-history", "survey", "exam", "imaging", "procedure",
    "therapy", "activity",
]  # fmt: skip


def _sane_date(value: date | datetime | None) -> date | datetime | None:
    if value is not None and not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"year must be between {MIN_YEAR} and {MAX_YEAR}")
    return value


def _plain_text(value: str | None) -> str | None:
    if value is not None and re.search(r"[\x00-\x1f\x7f]", value.replace("\n", " ")):
        raise ValueError("control characters are not allowed")
    return value.strip() if value is not None else None


# ---------------------------------------------------------------- argument models


class FindPatientArgs(BaseModel):
    """Find patients by name, birth date or identifier (at least one)."""

    name: str | None = Field(
        None, max_length=100, description="Name or part of it, e.g. 'Rubin McDermott'"
    )
    birth_date: date | None = Field(None, description="Birth date, YYYY-MM-DD")
    identifier: str | None = Field(
        None, max_length=100, description="An identifier value, e.g. an MRN"
    )

    _text = field_validator("name", "identifier")(_plain_text)
    _date = field_validator("birth_date")(_sane_date)

    @model_validator(mode="after")
    def _one_criterion(self) -> FindPatientArgs:
        if not (self.name or self.birth_date or self.identifier):
            raise ValueError("give at least one of name, birth_date, identifier")
        return self


class ManifestArgs(BaseModel):
    """The chart's record types and codes; all codes of one type when `resource_type` is given."""

    resource_type: RecordType | None = Field(  # type: ignore[valid-type]
        None, description="List every code of this type (default: top codes of every type)"
    )


class SearchRecordsArgs(BaseModel):
    """Search the patient's records of one type."""

    resource_type: RecordType = Field(
        description="Record type, e.g. Observation for labs and vitals"
    )  # type: ignore[valid-type]
    code: str | None = Field(
        None,
        max_length=300,
        description="A code from the manifest, e.g. '4548-4' or 'http://loinc.org|4548-4'",
    )
    text: str | None = Field(
        None, max_length=100, description="Words in the record's name, e.g. 'hemoglobin a1c'"
    )
    status: str | None = Field(
        None,
        pattern=r"^[a-z][a-z\-]{0,39}$",
        description="e.g. 'active' for current medications or problems",
    )
    date_from: date | None = Field(None, description="Earliest date, YYYY-MM-DD")
    date_to: date | None = Field(None, description="Latest date, YYYY-MM-DD")
    sort: Literal["-date", "date"] = Field(
        "-date", description="'-date' newest first, 'date' oldest first"
    )
    limit: int = Field(10, ge=1, le=100, description="How many records at most")

    _text = field_validator("text")(_plain_text)
    _dates = field_validator("date_from", "date_to")(_sane_date)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        if value is not None:
            code_token(value)  # raises on query syntax or whitespace
        return value

    @model_validator(mode="after")
    def _range(self) -> SearchRecordsArgs:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        return self


class ReadRecordArgs(BaseModel):
    """Read one record in full."""

    reference: str = Field(
        pattern=f"^{_REFERENCE_PATTERN}$", description="Type/id, e.g. 'Observation/abc'"
    )


class CreateObservationArgs(BaseModel):
    """Record a new observation (a measurement or finding)."""

    code: str = Field(
        pattern=f"^{_CODE_PATTERN}$", description="Code of what was observed, e.g. LOINC '8867-4'"
    )
    system: str = Field(
        "http://loinc.org", pattern=f"^{_URI_PATTERN}$", description="Code system URI"
    )
    display: str = Field(min_length=1, max_length=200, description="Name, e.g. 'Heart rate'")
    value: float | None = Field(None, description="Numeric value")
    unit: str | None = Field(
        None, pattern=f"^{_UNIT_PATTERN}$", description="Unit of the value, e.g. '/min'"
    )
    value_text: str | None = Field(
        None, max_length=500, description="Value as text, when not a number"
    )
    effective: datetime | None = Field(None, description="When it was observed (default: now)")
    category: OBSERVATION_CATEGORIES | None = Field(None, description="Observation category")  # type: ignore[valid-type]
    note: str | None = Field(None, max_length=500, description="Free-text note")

    _text = field_validator("display", "value_text", "note")(_plain_text)
    _date = field_validator("effective")(_sane_date)

    @model_validator(mode="after")
    def _one_value(self) -> CreateObservationArgs:
        if (self.value is None) == (self.value_text is None):
            raise ValueError("give exactly one of value (a number) or value_text")
        if self.unit and self.value is None:
            raise ValueError("unit goes with a numeric value")
        return self


class CreateMedicationRequestArgs(BaseModel):
    """Order a medication."""

    code: str = Field(
        pattern=f"^{_CODE_PATTERN}$", description="Medication code, e.g. RxNorm '860975'"
    )
    system: str = Field(
        "http://www.nlm.nih.gov/research/umls/rxnorm",
        pattern=f"^{_URI_PATTERN}$",
        description="Code system URI",
    )
    display: str = Field(min_length=1, max_length=200, description="Medication name and strength")
    dosage_text: str | None = Field(
        None, max_length=300, description="e.g. '1 tablet by mouth twice daily'"
    )
    dose_value: float | None = Field(None, gt=0, description="Amount per dose")
    dose_unit: str | None = Field(
        None, pattern=f"^{_UNIT_PATTERN}$", description="Unit of a dose, e.g. 'mg'"
    )
    route: str | None = Field(None, max_length=50, description="e.g. 'oral', 'IV'")
    times_per_day: int | None = Field(None, ge=1, le=24, description="Doses per day")
    as_needed: bool = False
    reason: str | None = Field(None, max_length=200, description="Why it is prescribed")
    note: str | None = Field(None, max_length=500, description="Free-text note")

    _text = field_validator("display", "dosage_text", "route", "reason", "note")(_plain_text)

    @model_validator(mode="after")
    def _dose(self) -> CreateMedicationRequestArgs:
        if self.dose_unit and self.dose_value is None:
            raise ValueError("dose_unit goes with dose_value")
        return self


class CreateServiceRequestArgs(BaseModel):
    """Order a test, procedure or referral."""

    code: str = Field(
        pattern=f"^{_CODE_PATTERN}$", description="Code of the service, e.g. SNOMED or LOINC"
    )
    system: str = Field(
        "http://snomed.info/sct", pattern=f"^{_URI_PATTERN}$", description="Code system URI"
    )
    display: str = Field(min_length=1, max_length=200, description="What is requested")
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"
    occurrence: datetime | None = Field(None, description="When it should happen")
    reason: str | None = Field(None, max_length=200, description="Why it is requested")
    note: str | None = Field(None, max_length=500, description="Free-text note")

    _text = field_validator("display", "reason", "note")(_plain_text)
    _date = field_validator("occurrence")(_sane_date)


def _with_patient(model: type[BaseModel]) -> type[BaseModel]:
    """The same arguments plus a required `patient_id`, for tools not bound to one patient."""
    return create_model(
        model.__name__.replace("Args", "ForPatientArgs"),
        __base__=model,
        __doc__=model.__doc__,
        patient_id=(str, Field(pattern=f"^{_ID_PATTERN}$", description="The Patient's id")),
    )


# ------------------------------------------------------------------- helpers


def _validation_message(tool_name: str) -> Callable[[ValidationError], str]:
    def message(error: ValidationError) -> str:
        problems = []
        for item in error.errors(include_url=False)[:5]:
            where = ".".join(str(p) for p in item.get("loc", ())) or "arguments"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        return (
            f"Error: invalid arguments for {tool_name}: "
            + "; ".join(problems)
            + ". Fix them and call again."
        )

    return message


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


def _belongs_to(resource: dict[str, Any], patient_id: str) -> bool:
    owner = patient_reference(resource)
    if owner is None:  # shared records (Practitioner, Medication, ...) have no owner
        return True
    return owner == f"Patient/{patient_id}" or owner.endswith(f"/Patient/{patient_id}")


def _describe_search(args: SearchRecordsArgs) -> str:
    parts = [f"{k}={v}" for k, v in (("code", args.code), ("text", args.text), ("status", args.status),
                                      ("from", args.date_from), ("to", args.date_to)) if v]  # fmt: skip
    return ", ".join(parts)


# ------------------------------------------------------------ write payloads


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


# -------------------------------------------------------------------- tools


def make_fhir_tools(client: FhirClient, *, patient_id: str | None = None) -> list[BaseTool]:
    """The FHIR tools over `client`, in this order: find_patient, patient_manifest,
    search_records, read_record, create_observation, create_medication_request,
    create_service_request (the three `create_*` carry metadata {REQUIRES_APPROVAL: True}).

    With `patient_id`, the tools work on that patient only and take no patient argument;
    without it, every patient-scoped tool takes a required `patient_id`.
    All tools are async (`ainvoke`) with `response_format="content_and_artifact"`.
    """
    if patient_id is not None and not FHIR_ID.fullmatch(patient_id):
        raise ValueError(f"not a FHIR id: {patient_id!r}")
    bound = patient_id

    def scoped(model: type[BaseModel]) -> type[BaseModel]:
        return model if bound else _with_patient(model)

    def pid(args: BaseModel) -> str:
        return bound or args.patient_id  # type: ignore[attr-defined]

    def build(
        name: str,
        description: str,
        schema: type[BaseModel],
        run: Callable[[Any], Awaitable[tuple[str, list[str]]]],
        *,
        writes: bool = False,
    ) -> BaseTool:
        async def call(**kwargs: Any) -> tuple[str, list[str]]:
            try:
                return await run(schema.model_validate(kwargs))
            except FhirNotFound as exc:
                return tool_result(f"Error: not found. {exc}")
            except FhirError as exc:
                return tool_result(f"Error from the FHIR server: {exc}")
            except ValidationError as exc:
                return tool_result(_validation_message(name)(exc))
            except ValueError as exc:
                return tool_result(f"Error: {exc}. Fix the arguments and call again.")
            except Exception as exc:  # a tool must never end the graph; the log keeps the trace
                log.exception("tool %s failed", name)
                return tool_result(f"Error: {name} failed unexpectedly ({type(exc).__name__}).")

        return StructuredTool.from_function(
            coroutine=call,
            name=name,
            description=description,
            args_schema=schema,
            response_format="content_and_artifact",
            handle_validation_error=_validation_message(name),
            metadata={REQUIRES_APPROVAL: True} if writes else {},
        )

    async def find_patient(args: FindPatientArgs) -> tuple[str, list[str]]:
        # Each word is its own `name` (FHIR matches one name part per value), so a full name
        # finds the patient in either order; "Family, Given" loses its comma first.
        words = (args.name or "").replace(",", " ").split()
        params: list[tuple[str, str]] = [("name", escape_value(word)) for word in words]
        if args.birth_date:
            params.append(("birthdate", args.birth_date.isoformat()))
        if args.identifier:
            params.append(("identifier", escape_value(args.identifier)))
        params.append(("_count", "10"))
        found = await client.search("Patient", params, limit=10)
        if not found:
            return tool_result("No patient matches. Try fewer or different criteria.")
        header = f"{len(found)} patient(s):"
        return tool_result(
            "\n".join([header, render_resources(found)]), [reference_of(p) for p in found]
        )

    async def patient_manifest(args: ManifestArgs) -> tuple[str, list[str]]:
        patient = pid(args)
        manifest = await build_manifest(client, patient)
        if args.resource_type:
            text = manifest.render(
                max_codes_per_type=MANIFEST_CODES_ONE_TYPE, types=[args.resource_type]
            )
        else:
            text = manifest.render(max_codes_per_type=MANIFEST_CODES_PER_TYPE)
        return tool_result(text, [f"Patient/{patient}"])

    async def search_records(args: SearchRecordsArgs) -> tuple[str, list[str]]:
        found = await fetch_records(
            client,
            pid(args),
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
            return tool_result(
                f"No {args.resource_type} records match ({criteria or 'no filters'}). "
                "Check patient_manifest for the types and codes this chart holds."
            )
        order = "newest first" if args.sort == "-date" else "oldest first"
        header = (
            f"{len(found)} {args.resource_type} record(s), {order}"
            + (f" [{criteria}]" if criteria else "")
            + ":"
        )
        return tool_result(
            "\n".join([header, render_resources(found)]), [reference_of(r) for r in found]
        )

    async def read_record(args: ReadRecordArgs) -> tuple[str, list[str]]:
        parse_reference(args.reference)
        resource = await client.read(args.reference)
        if bound and not _belongs_to(resource, bound):
            return tool_result(f"Error: {args.reference} is not a record of Patient/{bound}.")
        lines = [render_resource(resource, note_chars=DETAIL_NOTE_CHARS)]
        ids = [reference_of(resource)]
        if resource.get("resourceType") == "DiagnosticReport":
            # A report is read for its results: fetch them so they can be cited.
            refs = [r.get("reference", "") for r in resource.get("result") or []][
                :MAX_REPORT_RESULTS
            ]
            refs = [r for r in refs if re.fullmatch(_REFERENCE_PATTERN, r)]
            results = await asyncio.gather(*(client.read(r) for r in refs), return_exceptions=True)
            for result in results:
                if isinstance(result, dict):
                    lines.append("  " + render_resource(result))
                    ids.append(reference_of(result))
        return tool_result("\n".join(lines), ids)

    async def create_observation(args: CreateObservationArgs) -> tuple[str, list[str]]:
        return await _create(observation_resource(args, pid(args)))

    async def create_medication_request(args: CreateMedicationRequestArgs) -> tuple[str, list[str]]:
        return await _create(medication_request_resource(args, pid(args)))

    async def create_service_request(args: CreateServiceRequestArgs) -> tuple[str, list[str]]:
        return await _create(service_request_resource(args, pid(args)))

    async def _create(resource: dict[str, Any]) -> tuple[str, list[str]]:
        # Many servers accept a dangling subject; an order for a patient who does not exist
        # must fail here instead (FhirNotFound becomes text for the model).
        await client.read(resource["subject"]["reference"])
        created = await client.create(resource)
        return tool_result(f"Created {render_resource(created)}", [reference_of(created)])

    who = "the patient" if bound else "a patient (patient_id)"
    return [
        build(
            "find_patient",
            "Find patients by name, birth date (YYYY-MM-DD) or identifier. Returns Patient ids.",
            FindPatientArgs,
            find_patient,
        ),
        build(
            "patient_manifest",
            f"Summary of {who}'s chart: record types and codes with counts and date ranges. "
            "Call it first to learn what exists.",
            scoped(ManifestArgs),
            patient_manifest,
        ),
        build(
            "search_records",
            f"Search {who}'s records of one type by code or text, status and date range. "
            "One line per record: Type/id date name value unit status.",
            scoped(SearchRecordsArgs),
            search_records,
        ),
        build(
            "read_record",
            "Read one record by Type/id, with full note text; a DiagnosticReport comes with its results.",
            ReadRecordArgs,
            read_record,
        ),
        build(
            "create_observation",
            f"Record a new Observation for {who}. Needs approval.",
            scoped(CreateObservationArgs),
            create_observation,
            writes=True,
        ),
        build(
            "create_medication_request",
            f"Order a medication for {who} (MedicationRequest). Needs approval.",
            scoped(CreateMedicationRequestArgs),
            create_medication_request,
            writes=True,
        ),
        build(
            "create_service_request",
            f"Order a test, procedure or referral for {who} (ServiceRequest). Needs approval.",
            scoped(CreateServiceRequestArgs),
            create_service_request,
            writes=True,
        ),
    ]
