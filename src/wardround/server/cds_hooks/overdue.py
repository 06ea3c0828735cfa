"""What is overdue per the starter guidelines, computed from dates and codes.

- HbA1c in diabetes: at least every 6 months, every 3 months when the last was above the
  7.0% goal (hba1c-targets, "Monitoring interval").
- UACR in diabetes: at least once a year (diabetes-complication-screening, "Kidney").
- Lipids on a statin: a panel within the last year (statin-intensity-and-lipid-monitoring,
  "Monitoring": every 3 to 12 months once on treatment).
"""

from __future__ import annotations

import re
from datetime import date

from wardround.server.cds_hooks.chart import Result, is_active, latest, medicine_name, mentions, ref
from wardround.server.cds_hooks.findings import Finding, Guideline, draft_test
from wardround.server.cds_hooks.prefetch import ChartData
from wardround.server.cds_hooks.results import HBA1C

# Diabetes mellitus by name, not insipidus or gestational ("prediabetes" has no word break).
DIABETES = re.compile(r"^(?!.*(insipidus|gestational)).*\bdiabetes\b", re.I)
DIABETES_CODES = {"44054006", "46635009", "73211009", "E11", "E10", "E11.9", "E10.9"}
STATIN = re.compile(r"\b(atorva|rosuva|simva|prava|lova|fluva|pitava)statin\b", re.I)
UACR = ("9318-7", "14959-1", "32294-1", "14958-3")
LIPIDS = ("18262-6", "13457-7", "2089-1", "57698-3", "24331-1")
HBA1C_GOAL = 7.0

HBA1C_GUIDELINE = Guideline(
    "hba1c-targets", "how often should HbA1c be measured monitoring interval"
)
UACR_GUIDELINE = Guideline(
    "diabetes-complication-screening", "urinary albumin-to-creatinine ratio UACR once a year kidney"
)
LIPID_GUIDELINE = Guideline(
    "statin-intensity-and-lipid-monitoring", "lipid panel monitoring after starting a statin"
)


def diabetes(chart: ChartData) -> list[str]:
    """Refs of the patient's active diabetes Conditions."""
    found = []
    for condition in chart.of("conditions"):
        coded = {c.get("code") for c in (condition.get("code") or {}).get("coding", [])}
        named = mentions(condition, DIABETES, "code")
        if is_active(condition) and (coded & DIABETES_CODES or named):
            found.append(ref(condition))
    return found


def statins(chart: ChartData) -> list[str]:
    return [
        ref(m)
        for m in chart.of("medications")
        if m.get("status") == "active" and STATIN.search(medicine_name(m))
    ]


def _ago(last: Result | None, today: date) -> int | None:
    return (today - last.on).days if last and last.on else None


def hba1c_overdue(chart: ChartData, today: date) -> Finding | None:
    conditions = diabetes(chart)
    if not conditions:
        return None
    last = latest(chart.of("observations"), HBA1C)
    above_goal = last is not None and last.value >= HBA1C_GOAL
    interval = 92 if above_goal else 183
    days = _ago(last, today)
    if days is not None and days <= interval:
        return None
    every = "3 months (last result above the 7.0% goal)" if above_goal else "6 months"
    seen = f"last {last.line()}, {days} days ago" if last else "no HbA1c on record"
    return Finding(
        rule="hba1c-overdue",
        summary=("HbA1c overdue: " + seen)[:140],
        indicator="warning",
        detail=f"Diabetes is on the problem list; HbA1c is due every {every}: {seen}.",
        records=[*conditions, *([last.ref] if last else [])],
        guideline=HBA1C_GUIDELINE,
        suggestions=[draft_test(chart.patient_id, "4548-4", "Hemoglobin A1c", "HbA1c overdue")],
    )


def uacr_overdue(chart: ChartData, today: date) -> Finding | None:
    conditions = diabetes(chart)
    if not conditions:
        return None
    last = latest(chart.of("observations"), UACR)
    days = _ago(last, today)
    if days is not None and days <= 365:
        return None
    seen = f"last {last.line()}" if last else "none on record"
    return Finding(
        rule="uacr-overdue",
        summary=f"Yearly urine albumin-to-creatinine ratio due ({seen})"[:140],
        indicator="info",
        detail=f"Diabetes is on the problem list; UACR and eGFR are due at least yearly: {seen}.",
        records=[*conditions, *([last.ref] if last else [])],
        guideline=UACR_GUIDELINE,
        suggestions=[
            draft_test(
                chart.patient_id,
                "9318-7",
                "Albumin/Creatinine [Mass Ratio] in Urine",
                "Yearly UACR",
            )
        ],
    )


def lipids_overdue(chart: ChartData, today: date) -> Finding | None:
    on_statin = statins(chart)
    if not on_statin:
        return None
    last = latest(chart.of("observations"), LIPIDS)
    days = _ago(last, today)
    if days is not None and days <= 365:
        return None
    seen = f"last {last.line()}" if last else "none on record"
    return Finding(
        rule="lipids-overdue",
        summary=f"On a statin with no lipid panel in a year ({seen})"[:140],
        indicator="info",
        detail=f"A statin is active; lipids are checked every 3 to 12 months on treatment: {seen}.",
        records=[*on_statin, *([last.ref] if last else [])],
        guideline=LIPID_GUIDELINE,
        suggestions=[draft_test(chart.patient_id, "57698-3", "Lipid panel", "Statin monitoring")],
    )


def overdue(chart: ChartData, today: date) -> list[Finding]:
    checks = (hba1c_overdue, uacr_overdue, lipids_overdue)
    return [f for check in checks if (f := check(chart, today)) is not None]
