"""What a rule found, before it becomes a card: the decision, the records behind it, the
guideline question that finds the passage it rests on, and the FHIR actions it suggests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from wardround.server.cds_hooks.chart import LOINC
from wardround.server.cds_hooks.models import Action, Suggestion

Indicator = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Guideline:
    """Where a rule's passage is: the corpus source and the question asked of it."""

    source: str | None
    query: str


@dataclass
class Finding:
    rule: str  # a stable name ("hba1c-overdue"), the card's topic code
    summary: str
    indicator: Indicator
    detail: str
    records: list[str]
    guideline: Guideline | None = None
    suggestions: list[Suggestion] = field(default_factory=list)


def draft_test(patient_id: str, loinc: str, display: str, reason: str) -> Suggestion:
    """Suggest a draft lab order: a ServiceRequest with status draft and intent proposal, so
    accepting it adds a proposal the clinician still signs (nothing is ordered by the card)."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [{"text": reason}],
    }
    return Suggestion(
        label=f"Propose {display}",
        isRecommended=True,
        actions=[
            Action(type="create", description=f"Add a draft order: {display}", resource=resource)
        ],
    )


def remove_draft(reference: str, name: str) -> Suggestion:
    """Suggest taking a draft order off the order list (a delete of the draft itself)."""
    return Suggestion(
        label=f"Remove {name} from this order",
        isRecommended=True,
        actions=[
            Action(type="delete", description=f"Remove the draft {name}", resourceId=[reference])
        ],
    )
