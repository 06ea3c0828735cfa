"""Scoring free-text answers against answers computed from data.

Rules are deliberately simple and predictable, so a reviewer can check any verdict by hand:
- numbers: the first number in the answer (dates, times and codes removed) must be the
  target rounded to the precision the answer wrote (at least one decimal when the target has
  decimals), or equal to it for counts and ages;
- sets: every expected item must be mentioned and no distractor (a record that exists but
  does not belong, e.g. a stopped medication) may be;
- dates: the first date in the answer (any common format) must be the target day;
- text: normalised equality or containment, with synonyms;
- "nothing recorded": the answer must say so and must not claim a value.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date

from wardround.evals.task import Score

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for m in names
}
_MONTH_RE = r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_ISO_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_US_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_MDY = re.compile(_MONTH_RE + r"\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})", re.I)
_DMY = re.compile(
    r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH_RE + r"\.?,?\s+(\d{4})", re.I
)
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b")
_CODE = re.compile(r"\b\d{3,}-\d\b")  # LOINC-style codes, e.g. 4548-4
_NUMBER = re.compile(r"(?<![A-Za-z\d.])[-−]?\d+(?:,\d{3})*(?:\.\d+)?")
_SEMANTIC_TAG = re.compile(
    r"\((?:disorder|finding|substance|organism|situation|procedure|"
    r"product|qualifier value|morphologic abnormality|event)\)"
)
_QUALIFIER = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "or",
        "of",
        "the",
        "in",
        "on",
        "to",
        "for",
        "with",
        "by",
        "at",
        "as",
        "is",
        "was",
        "are",
        "were",
        "be",
        "mg",
        "ml",
        "oral",
        "tablet",
        "capsule",
        "solution",
        "injection",
        "hr",
        "day",
        "extended",
        "release",
    ]
)


# ---------------------------------------------------------------- text helpers


def normalise(text: str) -> str:
    """Lowercase ASCII words separated by single spaces; SNOMED semantic tags dropped."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = _SEMANTIC_TAG.sub(" ", text.lower())
    return _NON_WORD.sub(" ", text).strip()


def tokens(text: str) -> list[str]:
    return normalise(text).split()


def significant_tokens(text: str) -> list[str]:
    return [t for t in tokens(text) if t not in _STOPWORDS and not t.isdigit() and len(t) > 1]


def mentions(answer: str, item: str, *, min_overlap: float = 0.75) -> bool:
    """Whether `answer` names `item`: as a phrase, or by most of its significant words."""
    norm_answer, norm_item = f" {normalise(answer)} ", normalise(item)
    if not norm_item:
        return False
    if f" {norm_item} " in norm_answer:
        return True
    have = set(norm_answer.split())
    wanted = significant_tokens(item)
    if wanted and sum(t in have for t in wanted) / len(wanted) >= min_overlap:
        return True
    # A qualifier in brackets is not what a clinician says ("eggs" for "Eggs (edible)"):
    # every word outside the brackets, when there are any, names the item too.
    core = significant_tokens(_QUALIFIER.sub(" ", item))  # semantic tags are brackets too
    return bool(core) and len(core) < len(wanted) and all(t in have for t in core)


# ---------------------------------------------------------------- dates and numbers


def _safe_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def find_dates(text: str) -> list[date]:
    """Dates in order of appearance, in ISO, US (MM/DD/YYYY) or spelled-month formats."""
    found: list[tuple[int, date]] = []
    for match in _ISO_DATE.finditer(text):
        d = _safe_date(int(match[1]), int(match[2]), int(match[3]))
        if d:
            found.append((match.start(), d))
    for match in _US_DATE.finditer(text):
        d = _safe_date(int(match[3]), int(match[1]), int(match[2]))
        if d:
            found.append((match.start(), d))
    for match in _MDY.finditer(text):
        d = _safe_date(int(match[3]), _MONTHS[match[1].lower()[:3]], int(match[2]))
        if d:
            found.append((match.start(), d))
    for match in _DMY.finditer(text):
        d = _safe_date(int(match[3]), _MONTHS[match[2].lower()[:3]], int(match[1]))
        if d:
            found.append((match.start(), d))
    return [d for _, d in sorted(found, key=lambda pair: pair[0])]


def strip_dates(text: str) -> str:
    for pattern in (_ISO_DATE, _US_DATE, _MDY, _DMY, _TIME, _CODE):
        text = pattern.sub(" ", text)
    return text


def find_number_texts(text: str) -> list[str]:
    """Numbers as written, in order of appearance, ignoring dates, times and code-like tokens."""
    return [
        m.group(0).replace(",", "").replace("−", "-") for m in _NUMBER.finditer(strip_dates(text))
    ]


def find_numbers(text: str) -> list[float]:
    return [float(raw) for raw in find_number_texts(text)]


def decimals(raw: str) -> int:
    return len(raw.split(".", 1)[1]) if "." in raw else 0


def close(value: float, target: float, *, abs_tol: float, rel_tol: float) -> bool:
    return math.isfinite(value) and abs(value - target) <= max(abs_tol, rel_tol * abs(target))


def matches_as_written(raw: str, target: float, *, max_decimals: int = 3) -> bool:
    """Whether a number, as written, is the target rounded to the answer's own precision.

    "1.7" and "1.69" both match 1.6944; "130.8" does not match 130.3. An answer may round,
    but not below one decimal when the target has decimals ("2" does not match 1.6944).
    """
    wanted = f"{target:.{max_decimals}f}".rstrip("0").rstrip(".")
    if decimals(raw) < min(decimals(wanted), 1):
        return False
    return abs(float(raw) - target) <= 0.5 * 10 ** -decimals(raw) + 1e-9


# ---------------------------------------------------------------- scorers

_ABSENCE = re.compile(
    r"\b(none|nothing|no\s+(?:\w+\s+){0,3}(?:record|recorded|records|data|result|results|"
    r"measurement|measurements|value|values|documented|known|active|allergies|allergy|"
    r"medications|medication|conditions|condition|diagnos\w*|entries|entry|information|"
    r"history|evidence|reading|readings|lab|labs|test|tests)|not\s+(?:been\s+)?"
    r"(?:recorded|found|available|documented|on file|present|listed|reported|measured)|"
    r"(?:unavailable|n/a|no such))\b",
    re.I,
)


def says_nothing_recorded(answer: str) -> bool:
    return bool(_ABSENCE.search(answer))


def score_numeric(answer: str, target: float, *, exact: bool = False) -> Score:
    """The first number in the answer against the target: equal for counts and ages
    (`exact`), else the target rounded to the precision the answer wrote."""
    written = find_number_texts(answer)
    if not written:
        return Score.of(False, "no number in the answer", expected=target)
    got = float(written[0])
    ok = got == target if exact else matches_as_written(written[0], target)
    return Score.of(ok, f"got {written[0]}, expected {target:g}", got=got, expected=target)


def score_date(answer: str, target: str) -> Score:
    """`target` is `YYYY-MM-DD` (longer FHIR dateTimes are cut to their day)."""
    want = date.fromisoformat(target[:10])
    found = find_dates(answer)
    if not found:
        return Score.of(False, "no date in the answer", expected=want.isoformat())
    ok = found[0] == want
    return Score.of(
        ok, f"got {found[0]}, expected {want}", got=found[0].isoformat(), expected=want.isoformat()
    )


def score_set(answer: str, expected: Sequence[str], distractors: Iterable[str] = ()) -> Score:
    """All expected items named, no distractor named; an empty set wants "nothing recorded"."""
    if not expected:
        return score_nothing(answer)
    hits = [item for item in expected if mentions(answer, item)]
    wrong = [
        item
        for item in distractors
        if mentions(answer, item) and not any(mentions(item, e) for e in expected)
    ]
    recall = len(hits) / len(expected)
    ok = len(hits) == len(expected) and not wrong
    missing = [item for item in expected if item not in hits]
    explanation = f"named {len(hits)}/{len(expected)}"
    if missing:
        explanation += f"; missing {missing}"
    if wrong:
        explanation += f"; also named {wrong}"
    score = Score.of(ok, explanation, recall=recall, missing=missing, extra=wrong)
    score.value = recall if not wrong else recall / 2
    return score


def score_nothing(answer: str) -> Score:
    absent = says_nothing_recorded(answer)
    numbers = find_numbers(answer)
    ok = absent and not numbers
    why = "says nothing is recorded" if absent else "does not say nothing is recorded"
    if numbers:
        why += f", but claims a value ({numbers[0]:g})"
    return Score.of(ok, why)


def score_text(answer: str, target: str, synonyms: Sequence[str] = ()) -> Score:
    """Normalised equality or containment of the target (or one of its synonyms)."""
    norm = f" {normalise(answer)} "
    for candidate in (target, *synonyms):
        phrase = normalise(candidate)
        if phrase and f" {phrase} " in norm:
            return Score.of(True, f"names {candidate!r}")
    return Score.of(False, f"does not name {target!r}")


_TREND_WORDS = {
    "increased": r"increas\w*|rose|risen|rising|higher|went up|gone up|upward|up from|climb\w*",
    "decreased": r"decreas\w*|fell|fallen|falling|dropp?\w*|lower|went down|gone down|"
    r"declin\w*|reduc\w*|down from",
    "unchanged": r"unchanged|same|stable|no change|not change|did not change|constant|steady",
}
_TREND_RE = {label: re.compile(rf"\b(?:{words})\b", re.I) for label, words in _TREND_WORDS.items()}


def trend_of(answer: str) -> str | None:
    """The trend an answer states: the label whose wording comes first."""
    first: tuple[int, str] | None = None
    for label, pattern in _TREND_RE.items():
        match = pattern.search(answer)
        if match and (first is None or match.start() < first[0]):
            first = (match.start(), label)
    return first[1] if first else None


def score_trend(answer: str, target: str) -> Score:
    got = trend_of(answer)
    return Score.of(got == target, f"got {got}, expected {target}", got=got, expected=target)


def _recall_precision(
    evidence: set[str], found: Sequence[str]
) -> tuple[float | None, float | None]:
    got = set(found)
    recall = len(evidence & got) / len(evidence) if evidence else None
    precision = len(evidence & got) / len(got) if got and evidence else None
    return recall, precision


def retrieval_scores(
    evidence: Sequence[str], retrieved: Sequence[str], cited: Sequence[str]
) -> dict[str, float | None]:
    """Recall and precision of the records read and of the records cited against the
    sample's evidence (None where undefined: no evidence, or nothing read/cited)."""
    wanted = set(evidence)
    r_recall, r_precision = _recall_precision(wanted, retrieved)
    c_recall, c_precision = _recall_precision(wanted, cited)
    return {
        "retrieval_recall": r_recall,
        "retrieval_precision": r_precision,
        "citation_recall": c_recall,
        "citation_precision": c_precision,
    }
