"""Findings as CDS Hooks cards: the decision in the summary, the records and the guideline
passage cited in the detail (and, machine-readably, in the card's extension), a link that
opens the copilot on the same patient."""

from __future__ import annotations

from dataclasses import dataclass

from wardround.server.cds_hooks.findings import Finding
from wardround.server.cds_hooks.models import Card, Coding, Link, Source
from wardround.server.cds_hooks.passages import PassageFinder
from wardround.tools.guidelines.ingest import Passage

TOPICS = "urn:wardround:cds-rule"
CITATIONS = "org.wardround.citations"  # the extension holding what a card cites
EXCERPT_CHARS = 400
OVERRIDE_REASONS = [
    Coding(
        system="urn:wardround:cds-override",
        code="not-applicable",
        display="Not applicable to this patient",
    ),
    Coding(
        system="urn:wardround:cds-override", code="already-addressed", display="Already addressed"
    ),
    Coding(
        system="urn:wardround:cds-override", code="clinical-judgement", display="Clinical judgement"
    ),
]


@dataclass(frozen=True)
class CopilotLink:
    """Where the copilot page is, and whether the EHR should launch it as a SMART app."""

    base_url: str
    smart: bool = False

    def for_patient(self, patient_id: str) -> Link:
        if self.smart:  # the EHR adds iss and launch; the launch names the patient
            return Link(
                label="Open in the wardround copilot",
                url=f"{self.base_url}/smart/launch",
                type="smart",
            )
        return Link(
            label="Open in the wardround copilot",
            url=f"{self.base_url}/?patient={patient_id}",
            type="absolute",
        )


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _detail(finding: Finding, passage: Passage | None) -> str:
    lines = [finding.detail, "", "**Records:** " + ", ".join(f"`{r}`" for r in finding.records)]
    if passage is not None:
        lines += ["", f"**Guideline:** {passage.title}, {passage.section} (`{passage.ref}`)",
                  "", "> " + _excerpt(passage.text)]  # fmt: skip
        if passage.citation:
            lines += ["", passage.citation]
    return "\n".join(lines)


def to_card(finding: Finding, passages: PassageFinder, patient_id: str, link: CopilotLink) -> Card:
    passage = None
    if finding.guideline is not None:
        passage = passages.find(finding.guideline.query, finding.guideline.source)
    label = passage.title if passage is not None else "wardround chart checks"
    cited = {"records": finding.records, **({"guideline": passage.ref} if passage else {})}
    return Card(
        summary=finding.summary,
        detail=_detail(finding, passage),
        indicator=finding.indicator,
        source=Source(label=label, topic=Coding(system=TOPICS, code=finding.rule)),
        suggestions=finding.suggestions or None,
        selectionBehavior="at-most-one" if finding.suggestions else None,
        overrideReasons=OVERRIDE_REASONS,
        links=[link.for_patient(patient_id)],
        extension={CITATIONS: cited},
    )
