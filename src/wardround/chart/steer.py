"""The kind a question's own words fix, over the model's choice.

A small model chooses a question's kind from a list and mostly gets it right, but some words
decide the kind whatever it chose: "how many" is a count, "highest" an extreme, "above 140"
a limit, "first" or "started" the earliest record, a named day with "procedure" or "visit"
what happened then. Code reads those words; the model's choice stands everywhere else.
"""

from __future__ import annotations

import re

from wardround.chart.dates import Window, find_window
from wardround.chart.kinds import Kind
from wardround.chart.options import Option
from wardround.chart.thresholds import find_threshold


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"\b(?:{pattern})\b", re.I)


_COUNT = re.compile(r"\b(?:how many|number of|how often|count of)\b|#\s*of\b", re.I)
_HIGH = _words(r"highest|maximum|max|peak|largest|greatest|top")
_LOW = _words(r"lowest|minimum|min|smallest|nadir")
_FIRST = _words(r"first|earliest|initial|initially|original")
_START = _words(r"start(?:ed|ing|s)?|begin|began|begun|commence[ds]?|initiated|put on")
_DIAGNOSED = _words(r"diagnos\w*|dx|onset|noted|identified")
_EVENT = _words(
    r"procedures?|surger(?:y|ies)|operations?|underwent|undergo|performed|done|visits?|"
    r"encounters?|appointments?|seen|admi(?:tted|ssions?)|came in|reason|vaccin\w*|"
    r"immuni[sz]\w*|shots?|jabs?|happened|occurred"
)
_YES_NO = re.compile(r"^\s*(?:has|have|had|did|does|do|was|were|is|are|any|ever)\b|yes or no", re.I)
_EVER = _words(r"ever|history of|hx of|been diagnosed|any record")
_AT_ANY_TIME = _words(r"ever|any|at any time|anytime|all|history|ever been")
# Kinds a word above may override: the ones a small model falls back on when unsure.
_LOOSE = frozenset(
    {Kind.LATEST, Kind.ON_DATE, Kind.TREND, Kind.CURRENT, Kind.SINCE, Kind.OTHER, Kind.HAPPENED}
)
_VALUE_TYPES = frozenset({"Observation"})
_VALUE_KINDS = frozenset(
    {Kind.LATEST, Kind.ON_DATE, Kind.TREND, Kind.HIGHEST, Kind.LOWEST, Kind.THRESHOLD, Kind.FIRST}
)


def steer(question: str, kind: Kind, window: Window | None, option: Option | None) -> Kind:
    """The kind to answer: the model's, unless the question's words decide another."""
    limit = find_threshold(question)
    if _COUNT.search(question) and not limit and kind is not Kind.AGE:
        return Kind.COUNT
    if limit and kind is not Kind.COUNT:
        return Kind.THRESHOLD
    if kind in _LOOSE | {Kind.FIRST, Kind.EVER}:
        if _HIGH.search(question):
            return Kind.HIGHEST
        if _LOW.search(question):
            return Kind.LOWEST
    first = _first_kind(question, kind, option)
    if first is not None:
        return first
    if window is not None and kind in _LOOSE and _is_event_question(question, option):
        return Kind.HAPPENED
    if kind in _LOOSE and _YES_NO.search(question) and _EVER.search(question):
        return Kind.EVER
    if kind is Kind.OTHER or _cannot_compute(kind, window, option):
        # the model's "none of the kinds", or a kind code cannot compute here: the words
        # may name one (a value kind only for a result, not "the latest progress note")
        worded = kind_from_words(question)
        result = option is None or option.resource_type in _VALUE_TYPES
        if worded is not None and (worded not in _VALUE_KINDS or result):
            return worded
    return kind
    return kind


def _cannot_compute(kind: Kind, window: Window | None, option: Option | None) -> bool:
    """A value on a day the question names none of; the latest value of a whole type that
    holds no values ("latest visit" planned as the latest of all encounters)."""
    if kind is Kind.ON_DATE:
        return window is None
    whole = option is not None and not option.code and option.resource_type not in _VALUE_TYPES
    return kind is Kind.LATEST and whole


def _first_kind(question: str, kind: Kind, option: Option | None) -> Kind | None:
    """The earliest-record kind that fits the record type, when the words ask for one."""
    if kind not in _LOOSE | {Kind.EVER, Kind.FIRST}:
        return None
    rtype = option.resource_type if option is not None else ""
    started = _START.search(question) is not None
    if not (_FIRST.search(question) or started):
        return None
    if rtype == "MedicationRequest" or (started and rtype != "Observation"):
        return Kind.STARTED
    if rtype == "Condition" or _DIAGNOSED.search(question):
        return Kind.FIRST_DIAGNOSED
    return Kind.FIRST if kind is not Kind.EVER else None


def _is_event_question(question: str, option: Option | None) -> bool:
    """Asks what happened then (not a yes/no, not one test's value)."""
    if _YES_NO.search(question) or not _EVENT.search(question):
        return False
    return option is None or option.resource_type not in _VALUE_TYPES or not option.code


def asks_ever(question: str) -> bool:
    """A limit question about any value ever ("was it ever above 140?"), not the latest."""
    return _AT_ANY_TIME.search(question) is not None


_RESULT = _words(r"results?|levels?|labs?|tests?|readings?|values?|measurements?|measured|scores?")


def asks_result(question: str) -> bool:
    """The question asks for a measured result (a medication or a procedure is no answer)."""
    return _RESULT.search(question) is not None


_AGE = _words(r"how old|age|aged")
_LAST_VISIT = re.compile(
    r"\b(?:last|latest|most recent|previous)\s+(?:visit|encounter|appointment)s?\b|"
    r"\blast (?:seen|visited)\b",
    re.I,
)
_CURRENT = re.compile(
    r"\ballerg\w*|\bintolerances?\b|\bcurrently (?:taking|on)\b|"
    r"\b(?:current|active)\s+(?:medications?|meds|prescriptions?|problems?|conditions?|"
    r"diagnoses|allergies)\b|\bactive prescriptions?\b",
    re.I,
)
_SINCE = _words(r"since|on or after|onwards?|from .{1,25} on")
_LISTED = _words(r"diagnos\w*|conditions?|disorders?|problems?|medications?|meds|"
                 r"procedures?|immuni[sz]\w*|vaccin\w*")  # fmt: skip
_TREND = _words(
    r"increased?|decreased?|gone up|gone down|went up|went down|higher or lower|"
    r"up or down|trend\w*|compared?|comparing"
)
_LATEST = _words(r"latest|most recent|newest|last|current")


def kind_from_words(question: str) -> Kind | None:
    """The kind a question's words alone decide, with no model choice to start from (the
    agent loop's first step); None when the words leave it open."""
    if _COUNT.search(question):
        return Kind.COUNT
    if find_threshold(question):
        return Kind.THRESHOLD
    for pattern, kind in ((_HIGH, Kind.HIGHEST), (_LOW, Kind.LOWEST), (_AGE, Kind.AGE),
                          (_LAST_VISIT, Kind.LAST_VISIT), (_CURRENT, Kind.CURRENT)):  # fmt: skip
        if pattern.search(question):
            return kind
    if _YES_NO.search(question) and _EVER.search(question):
        return Kind.EVER
    if _SINCE.search(question) and _LISTED.search(question):
        return Kind.SINCE
    if _START.search(question) or (_FIRST.search(question) and _DIAGNOSED.search(question)):
        return Kind.FIRST_DIAGNOSED if _DIAGNOSED.search(question) else Kind.STARTED
    if _FIRST.search(question):
        return Kind.FIRST
    if _TREND.search(question):
        return Kind.TREND
    window = find_window(question)
    if window is not None and not window.year:
        return Kind.ON_DATE
    return Kind.LATEST if _LATEST.search(question) else None
