"""Which test a question names, read from the parts of LOINC display names.

Embedding similarity puts "Cholesterol in HDL" next to "total cholesterol" and "Hemoglobin
A1c" next to "hemoglobin": the words are shared, the analytes are not. A LOINC display is
`Component [Property] in System by Method`, and the component or system carries the words
that tell such pairs apart (HDL, A1c, ionized, Urine...). A candidate carrying a qualifier
the question does not name, or lacking one it names, is a different test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Qualifiers from LOINC's own naming: key -> (how a question names it, how a display marks it).
# Each is a set of lower-case phrases matched on word boundaries.
QUALIFIERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "hdl": (frozenset({"hdl", "high density", "high-density", "good cholesterol"}),
            frozenset({"hdl"})),
    "ldl": (frozenset({"ldl", "low density", "low-density", "bad cholesterol"}),
            frozenset({"ldl"})),
    "vldl": (frozenset({"vldl", "very low density"}), frozenset({"vldl"})),
    "a1c": (frozenset({"a1c", "hba1c", "glycated", "glycosylated", "glycohemoglobin"}),
            frozenset({"a1c"})),
    "ionized": (frozenset({"ionized", "ionised", "free calcium"}), frozenset({"ionized"})),
    "direct": (frozenset({"direct", "conjugated"}), frozenset({"direct"})),
    "ratio": (frozenset({"ratio"}), frozenset({"mass ratio", "molar ratio"})),
    "percentile": (frozenset({"percentile"}), frozenset({"percentile"})),
    "systolic": (frozenset({"systolic"}), frozenset({"systolic"})),
    "diastolic": (frozenset({"diastolic"}), frozenset({"diastolic"})),
    "width": (frozenset({"distribution width", "rdw", "pdw"}),
              frozenset({"distribution width"})),
    "mean": (frozenset({"mean", "mcv", "mch", "mchc", "mpv", "corpuscular"}),
             frozenset({"mean", "mcv", "mch", "mchc"})),
    "micro": (frozenset({"microalbumin"}), frozenset({"microalbumin"})),
}  # fmt: skip

# Specimen systems (the part after "] in "). Urine, arterial blood or CSF make a different
# test; blood against serum or plasma is a softer difference (people say "blood sugar" for
# a serum glucose), so it only ranks, it never rules a candidate out.
SYSTEMS: dict[str, frozenset[str]] = {
    "urine": frozenset({"urine", "urinary", "urinalysis"}),
    "arterial": frozenset({"arterial", "abg"}),
    "venous": frozenset({"venous"}),
    "capillary": frozenset({"capillary"}),
    "csf": frozenset({"csf", "cerebral spinal fluid", "spinal fluid", "cerebrospinal"}),
    "stool": frozenset({"stool", "fecal", "faecal", "feces"}),
    "serum": frozenset({"serum", "plasma"}),
    "blood": frozenset({"blood"}),
}
SOFT_SYSTEMS = frozenset({"serum", "blood"})
# "Serum" or "plasma" is a word people choose on purpose: asked, a whole-blood test is not it.
# Phrases in which "blood" names no specimen.
_NOT_SPECIMEN = re.compile(r"\b(blood pressure|white blood|red blood|blood cell)s?\b")

# Abbreviations clinicians write for a component (LOINC's own component names).
SYNONYMS: dict[str, str] = {
    "egfr": "glomerular filtration rate", "gfr": "glomerular filtration rate",
    "bun": "urea nitrogen", "wbc": "leukocytes", "white blood cell": "leukocytes",
    "rbc": "erythrocytes", "red blood cell": "erythrocytes", "hgb": "hemoglobin",
    "haemoglobin": "hemoglobin", "hct": "hematocrit", "plt": "platelets",
    "platelet": "platelets", "bmi": "body mass index", "tsh": "thyrotropin",
    "alt": "alanine aminotransferase", "ast": "aspartate aminotransferase",
    "alp": "alkaline phosphatase", "co2": "carbon dioxide", "bicarbonate": "carbon dioxide",
    "sugar": "glucose", "crp": "c reactive protein", "psa": "prostate specific ag",
    "pulse": "heart rate", "weight": "body weight", "height": "body height",
    "temperature": "body temperature", "spo2": "oxygen saturation",
    "smoking": "tobacco smoking status", "smoker": "tobacco smoking status",
    "smoke": "tobacco smoking status", "smokes": "tobacco smoking status",
    "flu": "influenza", "mi": "myocardial infarction", "afib": "atrial fibrillation",
    "htn": "hypertension", "copd": "chronic obstructive", "ckd": "chronic kidney disease",
    "uti": "urinary tract infection", "dm": "diabetes",
    "temp": "body temperature", "fever": "body temperature", "bp": "blood pressure",
    "hr": "heart rate", "rr": "respiratory rate", "sats": "oxygen saturation",
    "o2": "oxygen saturation", "chol": "cholesterol", "trigs": "triglycerides",
    "tg": "triglycerides", "lipids": "cholesterol triglycerides", "k": "potassium",
    "na": "sodium", "kidney function": "glomerular filtration rate creatinine",
    "renal function": "glomerular filtration rate creatinine",
    "liver enzymes": "alanine aminotransferase aspartate aminotransferase",
    "hba1c": "hemoglobin a1c", "a1c": "hemoglobin a1c", "weigh": "body weight",
    "heavy": "body weight", "tall": "body height", "phq": "patient health questionnaire",
    "gad": "generalized anxiety disorder", "audit": "alcohol use disorder identification",
}  # fmt: skip

PENALTY = 0.3  # per hard mismatch: more than the gap between near neighbours in MiniLM
SOFT_PENALTY = 0.1
BONUS = 0.15  # the question names the candidate's component (or its abbreviation)


@dataclass(frozen=True)
class Parts:
    """A LOINC display's parts, lower case; `system` is None when the display names none."""

    component: str
    prop: str = ""
    system: str | None = None

    @property
    def text(self) -> str:
        return " ".join(x for x in (self.component, self.prop, self.system) if x)


# LOINC writes the lipoproteins both ways ("Cholesterol in LDL", "Low Density Lipoprotein
# Cholesterol"); the spelled-out forms become the short ones before anything is compared.
_SPELLED = [(re.compile(r"\bvery[- ]low[- ]density\b"), "vldl"),
            (re.compile(r"\blow[- ]density\b"), "ldl"),
            (re.compile(r"\bhigh[- ]density\b"), "hdl")]  # fmt: skip


def _canon(text: str) -> str:
    for pattern, short in _SPELLED:
        text = pattern.sub(short, text)
    return text


def parts_of(display: str) -> Parts:
    """`Cholesterol in HDL [Mass/volume] in Serum or Plasma by ...` -> component `cholesterol
    in hdl`, property `mass/volume`, system `serum or plasma`. Without brackets, a trailing
    `in <specimen>` is the system (`Hemoglobin A1c/Hemoglobin.total in Blood`)."""
    text = _canon(display.lower().strip())
    head, bracket, rest = text.partition("[")
    if bracket:
        prop, _, after = rest.partition("]")
        found = re.match(r"\s*(?:in|of)\s+(.+?)(?:\s+by\s+.*)?$", after)
        return Parts(head.strip(), prop.strip(), found.group(1).strip() if found else None)
    component, sep, tail = head.rpartition(" in ")
    specimen = any(_has(tail, words) for words in SYSTEMS.values())
    return Parts(component.strip(), "", tail.strip()) if sep and specimen else Parts(head)


def _has(text: str, phrases: frozenset[str]) -> bool:
    return any(re.search(rf"(?<![a-z0-9]){re.escape(p)}(?![a-z0-9])", text) for p in phrases)


def question_terms(question: str) -> str:
    """The question in lower case, abbreviations spelled out beside themselves."""
    text = _canon(question.lower().replace("?", " "))
    extra = [full for short, full in SYNONYMS.items() if _has(text, frozenset({short}))]
    return " ".join([text, *extra])


def _system_of(parts: Parts) -> str | None:
    if parts.system is None:
        return None
    return next((key for key, words in SYSTEMS.items() if _has(parts.system, words)), None)


def _systems_named(question: str) -> set[str]:
    text = _NOT_SPECIMEN.sub(" ", question)
    return {key for key, words in SYSTEMS.items() if _has(text, words)}


@dataclass(frozen=True)
class Fit:
    """How a candidate's display fits the analyte a question names."""

    missing: int  # qualifiers or specimens the question names and the candidate lacks
    extra: int  # ones the candidate carries and the question does not name
    soft: int  # blood against serum or plasma
    named: bool  # the question names the candidate's component

    @property
    def hard(self) -> int:
        return self.missing + self.extra

    @property
    def adjustment(self) -> float:
        return -PENALTY * self.hard - SOFT_PENALTY * self.soft + (BONUS if self.named else 0.0)


def fit(question: str, display: str) -> Fit:
    """Compare the qualifiers and specimen the question names with those of a display."""
    terms, parts = question_terms(question), parts_of(display)
    asked = [_has(terms, words) for words, _ in QUALIFIERS.values()]
    carried = [_has(parts.text, marks) for _, marks in QUALIFIERS.values()]
    missing = sum(a and not c for a, c in zip(asked, carried, strict=True))
    extra = sum(c and not a for a, c in zip(asked, carried, strict=True))
    soft = 0
    system, named = _system_of(parts), _systems_named(terms)
    if named and system not in named:
        if system == "serum" and named == {"blood"}:
            soft += 1  # "blood sugar" for a serum glucose
        elif system is not None or not named <= SOFT_SYSTEMS:
            missing += 1  # urine asked, a blood test offered (or no specimen at all)
    elif system is not None and not named and system not in SOFT_SYSTEMS:
        extra += 1  # a urine or arterial test the question does not ask for
    return Fit(missing, extra, soft, _names_component(terms, parts.component))


def _names_component(terms: str, component: str) -> bool:
    """The question holds the component's first word (`cholesterol`, `glucose`)."""
    words = re.findall(r"[a-z][a-z0-9]+", component)
    return bool(words) and _has(terms, frozenset({words[0]}))


def core_words(display: str) -> set[str]:
    """The component's words, qualifiers left out: what two variants of one test share."""
    component = parts_of(display).component
    marks = {m for _, found in QUALIFIERS.values() for m in found}
    return {w for w in re.findall(r"[a-z][a-z0-9]+", component) if w not in marks | {"in"}}


def named_words(question: str, display: str) -> tuple[int, int]:
    """How many of a display's component words (parenthesised abbreviations left out) the
    question holds, and how many there are: "body height" holds 1 of 2 words of "lowest
    body mass index", "Body mass index (BMI)" 3 of 3."""
    component = re.sub(r"\([^)]*\)", " ", parts_of(display).component)
    words = set(re.findall(r"[a-z][a-z0-9]+", component)) - {"in", "of", "the", "by"}
    terms = question_terms(question)
    return sum(_has(terms, frozenset({w})) for w in words), len(words)


# Words every question holds (and survey items' names spell out): they name no record.
_QUESTION_WORDS = frozenset({"what", "which", "when", "how", "many", "much", "was", "were",
                             "is", "are", "you", "your", "have", "has", "had", "did", "does",
                             "all", "any", "from", "before", "after", "last", "year", "since",
                             "most", "recent", "latest", "patient", "result", "record", "date",
                             "time", "ever", "value", "during", "past", "been", "current",
                             "list", "show", "pull", "reading", "newest", "can", "for",
                             "this", "that", "with", "on", "at", "to", "an", "up", "me",
                             "her", "his", "she", "he", "it", "please", "give", "tell"})  # fmt: skip
# Words of a record's name that say nothing of what it is.
NAME_FILLER = _QUESTION_WORDS | {"disorder", "finding", "procedure", "situation", "of", "the",
                                 "and", "with", "for", "in", "on", "by", "to", "oral", "tablet",
                                 "mg"}  # fmt: skip
# Words of a LOINC display that name no analyte: a question holding only these names none.
NOT_ANALYTE = _QUESTION_WORDS | {"in", "of", "the", "by", "or", "and", "per", "total", "score",
                                 "count", "panel", "level", "mass", "volume", "moles", "number",
                                 "rate", "blood", "serum", "plasma", "automated", "manual",
                                 "predicted", "reported", "measured", "method", "test", "item",
                                 "fraction", "presence", "entitic", "sq"}  # fmt: skip


def names(question: str, name: str, filler: frozenset[str] = NAME_FILLER) -> bool:
    """The question names the record: a word of its name that is not filler is in the
    question, abbreviations spelled out; three letters or more match by their first five
    ("diabetic" for "diabetes"), two letters as a whole word."""
    terms = question_terms(question)
    words = set(re.findall(r"[a-z][a-z0-9]+", _canon(name.lower()))) - filler
    return any(
        re.search(rf"\b{re.escape(w[:5])}" if len(w) > 2 else rf"\b{w}\b", terms) for w in words
    )


def names_result(question: str, display: str) -> bool:
    """The question names the result at all: a word of the display that names an analyte
    (abbreviations in parentheses included), or a qualifier it carries (HbA1c). "eGFR" names
    no creatinine, "AST" no AUDIT-C score."""
    if names(question, display, NOT_ANALYTE):
        return True
    terms, text = question_terms(question), _canon(display.lower())
    return any(_has(terms, asked) and _has(text, marks) for asked, marks in QUALIFIERS.values())
