"""The FHIR tools' arguments: pydantic models checked before any request is made.

FHIR id grammar, known record types, codes without query syntax, years in a sane range and
text without control characters: a bad argument becomes a message the model can act on, never
a request the server has to refuse.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from wardround.fhir.client import FHIR_ID
from wardround.fhir.records import (
    CODE_CHARS,
    MAX_YEAR,
    MIN_YEAR,
    SYSTEM_CHARS,
    RecordType,
    code_token,
)

_ID_PATTERN = FHIR_ID.pattern
REFERENCE_PATTERN = rf"[A-Z][A-Za-z]{{1,63}}/{_ID_PATTERN}"
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

    resource_type: RecordType | None = Field(
        None, description="List every code of this type (default: top codes of every type)"
    )


class SearchRecordsArgs(BaseModel):
    """Search the patient's records of one type."""

    resource_type: RecordType = Field(
        description="Record type, e.g. Observation for labs and vitals"
    )
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
        pattern=f"^{REFERENCE_PATTERN}$", description="Type/id, e.g. 'Observation/abc'"
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
    category: OBSERVATION_CATEGORIES | None = Field(None, description="Observation category")
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


def with_patient(model: type[BaseModel]) -> type[BaseModel]:
    """The same arguments plus a required `patient_id`, for tools not bound to one patient."""
    return create_model(
        model.__name__.replace("Args", "ForPatientArgs"),
        __base__=model,
        __doc__=model.__doc__,
        patient_id=(str, Field(pattern=f"^{_ID_PATTERN}$", description="The Patient's id")),
    )
