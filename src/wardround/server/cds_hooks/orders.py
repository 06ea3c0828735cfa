"""Checks of the draft orders an EHR sends with `order-select` and `order-sign`.

Each draft MedicationRequest is checked against the patient's active allergies, the latest
potassium and eGFR, and the lipid monitoring a statin needs; a draft lab ServiceRequest
against how recently the same test was done. Drug classes are read from names (RxNorm
display text), which every EHR sends; codes alone would need a terminology server.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from wardround.server.cds_hooks.chart import Resource, codes, is_active, medicine_name, ref, text_of
from wardround.server.cds_hooks.findings import Finding, Guideline, draft_test, remove_draft
from wardround.server.cds_hooks.overdue import HBA1C_GUIDELINE
from wardround.server.cds_hooks.prefetch import ChartData
from wardround.tools.guidelines import rules
from wardround.tools.guidelines.rules import METFORMIN, RAISES_POTASSIUM

__all__ = ["METFORMIN", "RAISES_POTASSIUM", "check_orders", "draft_orders"]

# Allergy substance -> drug names that share it (cross-reactivity kept to the well known).
ALLERGY_CLASSES: dict[str, re.Pattern[str]] = {
    "penicillin": re.compile(r"\b(\w*cillin|co-amoxiclav|penicillin)\b", re.I),
    "sulfonamide": re.compile(r"\b(sulfa\w*|sulpha\w*|co-trimoxazole)\b", re.I),
    "cephalosporin": re.compile(r"\b(cef\w+|ceph\w+)\b", re.I),
}
_FILLER = {"allergy", "allergic", "intolerance", "substance", "drug", "to", "of", "product"}

HYPERKALAEMIA = Guideline(
    "hyperkalaemia", "stop contributing drugs ACE inhibitors ARBs MRAs removing potassium"
)
METFORMIN_EGFR = Guideline("diabetes-pharmacotherapy", "metformin eGFR below 30 kidney function")
LIPIDS_BEFORE_STATIN = Guideline(
    "statin-intensity-and-lipid-monitoring", "lipid panel before starting a statin monitoring"
)


def draft_orders(context: dict[str, Any], only_selected: bool) -> list[Resource]:
    """The draft orders of a hook's context (order-select: only the selected ones)."""
    bundle = context.get("draftOrders") or {}
    entries = bundle.get("entry") or [] if isinstance(bundle, dict) else []
    orders = [
        e["resource"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    if only_selected:
        chosen = set(context.get("selections") or [])
        orders = [o for o in orders if ref(o) in chosen]
    return orders


def _allergy_words(allergy: Resource) -> set[str]:
    words = re.findall(r"[a-z]{4,}", text_of(allergy.get("code")).lower())
    return {w for w in words if w not in _FILLER}


def allergy_conflicts(order: Resource, chart: ChartData) -> list[Finding]:
    name = medicine_name(order)
    found = []
    for allergy in chart.of("allergies"):
        if not is_active(allergy):
            continue
        words = _allergy_words(allergy)
        same_class = any(w in ALLERGY_CLASSES and ALLERGY_CLASSES[w].search(name) for w in words)
        shared_code = codes(allergy.get("code")) & codes(order.get("medicationCodeableConcept"))
        if same_class or shared_code or any(w in name.lower() for w in words):
            substance = text_of(allergy.get("code"))
            found.append(
                Finding(
                    rule="order-allergy",
                    summary=f"{name} ordered with a recorded allergy: {substance}"[:140],
                    indicator="critical",
                    detail=f"The draft order for {name} matches the active allergy {substance}.",
                    records=[ref(order), ref(allergy)],
                    suggestions=[remove_draft(ref(order), name)],
                )
            )
    return found


def potassium_check(order: Resource, chart: ChartData) -> Finding | None:
    found = rules.potassium_order(order, chart.of("observations"))
    if found is None or found.decision != "hold" or found.last is None:
        return None
    name, last = medicine_name(order), found.last
    return Finding(
        rule="order-potassium",
        summary=f"{name} raises potassium; latest potassium {last.value:g} {last.unit}"[:140],
        indicator="critical" if last.value >= 6.0 else "warning",
        detail=f"{name} can raise potassium, and the {last.line()} is at or above 5.5 mmol/L.",
        records=found.records,
        guideline=HYPERKALAEMIA,
        suggestions=[
            remove_draft(ref(order), name),
            draft_test(chart.patient_id, "6298-4", "Potassium [Moles/volume] in Blood", "Recheck"),
        ],
    )


def metformin_check(order: Resource, chart: ChartData) -> Finding | None:
    found = rules.metformin_order(order, chart.of("observations"))
    if found is None or found.decision == "continue" or found.last is None:
        return None
    name, last = medicine_name(order), found.last
    severe = found.decision == "stop"
    return Finding(
        rule="order-metformin-egfr",
        summary=f"Metformin with eGFR {last.value:g}: "
        + ("stop below 30" if severe else "reduce the dose at 30 to 45"),
        indicator="critical" if severe else "warning",
        detail=f"{name} is drafted and the {last.line()}.",
        records=found.records,
        guideline=METFORMIN_EGFR,
        suggestions=[remove_draft(ref(order), name)] if severe else [],
    )


def statin_lipids_check(order: Resource, chart: ChartData, today: date) -> Finding | None:
    found = rules.statin_order(order, chart.of("observations"), today)
    if found is None or found.decision == "proceed":
        return None
    return Finding(
        rule="order-statin-lipids",
        summary=f"{medicine_name(order)}: no lipid panel in the last year to start from"[:140],
        indicator="info",
        detail="A lipid panel is checked before starting a statin and 4 to 12 weeks after.",
        records=found.records,
        guideline=LIPIDS_BEFORE_STATIN,
        suggestions=[draft_test(chart.patient_id, "57698-3", "Lipid panel", "Before a statin")],
    )


def repeat_hba1c_check(order: Resource, chart: ChartData, today: date) -> Finding | None:
    found = rules.hba1c_repeat_order(order, chart.of("observations"), today)
    if found is None or found.decision != "cancel" or found.last is None:
        return None
    return Finding(
        rule="order-hba1c-repeat",
        summary=f"HbA1c was measured {found.facts['days']} days ago"[:140],
        indicator="info",
        detail=f"HbA1c reflects about 3 months of glycaemia; the {found.last.line()}.",
        records=found.records,
        guideline=HBA1C_GUIDELINE,
        suggestions=[remove_draft(ref(order), "the HbA1c order")],
    )


def check_orders(orders: list[Resource], chart: ChartData, today: date) -> list[Finding]:
    findings: list[Finding] = []
    for order in orders:
        if order.get("resourceType") == "MedicationRequest":
            findings += allergy_conflicts(order, chart)
            checks = (potassium_check(order, chart), metformin_check(order, chart),
                      statin_lipids_check(order, chart, today))  # fmt: skip
            findings += [f for f in checks if f is not None]
        elif order.get("resourceType") == "ServiceRequest":
            found = repeat_hba1c_check(order, chart, today)
            findings += [found] if found else []
    return findings
