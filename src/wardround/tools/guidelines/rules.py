"""The starter guidelines' decision rules as code: what a card decides, from FHIR JSON.

Each rule names the corpus passage it rests on (`Rule.passages`), the decisions it can reach
and the results it reads; its function takes the chart's records as plain lists and returns a
`Decision` (None where the rule does not apply to the patient or the order). The CDS Hooks
service turns a decision into a card (`server/cds_hooks/overdue.py`, `orders.py`); the `cds`
eval task scores a model's card against it (`evals/tasks/cds.py`).

- HbA1c in diabetes: at least every 6 months, every 3 months when the last was at or above
  the 7.0% goal (hba1c-targets, "Monitoring interval").
- UACR in diabetes: at least once a year (diabetes-complication-screening, "Kidney").
- Lipids on a statin: a panel within the last year (statin-intensity-and-lipid-monitoring,
  "Monitoring": every 3 to 12 months once on treatment).
- A drafted potassium-raising drug (ACE inhibitor, ARB, MRA, ...) is held when the latest
  potassium is 5.5 mmol/L or more (hyperkalaemia, "Severity" and "Removing potassium").
- Drafted metformin: stop below eGFR 30, reduce the dose at 30 to 45 (diabetes-
  pharmacotherapy, "Kidney function and metformin").
- A drafted statin wants a lipid panel to start from, within the last year (statin-intensity-
  and-lipid-monitoring, "Monitoring").
- A drafted HbA1c within 90 days of the last is a repeat (hba1c-targets, "Monitoring
  interval": HbA1c reflects about 3 months).
- Statin indication for primary prevention from age, LDL and diabetes (statin-indications,
  "Primary prevention groups").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from wardround.tools.guidelines.chart import (
    Resource,
    Result,
    codes,
    is_active,
    latest,
    medicine_name,
    mentions,
    parse_date,
    ref,
)
from wardround.tools.guidelines.ingest import guideline_ref

# LOINC codes each rule reads.
POTASSIUM = ("6298-4", "2823-3")
HBA1C = ("4548-4", "17856-6", "4549-2")
EGFR = ("33914-3", "62238-1", "48642-3", "48643-1", "98979-8", "69405-9")
UACR = ("9318-7", "14959-1", "32294-1", "14958-3")
LIPIDS = ("18262-6", "13457-7", "2089-1", "57698-3", "24331-1")
LDL = ("18262-6", "13457-7", "2089-1")

# Diabetes mellitus by name, not insipidus or gestational ("prediabetes" has no word break).
DIABETES = re.compile(r"^(?!.*(insipidus|gestational)).*\bdiabetes\b", re.I)
DIABETES_CODES = {"44054006", "46635009", "73211009", "E11", "E10", "E11.9", "E10.9"}
STATIN = re.compile(r"\b(atorva|rosuva|simva|prava|lova|fluva|pitava)statin\b", re.I)
RAISES_POTASSIUM = re.compile(
    r"\b(\w+pril|\w+sartan|spironolactone|eplerenone|amiloride|triamterene|trimethoprim|"
    r"potassium chloride|potassium citrate)\b",
    re.I,
)
METFORMIN = re.compile(r"\bmetformin\b", re.I)
# Clinical ASCVD (statin-indications, "Secondary prevention"): the primary-prevention rule
# does not apply.
ASCVD = re.compile(
    r"myocardial infarction|angina|coronary|stroke|transient ischa?emic|\bTIA\b|"
    r"peripheral arter|revasculari[sz]ation",
    re.I,
)

HBA1C_GOAL = 7.0
HBA1C_DAYS_ABOVE_GOAL = 92  # quarterly when not meeting goals
HBA1C_DAYS_AT_GOAL = 183  # twice a year when meeting goals
HBA1C_REPEAT_DAYS = 90  # HbA1c reflects about 3 months of glycaemia
YEAR_DAYS = 365
POTASSIUM_HOLD = 5.5  # mmol/L: mild hyperkalaemia starts here
EGFR_STOP_METFORMIN = 30.0
EGFR_REDUCE_METFORMIN = 45.0
LDL_HIGH = 190.0  # mg/dL
LDL_RISK_LOW = 70.0  # mg/dL
MG_DL_PER_MMOL_L = 38.67  # LDL cholesterol


@dataclass(frozen=True)
class Section:
    """A passage of the starter corpus: its file (`source`) and section heading."""

    source: str
    section: str

    @property
    def ref(self) -> str:
        return guideline_ref(self.source, self.section)


@dataclass(frozen=True)
class Rule:
    name: str
    hook: str  # "patient-view" (the chart alone) or "order-sign" (a draft order too)
    decisions: tuple[str, ...]
    passages: tuple[Section, ...]  # what it rests on; a card cites at least one
    question: str  # what the card decides, in words (an order rule: "{order}" is filled in)
    observations: tuple[str, ...]  # the results it reads (LOINC)


@dataclass
class Decision:
    rule: str
    decision: str
    # The records whose values decide it (a card cites at least one), and all it rests on.
    evidence: list[str]
    records: list[str]
    last: Result | None = None
    facts: dict[str, Any] = field(default_factory=dict)


HBA1C_INTERVAL = Rule(
    "hba1c-interval", "patient-view", ("overdue", "not overdue"),
    (Section("hba1c-targets", "Monitoring interval"), Section("hba1c-targets", "Glycaemic targets")),
    "Is this patient's HbA1c monitoring overdue?", HBA1C,
)  # fmt: skip
UACR_YEARLY = Rule(
    "uacr-yearly", "patient-view", ("overdue", "not overdue"),
    (Section("diabetes-complication-screening", "Kidney"),),
    "Is this patient's urine albumin-to-creatinine ratio (UACR) overdue?", UACR,
)  # fmt: skip
LIPIDS_ON_STATIN = Rule(
    "lipids-on-statin", "patient-view", ("overdue", "not overdue"),
    (Section("statin-intensity-and-lipid-monitoring", "Monitoring"),),
    "The patient is on a statin. Is a lipid panel overdue (none in the last 12 months)?",
    LIPIDS,
)  # fmt: skip
POTASSIUM_ORDER = Rule(
    "order-potassium", "order-sign", ("hold", "continue"),
    (Section("hyperkalaemia", "Removing potassium"), Section("hyperkalaemia", "Severity")),
    "A draft order for {order} is about to be signed. This drug can raise potassium. Should "
    "the order be held because of hyperkalaemia, or continued?",
    POTASSIUM,
)  # fmt: skip
METFORMIN_ORDER = Rule(
    "order-metformin-egfr", "order-sign", ("stop", "reduce dose", "continue"),
    (Section("diabetes-pharmacotherapy", "Kidney function and metformin"),),
    "A draft order for {order} is about to be signed. Given the latest eGFR, should metformin "
    "be stopped, given at a reduced dose, or continued?",
    EGFR,
)  # fmt: skip
STATIN_ORDER = Rule(
    "order-statin-lipids", "order-sign", ("check lipids first", "proceed"),
    (Section("statin-intensity-and-lipid-monitoring", "Monitoring"),),
    "A draft order for {order} is about to be signed. Is there a lipid panel from the last 12 "
    "months to start from (proceed), or should lipids be checked first?",
    LIPIDS,
)  # fmt: skip
HBA1C_REPEAT_ORDER = Rule(
    "order-hba1c-repeat", "order-sign", ("cancel", "proceed"),
    (Section("hba1c-targets", "Monitoring interval"),),
    "A draft order for {order} is about to be signed. Is it a repeat of an HbA1c measured less "
    "than 90 days ago (cancel), or should it proceed?",
    HBA1C,
)  # fmt: skip
STATIN_INDICATION = Rule(
    "statin-indication", "patient-view", ("indicated", "estimate risk", "not indicated"),
    (Section("statin-indications", "Primary prevention groups"),),
    "The patient has no ASCVD and takes no statin. By the guideline's primary prevention "
    "groups, is a statin indicated outright, should 10-year ASCVD risk be estimated first, or "
    "is no statin group met?",
    LDL,
)  # fmt: skip

RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        HBA1C_INTERVAL, UACR_YEARLY, LIPIDS_ON_STATIN, POTASSIUM_ORDER, METFORMIN_ORDER,
        STATIN_ORDER, HBA1C_REPEAT_ORDER, STATIN_INDICATION,
    )
}  # fmt: skip


# ---------------------------------------------------------------- what the chart says


def diabetes(conditions: Sequence[Resource]) -> list[str]:
    """Refs of the active diabetes Conditions."""
    found = []
    for condition in conditions:
        coded = codes(condition.get("code"))
        if is_active(condition) and (
            coded & DIABETES_CODES or mentions(condition, DIABETES, "code")
        ):
            found.append(ref(condition))
    return found


def statins(medications: Sequence[Resource]) -> list[str]:
    """Refs of the active statin MedicationRequests."""
    return [
        ref(m)
        for m in medications
        if m.get("status") == "active" and STATIN.search(medicine_name(m))
    ]


def ascvd(conditions: Sequence[Resource]) -> list[str]:
    return [ref(c) for c in conditions if is_active(c) and mentions(c, ASCVD, "code")]


def days_since(last: Result | None, today: date) -> int | None:
    return (today - last.on).days if last and last.on else None


def age_on(patient: Resource | None, today: date) -> int | None:
    born = parse_date(str((patient or {}).get("birthDate") or ""))
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def ldl_mg_dl(result: Result) -> float:
    unit = result.unit.lower().replace(" ", "")
    return result.value * MG_DL_PER_MMOL_L if unit.startswith("mmol") else result.value


def _evidence(last: Result | None, otherwise: list[str]) -> list[str]:
    return [last.ref] if last is not None else list(otherwise)


# ---------------------------------------------------------------- patient-view rules


def hba1c_interval(
    conditions: Sequence[Resource], observations: Sequence[Resource], today: date
) -> Decision | None:
    found = diabetes(conditions)
    if not found:
        return None
    last = latest(observations, HBA1C)
    above_goal = last is not None and last.value >= HBA1C_GOAL
    interval = HBA1C_DAYS_ABOVE_GOAL if above_goal else HBA1C_DAYS_AT_GOAL
    days = days_since(last, today)
    overdue = days is None or days > interval
    return Decision(
        HBA1C_INTERVAL.name, "overdue" if overdue else "not overdue",
        _evidence(last, found), [*found, *([last.ref] if last else [])], last,
        {"days": days, "interval": interval, "above_goal": above_goal},
    )  # fmt: skip


def uacr_yearly(
    conditions: Sequence[Resource], observations: Sequence[Resource], today: date
) -> Decision | None:
    found = diabetes(conditions)
    if not found:
        return None
    last = latest(observations, UACR)
    days = days_since(last, today)
    overdue = days is None or days > YEAR_DAYS
    return Decision(
        UACR_YEARLY.name, "overdue" if overdue else "not overdue",
        _evidence(last, found), [*found, *([last.ref] if last else [])], last, {"days": days},
    )  # fmt: skip


def lipids_on_statin(
    medications: Sequence[Resource], observations: Sequence[Resource], today: date
) -> Decision | None:
    on_statin = statins(medications)
    if not on_statin:
        return None
    last = latest(observations, LIPIDS)
    days = days_since(last, today)
    overdue = days is None or days > YEAR_DAYS
    return Decision(
        LIPIDS_ON_STATIN.name, "overdue" if overdue else "not overdue",
        _evidence(last, on_statin), [*on_statin, *([last.ref] if last else [])], last,
        {"days": days},
    )  # fmt: skip


def statin_indication(
    patient: Resource | None,
    conditions: Sequence[Resource],
    medications: Sequence[Resource],
    observations: Sequence[Resource],
    today: date,
) -> Decision | None:
    """Primary prevention only: None with ASCVD, on a statin, without an age, or without an
    LDL where diabetes alone does not decide."""
    age = age_on(patient, today)
    if age is None or statins(medications) or ascvd(conditions):
        return None
    found = diabetes(conditions)
    last = latest(observations, LDL)
    ldl = ldl_mg_dl(last) if last is not None else None
    facts = {"age": age, "ldl_mg_dl": ldl, "diabetes": bool(found)}
    records = [*([ref(patient)] if patient else []), *found, *([last.ref] if last else [])]
    if last is not None and ldl is not None and 20 <= age <= 75 and ldl >= LDL_HIGH:
        return Decision(STATIN_INDICATION.name, "indicated", [last.ref], records, last, facts)
    if found and 40 <= age <= 75:
        return Decision(STATIN_INDICATION.name, "indicated", found, records, last, facts)
    if last is None or ldl is None:
        return None
    if 40 <= age <= 75 and LDL_RISK_LOW <= ldl < LDL_HIGH:
        return Decision(STATIN_INDICATION.name, "estimate risk", [last.ref], records, last, facts)
    return Decision(STATIN_INDICATION.name, "not indicated", [last.ref], records, last, facts)


# ---------------------------------------------------------------- order-sign rules


def potassium_order(order: Resource, observations: Sequence[Resource]) -> Decision | None:
    if not RAISES_POTASSIUM.search(medicine_name(order)):
        return None
    last = latest(observations, POTASSIUM)
    hold = last is not None and last.value >= POTASSIUM_HOLD
    return Decision(
        POTASSIUM_ORDER.name, "hold" if hold else "continue",
        _evidence(last, [ref(order)]), [ref(order), *([last.ref] if last else [])], last,
    )  # fmt: skip


def metformin_order(order: Resource, observations: Sequence[Resource]) -> Decision | None:
    """Stop below eGFR 30, reduce at 30 to 45; with no eGFR on record, nothing to act on."""
    if not METFORMIN.search(medicine_name(order)):
        return None
    last = latest(observations, EGFR)
    decision = "continue"
    if last is not None and last.value < EGFR_STOP_METFORMIN:
        decision = "stop"
    elif last is not None and last.value < EGFR_REDUCE_METFORMIN:
        decision = "reduce dose"
    return Decision(
        METFORMIN_ORDER.name, decision, _evidence(last, [ref(order)]),
        [ref(order), *([last.ref] if last else [])], last,
    )  # fmt: skip


def statin_order(order: Resource, observations: Sequence[Resource], today: date) -> Decision | None:
    if not STATIN.search(medicine_name(order)):
        return None
    last = latest(observations, LIPIDS)
    days = days_since(last, today)
    recent = days is not None and days <= YEAR_DAYS
    return Decision(
        STATIN_ORDER.name, "proceed" if recent else "check lipids first",
        _evidence(last, [ref(order)]), [ref(order), *([last.ref] if last else [])], last,
        {"days": days},
    )  # fmt: skip


def hba1c_repeat_order(
    order: Resource, observations: Sequence[Resource], today: date
) -> Decision | None:
    if not codes(order.get("code")) & set(HBA1C):
        return None
    last = latest(observations, HBA1C)
    days = days_since(last, today)
    repeat = days is not None and days < HBA1C_REPEAT_DAYS
    return Decision(
        HBA1C_REPEAT_ORDER.name, "cancel" if repeat else "proceed",
        _evidence(last, [ref(order)]), [ref(order), *([last.ref] if last else [])], last,
        {"days": days},
    )  # fmt: skip


def decide(
    rule: str,
    *,
    patient: Resource | None,
    conditions: Sequence[Resource],
    medications: Sequence[Resource],
    observations: Sequence[Resource],
    today: date,
    order: Resource | None = None,
) -> Decision | None:
    """The decision of the rule named `rule` on this chart (and draft order, for order rules)."""
    if rule == HBA1C_INTERVAL.name:
        return hba1c_interval(conditions, observations, today)
    if rule == UACR_YEARLY.name:
        return uacr_yearly(conditions, observations, today)
    if rule == LIPIDS_ON_STATIN.name:
        return lipids_on_statin(medications, observations, today)
    if rule == STATIN_INDICATION.name:
        return statin_indication(patient, conditions, medications, observations, today)
    if order is None:
        raise ValueError(f"rule {rule!r} checks a draft order; none given")
    if rule == POTASSIUM_ORDER.name:
        return potassium_order(order, observations)
    if rule == METFORMIN_ORDER.name:
        return metformin_order(order, observations)
    if rule == STATIN_ORDER.name:
        return statin_order(order, observations, today)
    if rule == HBA1C_REPEAT_ORDER.name:
        return hba1c_repeat_order(order, observations, today)
    raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
