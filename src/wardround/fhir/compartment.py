"""Which records belong to a patient: the R4 Patient compartment, checked where records enter.

A FHIR server is asked for one patient's records, but may answer with others': R4 servers
ignore search parameters they do not know (SEKMET 0.1.1 has no `patient` for CareTeam and
returns every patient's), and `_include` or `$everything` can bring in anything. So the
client checks every resource a patient-scoped read returns against the compartment
definition (http://hl7.org/fhir/R4/compartmentdefinition-patient.html) and drops the rest,
counting each drop and logging it on `wardround.fhir.compartment` (the audit log listens).

Two rules are stricter than the definition, on purpose:
- a Patient is only in its own compartment (the definition adds Patients that `link` to it:
  a linked chart is another chart, to be asked for by its own id);
- a record whose owner element (`subject`, `patient`, ...) names another Patient is that
  patient's, even if this patient is its performer or participant (an Observation *by* Ann
  *about* Bob is Bob's result).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "COMPARTMENT",
    "CompartmentGuard",
    "DroppedRecord",
    "Membership",
    "belongs_to",
    "owner_id",
    "patient_refs",
]

log = logging.getLogger(__name__)


class Membership(NamedTuple):
    """How a type joins the Patient compartment: `owner` is the element saying whose record
    it is (None where the definition has none, e.g. Appointment), `also` the other elements
    the definition lists (performers, participants, authors). Dotted paths enter lists."""

    owner: str | None
    also: tuple[str, ...] = ()


# The R4 (4.0.1) Patient CompartmentDefinition, each search parameter written as the element
# its expression reads (e.g. Condition's `patient` parameter is `Condition.subject`).
COMPARTMENT: dict[str, Membership] = {
    "Account": Membership("subject"),
    "AdverseEvent": Membership("subject"),
    "AllergyIntolerance": Membership("patient", ("recorder", "asserter")),
    "Appointment": Membership(None, ("participant.actor",)),
    "AppointmentResponse": Membership(None, ("actor",)),
    "AuditEvent": Membership(None, ("agent.who", "entity.what")),
    "Basic": Membership("subject", ("author",)),
    "BodyStructure": Membership("patient"),
    "CarePlan": Membership("subject", ("activity.detail.performer",)),
    "CareTeam": Membership("subject", ("participant.member",)),
    "ChargeItem": Membership("subject"),
    "Claim": Membership("patient", ("payee.party",)),
    "ClaimResponse": Membership("patient"),
    "ClinicalImpression": Membership("subject"),
    "Communication": Membership("subject", ("sender", "recipient")),
    "CommunicationRequest": Membership("subject", ("sender", "recipient", "requester")),
    "Composition": Membership("subject", ("author", "attester.party")),
    "Condition": Membership("subject", ("asserter",)),
    "Consent": Membership("patient"),
    "Coverage": Membership("beneficiary", ("policyHolder", "subscriber", "payor")),
    "CoverageEligibilityRequest": Membership("patient"),
    "CoverageEligibilityResponse": Membership("patient"),
    "DetectedIssue": Membership("patient"),
    "DeviceRequest": Membership("subject", ("performer",)),
    "DeviceUseStatement": Membership("subject"),
    "DiagnosticReport": Membership("subject"),
    "DocumentManifest": Membership("subject", ("author", "recipient")),
    "DocumentReference": Membership("subject", ("author",)),
    "Encounter": Membership("subject"),
    "EnrollmentRequest": Membership("candidate"),
    "EpisodeOfCare": Membership("patient"),
    "ExplanationOfBenefit": Membership("patient", ("payee.party",)),
    "FamilyMemberHistory": Membership("patient"),
    "Flag": Membership("subject"),
    "Goal": Membership("subject"),
    "Group": Membership(None, ("member.entity",)),
    "ImagingStudy": Membership("subject"),
    "Immunization": Membership("patient"),
    "ImmunizationEvaluation": Membership("patient"),
    "ImmunizationRecommendation": Membership("patient"),
    "Invoice": Membership("subject", ("recipient",)),
    "List": Membership("subject", ("source",)),
    "MeasureReport": Membership("subject"),
    "Media": Membership("subject"),
    "MedicationAdministration": Membership("subject", ("performer.actor",)),
    "MedicationDispense": Membership("subject", ("receiver",)),
    "MedicationRequest": Membership("subject"),
    "MedicationStatement": Membership("subject"),
    "MolecularSequence": Membership("patient"),
    "NutritionOrder": Membership("patient"),
    "Observation": Membership("subject", ("performer",)),
    "Person": Membership(None, ("link.target",)),
    "Procedure": Membership("subject", ("performer.actor",)),
    "Provenance": Membership(None, ("target",)),
    "QuestionnaireResponse": Membership("subject", ("author",)),
    "RelatedPerson": Membership("patient"),
    "RequestGroup": Membership("subject", ("action.participant",)),
    "ResearchSubject": Membership("individual"),
    "RiskAssessment": Membership("subject"),
    "Schedule": Membership(None, ("actor",)),
    "ServiceRequest": Membership("subject", ("performer",)),
    "Specimen": Membership("subject"),
    "SupplyDelivery": Membership("patient"),
    "SupplyRequest": Membership(None, ("deliverTo",)),
    "VisionPrescription": Membership("patient"),
}
# Elements that name a patient on types outside the compartment (Task.for): a shared record
# (Practitioner, Medication, Organization) names none and belongs to every chart; one that
# names another patient does not.
GENERIC_OWNERS = ("subject", "patient", "beneficiary", "for")


def _references(node: Any, path: str) -> Iterable[str]:
    """Every `reference` string at `path`, entering every list on the way."""
    head, _, rest = path.partition(".")
    items = node if isinstance(node, list) else [node]
    for item in items:
        value = item.get(head) if isinstance(item, dict) else None
        if value is None:
            continue
        if rest:
            yield from _references(value, rest)
            continue
        for ref in value if isinstance(value, list) else [value]:
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                yield ref["reference"]


def _patient_id(reference: str) -> str | None:
    """The id of a Patient reference (`Patient/x`, absolute, or versioned), else None."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return None


def patient_refs(resource: dict[str, Any], paths: Iterable[str]) -> list[str]:
    """Ids of the Patients that `resource` names at `paths`."""
    ids = (_patient_id(ref) for path in paths for ref in _references(resource, path))
    return [i for i in ids if i]


def owner_id(resource: dict[str, Any]) -> str | None:
    """The id of the Patient whose record this is (itself, for a Patient), or None."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return str(resource.get("id") or "") or None
    member = COMPARTMENT.get(str(rtype))
    paths = (member.owner,) if member and member.owner else GENERIC_OWNERS
    owners = patient_refs(resource, paths)
    return owners[0] if owners else None


def belongs_to(resource: dict[str, Any], patient_id: str) -> bool:
    """Whether `resource` is in Patient/`patient_id`'s compartment (see the module's rules).

    Types the compartment never holds (Practitioner, Medication, ...) belong to every chart
    unless they name another patient."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return resource.get("id") == patient_id
    member = COMPARTMENT.get(str(rtype))
    if member is None:
        return all(p == patient_id for p in patient_refs(resource, GENERIC_OWNERS))
    owners = patient_refs(resource, [member.owner] if member.owner else [])
    if owners:
        return all(p == patient_id for p in owners)
    return patient_id in patient_refs(resource, member.also)


@dataclass(frozen=True)
class DroppedRecord:
    """A record a server returned for one patient that is not theirs (ids only, no content)."""

    base_url: str
    patient_id: str
    resource_type: str
    resource_id: str
    via: str  # what asked: "search CareTeam", "$everything", "read"


DropHook = Callable[[DroppedRecord], None]


class CompartmentGuard:
    """Keeps one client's patient-scoped results in the patient's compartment.

    `dropped` counts every record dropped so far (callers report it); each drop is logged
    at WARNING on this module's logger with the record as `extra={"dropped_record": ...}`,
    and passed to every hook added with `on_drop`."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.dropped = 0
        self._hooks: list[DropHook] = []

    def on_drop(self, hook: DropHook) -> None:
        self._hooks.append(hook)

    def keep(
        self, resources: Iterable[dict[str, Any]], patient_id: str, via: str
    ) -> list[dict[str, Any]]:
        """The resources in the compartment; the others are reported and left out."""
        kept: list[dict[str, Any]] = []
        for resource in resources:
            if belongs_to(resource, patient_id):
                kept.append(resource)
            else:
                self.report(resource, patient_id, via)
        return kept

    def report(self, resource: dict[str, Any], patient_id: str, via: str) -> None:
        record = DroppedRecord(
            self.base_url,
            patient_id,
            str(resource.get("resourceType", "?")),
            str(resource.get("id", "?")),
            via,
        )
        self.dropped += 1
        log.warning(
            "dropped %s/%s from %s (%s): not in Patient/%s's compartment",
            record.resource_type, record.resource_id, record.base_url, via, patient_id,
            extra={"dropped_record": record},
        )  # fmt: skip
        for hook in self._hooks:
            hook(record)
