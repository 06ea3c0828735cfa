"""The CDS Hooks 2.0 wire format as pydantic models (https://cds-hooks.hl7.org/2.0/).

Requests keep unknown fields (`extension`, hook-specific context) so a newer client is not
refused; responses are dumped without unset fields, as the specification forbids null and
empty JSON values (`dump` below).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Action",
    "Card",
    "CdsResponse",
    "CdsService",
    "Coding",
    "Discovery",
    "Feedback",
    "FeedbackRequest",
    "FhirAuthorization",
    "HookRequest",
    "Link",
    "Source",
    "Suggestion",
    "dump",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Coding(BaseModel):
    system: str | None = None
    code: str
    display: str | None = None


class CdsService(BaseModel):
    """One entry of the discovery response."""

    hook: str
    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    title: str | None = None
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class Discovery(BaseModel):
    services: list[CdsService]


class FhirAuthorization(_Open):
    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer", "bearer"]
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


class HookRequest(_Open):
    hook: str
    hookInstance: str = Field(min_length=1)
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _server_with_token(self) -> HookRequest:
        # cds-r-1: if fhirAuthorization details are provided, a fhirServer SHALL be specified.
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirAuthorization was sent without a fhirServer")
        return self

    @property
    def patient_id(self) -> str:
        return str(self.context.get("patientId") or "")

    @property
    def user(self) -> str | None:
        return self.context.get("userId")


class Source(BaseModel):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(BaseModel):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: list[str] | None = None


class Suggestion(BaseModel):
    label: str
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(BaseModel):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(BaseModel):
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    summary: str = Field(max_length=140)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None  # the spec's extension point (reverse-DNS keys)

    @model_validator(mode="after")
    def _behaviour_with_suggestions(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("a card with suggestions needs a selectionBehavior")
        return self


class CdsResponse(BaseModel):
    cards: list[Card]
    systemActions: list[Action] | None = None


class AcceptedSuggestion(BaseModel):
    id: str


class OverrideReason(BaseModel):
    reason: Coding | None = None
    userComment: str | None = None


class Feedback(_Open):
    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str

    @model_validator(mode="after")
    def _accepted_names_suggestions(self) -> Feedback:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("an accepted outcome needs acceptedSuggestions")
        return self


class FeedbackRequest(BaseModel):
    feedback: list[Feedback] = Field(min_length=1)


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON for the wire: unset optional fields left out (the spec forbids null and empty)."""
    return model.model_dump(mode="json", exclude_none=True)
