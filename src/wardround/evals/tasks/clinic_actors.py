"""The simulated people of an AgentClinic case, grounded in the case's own facts.

- `RetrievalPatient` answers the doctor from the case's patient facts only: the facts most
  similar to the question (BM25), or, when nothing matches, the next fact of its history not
  yet told. It cannot invent symptoms, and the same question always gets the same answer.
- `Measurement` answers `REQUEST TEST: x` from the case's test results and examination
  findings, matched by name (with common abbreviations); a test the case does not hold
  comes back as normal, as in the original benchmark.
- `diagnosis_matches` is the moderator: normalised matching with synonyms (abbreviations,
  eponyms, spelling variants) against the case's correct diagnosis.
LLM-backed actors and an LLM moderator live in agentclinic.py, chosen by task options.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rank_bm25 import BM25Okapi

from wardround.evals.scorers import normalise

# ---------------------------------------------------------------- words

_SPELLING = {
    "tumour": "tumor",
    "haemorrhoids": "hemorrhoids",
    "haemophilia": "hemophilia",
    "oesophageal": "esophageal",
    "leukaemia": "leukemia",
    "anaemia": "anemia",
    "haemorrhage": "hemorrhage",
    "oedema": "edema",
    "ischaemia": "ischemia",
    "behaviour": "behavior",
    "physiologic": "physiological",
    "disk": "disc",
    "tumours": "tumor",
    "tumors": "tumor",
}
_GENERIC = frozenset(
    {
        "disease",
        "syndrome",
        "disorder",
        "infection",
        "the",
        "of",
        "with",
        "and",
        "at",
        "its",
        "in",
        "due",
        "to",
    }
)
_QUESTION_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "do",
        "does",
        "did",
        "you",
        "your",
        "have",
        "has",
        "had",
        "any",
        "what",
        "when",
        "where",
        "how",
        "why",
        "which",
        "who",
        "can",
        "could",
        "would",
        "please",
        "tell",
        "me",
        "about",
        "i",
        "we",
        "it",
        "this",
        "that",
        "there",
    ]
)


def _stem(word: str) -> str:
    word = _SPELLING.get(word, word)
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    text = re.sub(r"['’]s\b", "", text)  # possessives: Hirschsprung's -> Hirschsprung
    return [_stem(w) for w in normalise(text).split()]


# ---------------------------------------------------------------- case facts


def flatten(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(key path, text) for every leaf of a nested case section."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from flatten(value, (*path, str(key)))
    elif isinstance(node, list):
        yield path, "; ".join(str(v) for v in node)
    elif node not in (None, ""):
        yield path, str(node)


def _label(path: tuple[str, ...]) -> str:
    return " ".join(p.replace("_", " ") for p in path)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


# ---------------------------------------------------------------- patient


@dataclass
class RetrievalPatient:
    """A patient who answers from the case's `Patient_Actor` facts only."""

    facts: list[str]
    told: set[int] = field(default_factory=set)
    top_k: int = 2

    @classmethod
    def from_case(cls, case: dict[str, Any]) -> RetrievalPatient:
        actor = case.get("Patient_Actor") or {}
        facts: list[str] = []
        for path, text in flatten(actor):
            label = _label(path[-1:]).lower()
            if label in {"history", "review of systems", "social history", "past medical history"}:
                facts += [f"{s}" for s in _sentences(text)]
            elif label == "primary symptom":
                facts.insert(0, f"My main problem is: {text}.")
            elif label == "secondary symptoms":
                facts.append(f"I also have: {text}.")
            elif label == "demographics":
                facts.append(f"I am a {text}.")
            else:
                facts.append(f"{label.capitalize()}: {text}")
        return cls(facts=facts or ["I don't know."])

    def __post_init__(self) -> None:
        self._index = BM25Okapi([words(f) or ["_"] for f in self.facts])

    def reply(self, question: str) -> str:
        query = [w for w in words(question) if w not in _QUESTION_STOP]
        scores = self._index.get_scores(query) if query else [0.0] * len(self.facts)
        ranked = sorted(range(len(self.facts)), key=lambda i: (-scores[i], i))
        picked = [i for i in ranked[: self.top_k] if scores[i] > 0]
        if not picked:  # nothing relevant: volunteer the next untold fact, in case order
            untold = [i for i in range(len(self.facts)) if i not in self.told]
            picked = untold[:1] or [0]
        self.told.update(picked)
        return " ".join(self.facts[i] for i in sorted(picked))


# ---------------------------------------------------------------- measurement

_TEST_SYNONYMS = {
    "cbc": "complete blood count",
    "fbc": "complete blood count",
    "bmp": "metabolic panel",
    "cmp": "metabolic panel",
    "lft": "liver function test",
    "lfts": "liver function test",
    "ecg": "electrocardiogram",
    "ekg": "electrocardiogram",
    "eeg": "electroencephalogram",
    "emg": "electromyography",
    "ct": "ct computed tomography",
    "cxr": "chest x ray",
    "xray": "x ray",
    "radiograph": "x ray",
    "radiography": "x ray",
    "ua": "urinalysis",
    "echo": "echocardiogram",
    "us": "ultrasound",
    "usg": "ultrasound",
    "tft": "thyroid function test",
    "tfts": "thyroid function test",
    "abg": "blood gas",
    "mri": "mri magnetic resonance",
    "pft": "pulmonary function test",
    "lp": "lumbar puncture",
    "exam": "examination",
    "physical": "physical examination",
}
_TEST_GENERIC = frozenset(
    {
        "test",
        "result",
        "level",
        "levels",
        "study",
        "studie",
        "panel",
        "finding",
        "the",
        "of",
        "a",
        "and",
        "for",
        "scan",
        "serum",
    }
)


def _test_words(text: str) -> set[str]:
    expanded = " ".join(_TEST_SYNONYMS.get(w, w) for w in normalise(text).split())
    return {w for w in words(expanded) if w not in _TEST_GENERIC}


@dataclass
class Measurement:
    """Answers test requests from the case's `Test_Results` and `Physical_Examination_Findings`."""

    sections: dict[str, dict[str, Any]]

    @classmethod
    def from_case(cls, case: dict[str, Any]) -> Measurement:
        return cls(
            {
                "Physical_Examination_Findings": case.get("Physical_Examination_Findings") or {},
                "Test_Results": case.get("Test_Results") or {},
            }
        )

    def _nodes(self) -> Iterator[tuple[tuple[str, ...], Any]]:
        """Every named group and leaf, with its path (the section name left out)."""

        def walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
            if path:
                yield path, node
            if isinstance(node, dict):
                for key, value in node.items():
                    yield from walk(value, (*path, str(key)))

        for section in self.sections.values():
            yield from walk(section, ())

    def lookup(self, test: str) -> tuple[tuple[str, ...], Any] | None:
        wanted = _test_words(test)
        if not wanted:
            return None
        if wanted & {"physical", "examination"} and len(wanted - {"physical", "examination"}) == 0:
            return ("Physical_Examination_Findings",), self.sections[
                "Physical_Examination_Findings"
            ]
        best: tuple[float, int, tuple[str, ...], Any] | None = None
        for path, node in self._nodes():
            have = _test_words(_label(path))
            if not have:
                continue
            overlap = len(wanted & have)
            asked, named = overlap / len(wanted), overlap / len(have)
            if asked < 0.5 or named < 0.5:  # cover half of what was asked and of the name
                continue
            score = asked + named  # the best cover wins; among equals, the shallower group
            if best is None or (score, -len(path)) > (best[0], best[1]):
                best = (score, -len(path), path, node)
        return (best[2], best[3]) if best else None

    def reply(self, test: str) -> str:
        found = self.lookup(test)
        if found is None:
            return "RESULTS: NORMAL READINGS"
        path, node = found
        if not isinstance(node, dict | list):
            return f"RESULTS: {_label(path)}: {node}"
        shown = "; ".join(f"{_label(p)}: {t}" if p else t for p, t in flatten(node))
        return f"RESULTS: {_label(path)}: {shown}"


# ---------------------------------------------------------------- moderator

# Accepted other names, keyed by the normalised correct diagnosis of a case.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "progressive multifocal encephalopathy": ("progressive multifocal leukoencephalopathy", "pml"),
    "progressive multifocal leukoencephalopathy": ("pml",),
    "diffuse large b cell lymphoma": ("dlbcl",),
    "c difficile colitis": (
        "clostridioides difficile colitis",
        "clostridium difficile colitis",
        "c diff colitis",
        "pseudomembranous colitis",
        "clostridioides difficile infection",
        "clostridium difficile infection",
        "c difficile infection",
        "c diff infection",
    ),
    "steven johnson syndrome": ("stevens johnson syndrome", "sjs"),
    "benign paroxysmal positional vertigo": ("bppv",),
    "chronic lymphocytic leukemia": ("cll",),
    "acute lymphoblastic leukemia": ("acute lymphocytic leukemia",),
    "acute myelogenous leukemia": ("acute myeloid leukemia", "aml"),
    "osteoclastoma": ("giant cell tumor", "giant cell tumor of bone"),
    "atrial septal defect": ("asd",),
    "respiratory distress syndrome": ("hyaline membrane disease",),
    "neonatal respiratory distress syndrome": (
        "hyaline membrane disease",
        "nrds",
        "respiratory distress syndrome",
    ),
    "pelvic inflammatory disease": ("pid",),
    "irritable bowel syndrome": ("ibs",),
    "reactive arthritis": ("reiter syndrome",),
    "erythema infectiosum": ("fifth disease", "parvovirus b19 infection"),
    "roseola infantum": ("roseola", "exanthem subitum", "sixth disease"),
    "hemophilia a": ("factor viii deficiency",),
    "legg calve perthes disease": ("perthes disease", "legg calve perthes"),
    "bowen disease": ("squamous cell carcinoma in situ",),
    "frontotemporal dementia": ("ftd",),
    "huntington disease": ("huntington chorea",),
    "adhesive capsulitis": ("frozen shoulder",),
    "pes anserine bursitis": ("pes anserinus bursitis",),
    "waldenstrom macroglobulinemia": ("lymphoplasmacytic lymphoma",),
    "congenital rubella infection": ("congenital rubella syndrome", "congenital rubella"),
    "disseminated gonococcal infection": ("disseminated gonococcemia", "disseminated gonorrhea"),
    "tuberculosis": ("tb", "pulmonary tuberculosis"),
    "cytomegalovirus retinitis": ("cmv retinitis",),
    "neuroleptic malignant syndrome": ("nms",),
    "multiple system atrophy": ("msa",),
    "essential thrombocythemia": ("essential thrombocytosis",),
    "fulminant hepatic failure": ("acute liver failure", "fulminant liver failure"),
    "uterine rupture": ("ruptured uterus",),
    "disc herniation": ("herniated disc", "herniated nucleus pulposus", "lumbar disc herniation"),
    "posterior hip dislocation": ("posterior dislocation of the hip",),
    "rupture of the flexor digitorum profundus tendon at its point of insertion": (
        "jersey finger",
        "flexor digitorum profundus avulsion",
        "fdp avulsion",
        "flexor digitorum profundus tendon rupture",
        "fdp tendon rupture",
    ),
    "physiological neonatal jaundice": (
        "physiological jaundice",
        "physiological jaundice of the newborn",
    ),
    "impaired erythropoietin production": ("erythropoietin deficiency",),
    "lisdexamfetamine intoxication": ("amphetamine intoxication",),
    "apical lung tumor": ("pancoast tumor", "superior sulcus tumor"),
    "genitopelvic pain disorder": ("genito pelvic pain penetration disorder", "vaginismus"),
    "intraventricular hemorrhage": ("ivh",),
    "coarctation of the aorta": ("aortic coarctation",),
    "boerhaave syndrome": ("esophageal rupture", "spontaneous esophageal perforation"),
    "hemorrhoids": ("hemorrhoidal disease",),
    "medullary sponge kidney": ("cacchi ricci disease",),
    "breast milk jaundice": ("breastmilk jaundice",),
}
_ABBREVIATION = re.compile(r"\(([^)]*)\)")


def _key(diagnosis: str) -> str:
    return " ".join(words(diagnosis))


_SYNONYMS_BY_KEY = {_key(k): v for k, v in SYNONYMS.items()}


def _phrases(correct: str) -> list[str]:
    """The correct diagnosis, its bracketed abbreviation, and its synonyms, as phrases."""
    main = _ABBREVIATION.sub(" ", correct)
    abbreviations = [a.strip() for a in _ABBREVIATION.findall(correct) if a.strip()]
    return [main, *abbreviations, *_SYNONYMS_BY_KEY.get(_key(main), ())]


def _phrase_matches(diagnosis: str, phrase: str) -> bool:
    got = words(diagnosis)
    want = [w for w in words(phrase) if w not in _GENERIC]
    if not want:
        return False
    if len(want) == 1 and len(want[0]) <= 4:  # abbreviations must stand alone, e.g. "PML"
        return want[0] in got
    return all(w in got for w in want)


def diagnosis_matches(diagnosis: str, correct: str) -> bool:
    """Whether the doctor's diagnosis names the correct one (or an accepted other name)."""
    if not diagnosis.strip():
        return False
    return any(_phrase_matches(diagnosis, phrase) for phrase in _phrases(correct))
