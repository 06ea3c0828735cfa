"""Answers about records rather than values: ever or never, the first one, what happened when.

"No" is an answer only when the whole type was read: a search cut short by a limit, or a
count below the chart's own, proves no absence, so it answers "Not known" instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wardround.chart.dates import Window
from wardround.chart.kinds import Computed
from wardround.chart.retrieve import name_of, status_of
from wardround.chart.value_kinds import where
from wardround.fhir.fields import concept_text, reference_of, resource_date

# How an answer names each type's records (plural).
TYPE_WORDS = {
    "Condition": "conditions",
    "Procedure": "procedures",
    "Immunization": "immunizations",
    "MedicationRequest": "medications",
    "Encounter": "visits",
}
EVER_TYPES = ("Condition", "Procedure", "Immunization", "MedicationRequest")
# What happened on a day: these types, in this order.
EVENT_TYPES = ("Encounter", "Condition", "Procedure", "Immunization")
_NOT_REAL = {"refuted", "entered-in-error", "not-done"}
MAX_CITED = 5


def is_real(resource: dict[str, Any]) -> bool:
    """Not refuted, entered in error, or a vaccine not given."""
    return status_of(resource, "verificationStatus") not in _NOT_REAL and (
        status_of(resource, "status") not in _NOT_REAL
    )


def in_window(records: Sequence[dict[str, Any]], window: Window | None) -> list[dict[str, Any]]:
    if window is None:
        return list(records)
    start, end = window.start.isoformat(), window.end.isoformat()
    return [r for r in records if start <= (resource_date(r) or "") <= end]


def _oldest_first(records: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(((d, r) for r in records if (d := resource_date(r))), key=lambda p: p[0])


def first_record(records: Sequence[dict[str, Any]], what: str, resource_type: str) -> Computed:
    dated = _oldest_first([r for r in records if is_real(r)])
    if not dated:
        return Computed(f"No dated {what} record is recorded.")
    day, oldest = dated[0]
    ref = [reference_of(oldest)]
    if resource_type == "Condition":
        return Computed(f"First diagnosed on {day} ({what}).", ref)
    if resource_type == "MedicationRequest":
        return Computed(f"Started on {day} (the first prescription of {what}).", ref)
    return Computed(f"First recorded on {day} ({what}).", ref)


def yes(records: Sequence[dict[str, Any]], what: str, window: Window | None) -> Computed | None:
    """Yes, citing the first and last matching records; None when none is real and dated
    in the window."""
    dated = _oldest_first(in_window([r for r in records if is_real(r)], window))
    if not dated:
        return None
    days = list(dict.fromkeys(d for d, _ in dated))
    shown = days[0] if len(days) == 1 else f"first {days[0]}, latest {days[-1]}"
    picks = dated if len(dated) <= MAX_CITED else [dated[0], dated[-1]]
    name = what or name_of(dated[0][1])
    return Computed(
        f"Yes: {name}{where(window)} ({shown}; {len(dated)} record{'s' * (len(dated) > 1)}).",
        list(dict.fromkeys(reference_of(r) for _, r in picks)),
    )


def no(
    types: Sequence[str], read: int, complete: bool, what: str, window: Window | None
) -> Computed:
    """No, when every record of `types` (or of `what`) was read; else "Not known"."""
    kinds_read = " or ".join(TYPE_WORDS.get(t, t) for t in types)
    if not complete:
        return Computed(
            f"Not known: the chart's {kinds_read} could not all be read, so an absence "
            "cannot be confirmed."
        )
    if what:
        scope = f"all {read} of its records were read" if read else f"all {kinds_read} read"
        return Computed(f"No: no {what} is recorded{where(window)} ({scope}).")
    return Computed(
        f"No: nothing of the kind is recorded{where(window)} (all {read} of the patient's "
        f"{kinds_read} records were read)."
    )


# Words that say which type an ever-question is about, when no record was chosen.
_TYPE_HINTS = {
    "Condition": ("diagnos", "condition", "disease", "disorder", "problem", "history of"),
    "Procedure": ("procedure", "surgery", "operation", "underwent", "performed", "ectomy",
                  "scopy", "otomy", "plasty"),
    "Immunization": ("vaccin", "immuniz", "immunis", "shot", "jab", "booster"),
    "MedicationRequest": ("medication", "medicine", "meds", "drug", "prescri", "taking", "taken",
                          "been on", "tablet", "pill"),
    # Not an ever-type: named only for what happened in a year (types_named(..., among=...)).
    "Encounter": ("visit", "encounter", "appointment", "seen", "admi", "came in", "reason"),
    "AllergyIntolerance": ("allerg", "intoleran"),
    "DiagnosticReport": ("report",),
    "DocumentReference": ("note", "document", "letter", "narrative"),
}  # fmt: skip


def types_named(question: str, among: tuple[str, ...] = EVER_TYPES) -> tuple[str, ...]:
    """The types of `among` a question's words point at; all of them when none does."""
    return tuple(t for t in among if names_type(question, t)) or among


def names_type(question: str, resource_type: str) -> bool:
    """The question's words point at this record type ("diagnoses" at Condition)."""
    return any(h in question.lower() for h in _TYPE_HINTS.get(resource_type, ()))


def counts_records(question: str) -> bool:
    """Whether a count question counts records of a type ("how many visits") rather than a
    test's results ("how many potassium results"): it names a record type."""
    return any(names_type(question, t) for t in _TYPE_HINTS)


def named_type(resource_type: str, question: str) -> bool:
    """Whether a record of this type can be what the question asks about: the question names
    no record type, or names this one ("diagnosed with" is not about a procedure)."""
    if resource_type not in EVER_TYPES:
        return True
    named = types_named(question)
    return named == EVER_TYPES or resource_type in named


def _reasons(encounter: dict[str, Any]) -> list[str]:
    found = [concept_text(c) for c in encounter.get("reasonCode") or []]
    found += [
        str(r.get("display")) for r in encounter.get("reasonReference") or [] if r.get("display")
    ]
    return [r for r in found if r]


def _event_text(resource: dict[str, Any]) -> str:
    if resource.get("resourceType") != "Encounter":
        return name_of(resource)
    kind = concept_text((resource.get("type") or [None])[0]) or "visit"
    reasons = _reasons(resource)
    return f"{kind} (reason: {', '.join(reasons)})" if reasons else kind


def happened_on(by_type: dict[str, list[dict[str, Any]]], window: Window) -> Computed:
    """Each type's records on the day (or in the year), named, with visit reasons."""
    parts, cited = [], []
    order = {t: n for n, t in enumerate(EVENT_TYPES)}
    for rtype in sorted(by_type, key=lambda t: order.get(t, len(order))):
        found = _oldest_first([r for r in in_window(by_type.get(rtype, []), window) if is_real(r)])
        if not found:
            continue
        names = list(dict.fromkeys(_dated(d, r, window) for d, r in found))
        parts.append(f"{TYPE_WORDS.get(rtype, rtype)}: {'; '.join(names)}")
        cited += [reference_of(r) for _, r in found]
    span = where(window).strip()
    if not parts:
        listed = ", ".join(TYPE_WORDS[t] for t in by_type if t in TYPE_WORDS)
        return Computed(f"Nothing is recorded {span} (no {listed}).")
    return Computed(f"{span[0].upper()}{span[1:]}: {' | '.join(parts)}.", cited)


def _dated(day: str, resource: dict[str, Any], window: Window) -> str:
    text = _event_text(resource)
    return f"{text} ({day})" if window.year else text
