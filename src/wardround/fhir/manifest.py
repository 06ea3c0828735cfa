"""A patient's manifest: which resource types and codes the chart holds, how many, over which dates.

It is the map a planner reads before retrieving anything: enums of the types and codes that
really exist for this patient, so even a small model can only ask for things that are there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from wardround.fhir.bounded import ReadState
from wardround.fhir.fields import primary_concept, resource_date
from wardround.fhir.records import RECORD_TYPES

if TYPE_CHECKING:
    from wardround.fhir.client import FhirClient

__all__ = ["CodeSummary", "Manifest", "Tally", "TypeSummary", "build_manifest"]

# Resources $everything returns because the chart points at them, not chart content.
NON_CHART_TYPES = frozenset(
    {"Practitioner", "PractitionerRole", "Organization", "Location", "Provenance", "Medication"}
)
# Chart types whose codes say nothing clinical (billing, cover, demographics).
UNCODED_TYPES = frozenset({"Patient", "Claim", "ExplanationOfBenefit", "Coverage", "CareTeam"})

# Short names for the code systems a chart usually uses, for the rendered text only.
SYSTEM_NAMES = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/ndc": "NDC",
}


class TypeSummary(BaseModel):
    """How many records of one type the chart holds, and their date range (YYYY-MM-DD)."""

    count: int
    first: str | None = None
    last: str | None = None


class CodeSummary(BaseModel):
    """One code seen on a type's main element (Observation.code, Condition.code, ...)."""

    resource_type: str
    system: str | None = None
    code: str | None = None
    display: str
    count: int
    first: str | None = None
    last: str | None = None
    # For a component's code (systolic pressure inside a blood pressure panel): the token of
    # the record's own code, which is what a search can find.
    component_of: str | None = None

    @property
    def token(self) -> str | None:
        """The FHIR token search value, `system|code` (or just `code`), for `fetch_records`."""
        if not self.code:
            return None
        return f"{self.system}|{self.code}" if self.system else self.code


def _widen(first: str | None, last: str | None, date: str | None) -> tuple[str | None, str | None]:
    if not date:
        return first, last
    return (date if first is None or date < first else first,
            date if last is None or date > last else last)  # fmt: skip


def _span(first: str | None, last: str | None) -> str:
    if not first:
        return ""
    return f" {first}" if first == last else f" {first}..{last}"


class Manifest(BaseModel):
    """Resource types (with counts, date ranges) and codes of one patient's chart.

    `types` is keyed by resource type; `codes` is sorted by type, then most frequent first.
    """

    patient_id: str | None = None
    types: dict[str, TypeSummary] = Field(default_factory=dict)
    codes: list[CodeSummary] = Field(default_factory=list)
    # Types the server cannot search by patient, so no tool can fetch them: type -> why.
    left_out: dict[str, str] = Field(default_factory=dict)
    # Set when the chart was not read to the end (a read bound was reached): why. The counts
    # are then lower bounds.
    partial: str | None = None

    @classmethod
    def from_resources(
        cls, resources: Iterable[dict[str, Any]], *, patient_id: str | None = None
    ) -> Manifest:
        """Summarise resources (a search result or `$everything`); references are not followed."""
        tally = Tally()
        tally.add(resources)
        return tally.manifest(patient_id)

    def codes_for(self, resource_type: str) -> list[CodeSummary]:
        """The codes of one type, most frequent first."""
        return [c for c in self.codes if c.resource_type == resource_type]

    def render(
        self, *, max_codes_per_type: int | None = 25, types: Iterable[str] | None = None
    ) -> str:
        """Compact text: one line per type, then its codes as `[system code] display xN first..last`.

        `types` limits the listing to those resource types (the header still counts all).
        """
        total = sum(t.count for t in self.types.values())
        head = f"Patient/{self.patient_id} chart" if self.patient_id else "Chart"
        lines = [f"{head}: {total} records"]
        wanted = set(types) if types is not None else None
        for rtype, summary in self.types.items():
            if wanted is not None and rtype not in wanted:
                continue
            lines.append(f"{rtype} x{summary.count}{_span(summary.first, summary.last)}")
            codes = self.codes_for(rtype)
            codes = [c for c in codes if c.component_of is None]  # searches can't find these
            shown = codes if max_codes_per_type is None else codes[:max_codes_per_type]
            for c in shown:
                label = f"{SYSTEM_NAMES.get(c.system or '', c.system or '')} {c.code}".strip()
                label = f"[{label}] " if c.code else ""
                display = c.display if len(c.display) <= 100 else c.display[:99] + "…"
                lines.append(f"  {label}{display} x{c.count}{_span(c.first, c.last)}")
            hidden = len(codes) - len(shown)
            if hidden:
                lines.append(f"  ... {hidden} more code{'s' if hidden > 1 else ''}")
        if self.partial:
            lines.append(f"Not all records were read ({self.partial}): counts are lower bounds")
        left_out = sorted(t for t in self.left_out if wanted is None or t in wanted)
        if left_out:
            lines.append(
                f"Left out: {', '.join(left_out)} (this FHIR server cannot search them by "
                "patient, so they cannot be fetched for this chart alone)"
            )
        return "\n".join(lines)


class Tally:
    """A manifest summed up page by page, so a whole chart never has to be in memory."""

    def __init__(self) -> None:
        self.types: dict[str, TypeSummary] = {}
        self.codes: dict[tuple[str, str | None, str | None, str], CodeSummary] = {}

    def add(self, resources: Iterable[dict[str, Any]]) -> None:
        for resource in resources:
            rtype = resource.get("resourceType")
            if not rtype or rtype in NON_CHART_TYPES:
                continue
            date = None if rtype == "Patient" else resource_date(resource)
            summary = self.types.setdefault(rtype, TypeSummary(count=0))
            summary.count += 1
            summary.first, summary.last = _widen(summary.first, summary.last, date)
            if rtype in UNCODED_TYPES:
                continue
            key_display = _first_coding(primary_concept(resource))
            if key_display is None:
                continue
            system, code, display = key_display
            key = (rtype, system, code, "" if code else display)
            entry = self.codes.get(key)
            if entry is None:
                entry = self.codes[key] = CodeSummary(
                    resource_type=rtype, system=system, code=code, display=display, count=0
                )
            entry.count += 1
            entry.first, entry.last = _widen(entry.first, entry.last, date)
            if rtype == "Observation":
                _add_components(self.codes, resource, entry.token, date)

    def manifest(self, patient_id: str | None = None) -> Manifest:
        ordered = sorted(self.codes.values(), key=lambda c: (c.resource_type, -c.count, c.display))
        return Manifest(
            patient_id=patient_id, types=dict(sorted(self.types.items())), codes=ordered
        )


def _add_components(
    codes: dict[tuple[str, str | None, str | None, str], CodeSummary],
    resource: dict[str, Any],
    parent: str | None,
    date: str | None,
) -> None:
    """Count each component's code (numeric ones) under the record's own code."""
    for comp in resource.get("component") or []:
        found = _first_coding(comp.get("code")) if isinstance(comp, dict) else None
        if found is None or not found[1] or parent is None or "valueQuantity" not in comp:
            continue
        system, code, display = found
        key = ("Observation", system, code, f"in {parent}")
        entry = codes.setdefault(
            key,
            CodeSummary(
                resource_type="Observation", system=system, code=code, display=display,
                count=0, component_of=parent,
            ),
        )  # fmt: skip
        entry.count += 1
        entry.first, entry.last = _widen(entry.first, entry.last, date)


def _first_coding(concept: dict[str, Any] | None) -> tuple[str | None, str | None, str] | None:
    """(system, code, display) of a concept's first coding, or (None, None, text)."""
    if not concept:
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            display = coding.get("display") or concept.get("text") or coding["code"]
            return coding.get("system"), str(coding["code"]), str(display)
    if concept.get("text"):
        return None, None, str(concept["text"])
    return None


async def build_manifest(client: FhirClient, patient_id: str) -> Manifest:
    """Read the patient's whole chart (`$everything`, or paged per-type searches) page by
    page and summarise it; only one page is held at a time.

    Record types the server cannot search by patient are left out (`Manifest.left_out` says
    why): a planner that picked one could only get every patient's records back. A chart
    read only in part (a read bound reached) says so in `Manifest.partial`."""
    tally, state = Tally(), ReadState()
    pages = client.iter_everything(patient_id, fallback_types=RECORD_TYPES, state=state)
    async for page in pages:
        tally.add(page)
    seen = set(tally.types) - NON_CHART_TYPES - {"Patient"}
    left_out = await client.unsearchable(sorted(seen | set(RECORD_TYPES)))
    for rtype in left_out:
        tally.types.pop(rtype, None)
    tally.codes = {k: c for k, c in tally.codes.items() if c.resource_type not in left_out}
    manifest = tally.manifest(patient_id)
    manifest.left_out = left_out
    manifest.partial = state.why if state.truncated else None
    return manifest
