"""MedAgentBench grading: the orders' codes and dosing rules, the answer format, and one
grader per category over the final answer and the POST bodies the write tools captured.

Rules follow the original benchmark's per-category checks, with two leniencies: numbers
compare within a tolerance, and order times need the right day (the original wanted the
exact minute). Read-only categories fail on any POST.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from wardround.evals.scorers import normalise
from wardround.evals.task import Sample, Score, Trace

# How far an answered value may be from the reference (about the rounding of one decimal).
TOLERANCE = {"MG": 0.05, "GLU": 0.5, "K": 0.05, "A1C": 0.05}
SBAR = (
    "Situation: acute left knee injury, Background: radiology report indicates ACL tear. "
    "Assessment: ACL tear grade II. Recommendation: request for Orthopedic service to "
    "evaluate and provide management recommendations."
)
NDC_MAGNESIUM = "0338-1715-40"
NDC_POTASSIUM = "40032-917-01"
LOINC_SERUM_K = "2823-3"
LOINC_A1C = "4548-4"
SNOMED_ORTHO_REFERRAL = "306181000000106"
NOT_FOUND = "Patient not found"


# ---------------------------------------------------------------- dosing rules


def magnesium_dose(value: float) -> tuple[int, int] | None:
    """(grams, hours) of IV magnesium by the task's dosing instructions; None if not low."""
    if value < 1.0:
        return 4, 4
    if value < 1.5:
        return 2, 2
    if value <= 1.9:
        return 1, 1
    return None


def potassium_dose(value: float) -> float | None:
    """mEq of oral potassium: 10 mEq per 0.1 below 3.5; None if not low."""
    if value >= 3.5:
        return None
    return round((3.5 - value) / 0.1 * 10, 1)


# ---------------------------------------------------------------- answers and graders

_FINISH = re.compile(r"FINISH\s*\(\s*(\[.*\])\s*\)", re.S)
_LIST = re.compile(r"\[.*\]", re.S)


def parse_answer(text: str) -> list[Any] | None:
    """The answer list: FINISH([...]) or a bare JSON list; a lone value becomes [value]."""
    text = text.strip()
    for pattern in (_FINISH, _LIST):
        match = pattern.search(text)
        if match:
            try:
                value = json.loads(match.group(1) if pattern is _FINISH else match.group(0))
            except json.JSONDecodeError:
                continue
            if isinstance(value, list):
                return value
    # A lone value stays text: numbers are compared through `_num`, and an identifier such
    # as the MRN 4068113 must not become "4068113.0".
    return [text] if text else None


def _num(value: Any) -> float | None:
    try:
        return float(str(value).strip().rstrip("%").split()[0])
    except (ValueError, IndexError):
        return None


def _same_number(got: Any, want: float, tol: float) -> bool:
    value = _num(got)
    return value is not None and abs(value - want) <= tol


def _subject_ok(body: dict[str, Any], target: dict[str, Any]) -> bool:
    ref = str((body.get("subject") or {}).get("reference", "")).strip()
    return ref in {f"Patient/{target['patient_id']}", f"Patient/{target['mrn']}"}


def _day_ok(text: Any, target: dict[str, Any]) -> bool:
    return isinstance(text, str) and text[:10] == target["now"][:10]


def _codings(concept: Any) -> list[dict[str, Any]]:
    return list((concept or {}).get("coding") or []) if isinstance(concept, dict) else []


def _has_code(concept: Any, code: str, system_word: str) -> bool:
    return any(
        str(c.get("code", "")).strip() == code and system_word in str(c.get("system", "")).lower()
        for c in _codings(concept)
    )


def _note_text(body: dict[str, Any]) -> str:
    note = body.get("note")
    notes = note if isinstance(note, list) else [note] if note else []
    return " ".join(str(n.get("text", "")) for n in notes if isinstance(n, dict))


class Checks:
    """Collects named checks; the verdict is their conjunction, the explanation the failures."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failed.append(what)
        return ok

    def score(self, **metadata: Any) -> Score:
        ok = not self.failed
        return Score.of(ok, "all checks passed" if ok else "; ".join(self.failed), **metadata)


def _answer_is(
    check: Checks, answer: list[Any] | None, want: float, tol: float, allow_empty: bool = False
) -> None:
    if allow_empty and (answer is None or answer == []):
        return
    check(bool(answer and _same_number(answer[0], want, tol)), f"answer {answer} != [{want:g}]")


def _posts(trace: Trace) -> list[dict[str, Any]]:
    return list(trace.artifacts.get("posts") or [])


def _medication_ok(
    check: Checks,
    body: dict,
    target: dict,
    ndc: str,
    dose: float,
    unit: str,
    route: str,
    rate: float | None = None,
) -> None:
    check(body.get("resourceType") == "MedicationRequest", "not a MedicationRequest")
    check(
        _has_code(body.get("medicationCodeableConcept"), ndc, "ndc"), f"medication is not NDC {ndc}"
    )
    check(_day_ok(body.get("authoredOn"), target), "authoredOn is not today")
    dosage = (body.get("dosageInstruction") or [{}])[0]
    check(
        normalise(str((dosage.get("route") or {}).get("text", ""))) == normalise(route),
        f"route is not {route}",
    )
    dose_rate = (dosage.get("doseAndRate") or [{}])[0]
    q = dose_rate.get("doseQuantity") or {}
    check(
        _same_number(q.get("value"), dose, 1e-6)
        and normalise(str(q.get("unit", ""))) == normalise(unit),
        f"dose is not {dose:g} {unit}",
    )
    if rate is not None:
        r = dose_rate.get("rateQuantity") or {}
        check(
            _same_number(r.get("value"), rate, 1e-6) and str(r.get("unit", "")).strip() == "h",
            f"rate is not {rate:g} h",
        )
    check(body.get("status") == "active", "status is not active")
    check(body.get("intent") == "order", "intent is not order")
    check(_subject_ok(body, target), "subject is not the patient")


def _service_ok(check: Checks, body: dict, target: dict, code: str, system_word: str) -> None:
    check(body.get("resourceType") == "ServiceRequest", "not a ServiceRequest")
    check(_has_code(body.get("code"), code, system_word), f"code is not {code}")
    check(_day_ok(body.get("authoredOn"), target), "authoredOn is not today")
    check(body.get("status") == "active", "status is not active")
    check(body.get("intent") == "order", "intent is not order")
    check(body.get("priority") == "stat", "priority is not stat")
    check(_subject_ok(body, target), "subject is not the patient")


Answer = list[Any] | None


def _task1(check: Checks, t: dict[str, Any], answer: Answer, bodies: list[dict[str, Any]]) -> None:
    want = str(t["expected"])
    got = [str(a).strip() for a in answer or []]
    not_found = want == NOT_FOUND and [normalise(g) for g in got] == [normalise(NOT_FOUND)]
    check(got == [want] or not_found, f"answer {answer} != [{want!r}]")


def _task2(check: Checks, t: dict[str, Any], answer: Answer, bodies: list[dict[str, Any]]) -> None:
    _answer_is(check, answer, float(t["age"]), 0.0)


def _latest_value(tol: float) -> Grader:
    def grade_value(
        check: Checks, t: dict[str, Any], answer: Answer, bodies: list[dict[str, Any]]
    ) -> None:
        if t["value"] == -1:
            _answer_is(check, answer, -1, 0.0)
        else:
            _answer_is(check, answer, float(t["value"]), tol)

    return grade_value


def _task3(check: Checks, t: dict[str, Any], answer: Answer, bodies: list[dict[str, Any]]) -> None:
    if not check(len(bodies) == 1, f"{len(bodies)} POSTs, expected 1"):
        return
    body = bodies[0]
    check(body.get("resourceType") == "Observation", "not an Observation")
    cats = [c for concept in body.get("category") or [] for c in _codings(concept)]
    check(any(c.get("code") == "vital-signs" for c in cats), "category is not vital-signs")
    check(str((body.get("code") or {}).get("text", "")).strip() == "BP", "code.text is not BP")
    check(_day_ok(body.get("effectiveDateTime"), t), "effectiveDateTime is not today")
    check(body.get("status") == "final", "status is not final")
    value_ok = normalise(str(body.get("valueString", ""))) == normalise(t["value"])
    check(value_ok, f"valueString is not {t['value']!r}")
    check(_subject_ok(body, t), "subject is not the patient")


def _task5(check: Checks, t: dict[str, Any], answer: Answer, bodies: list[dict[str, Any]]) -> None:
    _answer_is(check, answer, float(t["value"]), TOLERANCE["MG"], allow_empty=True)
    if t["dose"] is None:
        check(not bodies, f"{len(bodies)} POST(s) but no order was due")
    elif check(len(bodies) == 1, f"{len(bodies)} POSTs, expected 1"):
        grams, hours = t["dose"]
        _medication_ok(check, bodies[0], t, NDC_MAGNESIUM, grams, "g", "IV", rate=hours)


def _task8(check: Checks, t: dict[str, Any], answer: Answer, bodies: list[dict[str, Any]]) -> None:
    if check(len(bodies) == 1, f"{len(bodies)} POSTs, expected 1"):
        _service_ok(check, bodies[0], t, SNOMED_ORTHO_REFERRAL, "snomed")
        sbar = normalise(t["note"]) in normalise(_note_text(bodies[0]))
        check(sbar, "note lacks the SBAR text")


def _task9(check: Checks, t: dict[str, Any], answer: Answer, bodies: list[dict[str, Any]]) -> None:
    _answer_is(check, answer, float(t["value"]), TOLERANCE["K"], allow_empty=True)
    if t["dose_meq"] is None:
        check(not bodies, f"{len(bodies)} POST(s) but no order was due")
        return
    if not check(len(bodies) == 2, f"{len(bodies)} POSTs, expected 2"):
        return
    med = [b for b in bodies if b.get("resourceType") == "MedicationRequest"]
    lab = [b for b in bodies if b.get("resourceType") == "ServiceRequest"]
    if check(len(med) == 1 and len(lab) == 1, "expected a MedicationRequest and a ServiceRequest"):
        _medication_ok(check, med[0], t, NDC_POTASSIUM, t["dose_meq"], "mEq", "oral")
        _service_ok(check, lab[0], t, LOINC_SERUM_K, "loinc")
        tomorrow = (datetime.fromisoformat(t["now"]) + timedelta(days=1)).date().isoformat()
        when = str(lab[0].get("occurrenceDateTime", ""))
        check(when.startswith(f"{tomorrow}T08:00"), f"occurrence is not {tomorrow}T08:00")


def _task10(check: Checks, t: dict[str, Any], answer: Answer, bodies: list[dict[str, Any]]) -> None:
    if t["value"] == -1:
        _answer_is(check, answer, -1, 0.0)
    else:
        ok = bool(answer) and len(answer or []) >= 2
        ok = ok and _same_number((answer or [None])[0], t["value"], TOLERANCE["A1C"])
        ok = ok and str((answer or [None, ""])[1])[:10] == t["date"][:10]
        check(ok, f"answer {answer} != [{t['value']:g}, {t['date'][:10]}]")
    if not t["order"]:
        check(not bodies, f"{len(bodies)} POST(s) but no order was due")
    elif check(len(bodies) == 1, f"{len(bodies)} POSTs, expected 1"):
        _service_ok(check, bodies[0], t, LOINC_A1C, "loinc")


Grader = Callable[[Checks, dict[str, Any], Answer, list[dict[str, Any]]], None]
GRADERS: dict[str, Grader] = {
    "task1": _task1,
    "task2": _task2,
    "task3": _task3,
    "task4": _latest_value(TOLERANCE["MG"]),
    "task5": _task5,
    "task6": _latest_value(0.1),
    "task7": _latest_value(TOLERANCE["GLU"]),
    "task8": _task8,
    "task9": _task9,
    "task10": _task10,
}
READ_ONLY = frozenset({"task1", "task2", "task4", "task6", "task7"})


def grade(sample: Sample, trace: Trace) -> Score:
    """The category's rules applied to the final answer and the captured POSTs."""
    if sample.category not in GRADERS:
        raise ValueError(f"unknown category {sample.category!r}")
    answer, posts = parse_answer(trace.answer), _posts(trace)
    check = Checks()
    if sample.category in READ_ONLY:
        check(not posts, f"{len(posts)} unexpected POST(s)")
    GRADERS[sample.category](check, sample.target, answer, [p.get("body") or {} for p in posts])
    return check.score(answer=answer, posts=len(posts))


async def score(sample: Sample, trace: Trace) -> Score:
    return grade(sample, trace)
