"""Abnormal latest results: the Observation's own interpretation or reference range first,
and only where it has neither, the limits the starter guidelines define for a few tests."""

from __future__ import annotations

from dataclasses import dataclass

from wardround.server.cds_hooks.chart import Result, codes, latest_by_code
from wardround.server.cds_hooks.findings import Finding, Guideline, Indicator
from wardround.server.cds_hooks.prefetch import ChartData
from wardround.tools.guidelines.rules import EGFR, HBA1C, POTASSIUM

# v3 ObservationInterpretation codes that mean outside normal; the doubled ones are critical.
HIGH = {"H", "HU", "HH", ">"}
LOW = {"L", "LU", "LL", "<"}
ABNORMAL = {"A", "AA"}
CRITICAL = {"HH", "LL", "AA", "HU", "LU"}
NORMAL = {"N"}


@dataclass(frozen=True)
class Limit:
    """A guideline's definition of too low / too high for one test (in one unit)."""

    unit: str
    low: float | None
    high: float | None
    low_guideline: Guideline | None = None
    high_guideline: Guideline | None = None


SODIUM = ("2951-2", "2947-0")
MAGNESIUM = ("19123-9", "2601-3")

_K_HIGH = Guideline("hyperkalaemia", "hyperkalaemia severity mild moderate severe potassium")
_K_LOW = Guideline("potassium-repletion", "hypokalaemia definition severity potassium below 3.5")
_LIMITS: dict[str, Limit] = {
    **{c: Limit("mmol/L", 3.5, 5.5, _K_LOW, _K_HIGH) for c in POTASSIUM},
    **{
        c: Limit(
            "mmol/L", 135, None, Guideline("hyponatraemia", "hyponatraemia classification mild")
        )
        for c in SODIUM
    },
    "19123-9": Limit(
        "mg/dL", 1.7, None, Guideline("magnesium-repletion", "hypomagnesaemia definition")
    ),
    "2601-3": Limit(
        "mmol/L", 0.7, None, Guideline("magnesium-repletion", "hypomagnesaemia definition")
    ),
    **{
        c: Limit(
            "%",
            None,
            7.0,
            None,
            Guideline("hba1c-targets", "HbA1c goal below 7.0% glycaemic targets"),
        )
        for c in HBA1C
    },
    **{
        c: Limit(
            "mL/min/1.73m2", 60, None, Guideline("ckd-staging", "eGFR below 60 GFR categories")
        )
        for c in EGFR
    },
}


# Every guideline a limit cites (found before the first hook by CdsHooks.warm).
LIMIT_GUIDELINES = [
    g for limit in _LIMITS.values() for g in (limit.low_guideline, limit.high_guideline) if g
]


def _same_unit(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        return u.lower().replace(" ", "").replace("{", "").replace("}", "")

    return norm(a) == norm(b) or (norm(a).startswith("ml/min") and norm(b).startswith("ml/min"))


def _flag(result: Result) -> tuple[str, bool, str] | None:
    """("high"|"low"|"abnormal", critical, why) or None when the result is not abnormal."""
    obs = result.resource
    interpretation = set().union(*(codes(i) for i in obs.get("interpretation") or [])) or set()
    if interpretation:
        critical = bool(interpretation & CRITICAL)
        if interpretation & HIGH:
            return "high", critical, "flagged high by the laboratory"
        if interpretation & LOW:
            return "low", critical, "flagged low by the laboratory"
        if interpretation & ABNORMAL:
            return "abnormal", critical, "flagged abnormal by the laboratory"
        return None
    for band in obs.get("referenceRange") or []:
        low = (band.get("low") or {}).get("value")
        high = (band.get("high") or {}).get("value")
        if isinstance(low, int | float) and result.value < low:
            return "low", False, f"below the reference range (low {low:g})"
        if isinstance(high, int | float) and result.value > high:
            return "high", False, f"above the reference range (high {high:g})"
        if low is not None or high is not None:
            return None
    return _by_guideline(result)


def _by_guideline(result: Result) -> tuple[str, bool, str] | None:
    code = next((c for c in codes(result.resource.get("code")) if c in _LIMITS), None)
    limit = _LIMITS.get(code or "")
    if limit is None or not _same_unit(limit.unit, result.unit):
        return None
    if limit.low is not None and result.value < limit.low:
        return "low", False, f"below {limit.low:g} {limit.unit}, the guideline's lower limit"
    if limit.high is not None and result.value >= limit.high:
        return "high", False, f"at or above {limit.high:g} {limit.unit}, the guideline's limit"
    return None


def _guideline(result: Result, direction: str) -> Guideline:
    code = next((c for c in codes(result.resource.get("code")) if c in _LIMITS), None)
    limit = _LIMITS.get(code or "")
    chosen = None
    if limit is not None:
        chosen = limit.high_guideline if direction == "high" else limit.low_guideline
    return chosen or Guideline(None, f"{result.name} {direction}")


def abnormal_results(chart: ChartData) -> list[Finding]:
    """One finding per test whose latest result is abnormal."""
    findings = []
    for result in latest_by_code(chart.of("observations")):
        flag = _flag(result)
        if flag is None:
            continue
        direction, critical, why = flag
        indicator: Indicator = "critical" if critical else "warning"
        findings.append(
            Finding(
                rule=f"abnormal-result-{direction}",
                summary=f"Latest {result.name} is {direction}: {result.value:g} {result.unit}"[
                    :140
                ],
                indicator=indicator,
                detail=f"{result.line()}, {why}.",
                records=[result.ref],
                guideline=_guideline(result, direction),
            )
        )
    return findings
