"""What is overdue per the starter guidelines, computed from dates and codes (the rules
themselves are in `wardround.tools.guidelines.rules`, shared with the `cds` eval task).

- HbA1c in diabetes: at least every 6 months, every 3 months when the last was above the
  7.0% goal (hba1c-targets, "Monitoring interval").
- UACR in diabetes: at least once a year (diabetes-complication-screening, "Kidney").
- Lipids on a statin: a panel within the last year (statin-intensity-and-lipid-monitoring,
  "Monitoring": every 3 to 12 months once on treatment).
"""

from __future__ import annotations

from datetime import date

from wardround.server.cds_hooks.findings import Finding, Guideline, draft_test
from wardround.server.cds_hooks.prefetch import ChartData
from wardround.tools.guidelines import rules
from wardround.tools.guidelines.rules import DIABETES, DIABETES_CODES, LIPIDS, STATIN, UACR

__all__ = ["DIABETES", "DIABETES_CODES", "LIPIDS", "STATIN", "UACR", "overdue"]

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
    return rules.diabetes(chart.of("conditions"))


def statins(chart: ChartData) -> list[str]:
    return rules.statins(chart.of("medications"))


def hba1c_overdue(chart: ChartData, today: date) -> Finding | None:
    found = rules.hba1c_interval(chart.of("conditions"), chart.of("observations"), today)
    if found is None or found.decision != "overdue":
        return None
    last, days = found.last, found.facts["days"]
    every = (
        "3 months (last result above the 7.0% goal)" if found.facts["above_goal"] else "6 months"
    )
    seen = f"last {last.line()}, {days} days ago" if last else "no HbA1c on record"
    return Finding(
        rule="hba1c-overdue",
        summary=("HbA1c overdue: " + seen)[:140],
        indicator="warning",
        detail=f"Diabetes is on the problem list; HbA1c is due every {every}: {seen}.",
        records=found.records,
        guideline=HBA1C_GUIDELINE,
        suggestions=[draft_test(chart.patient_id, "4548-4", "Hemoglobin A1c", "HbA1c overdue")],
    )


def uacr_overdue(chart: ChartData, today: date) -> Finding | None:
    found = rules.uacr_yearly(chart.of("conditions"), chart.of("observations"), today)
    if found is None or found.decision != "overdue":
        return None
    last = found.last
    seen = f"last {last.line()}" if last else "none on record"
    return Finding(
        rule="uacr-overdue",
        summary=f"Yearly urine albumin-to-creatinine ratio due ({seen})"[:140],
        indicator="info",
        detail=f"Diabetes is on the problem list; UACR and eGFR are due at least yearly: {seen}.",
        records=found.records,
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
    found = rules.lipids_on_statin(chart.of("medications"), chart.of("observations"), today)
    if found is None or found.decision != "overdue":
        return None
    last = found.last
    seen = f"last {last.line()}" if last else "none on record"
    return Finding(
        rule="lipids-overdue",
        summary=f"On a statin with no lipid panel in a year ({seen})"[:140],
        indicator="info",
        detail=f"A statin is active; lipids are checked every 3 to 12 months on treatment: {seen}.",
        records=found.records,
        guideline=LIPID_GUIDELINE,
        suggestions=[draft_test(chart.patient_id, "57698-3", "Lipid panel", "Statin monitoring")],
    )


def overdue(chart: ChartData, today: date) -> list[Finding]:
    checks = (hba1c_overdue, uacr_overdue, lipids_overdue)
    return [f for check in checks if (f := check(chart, today)) is not None]
