"""What the planner may choose from: the chart's own codes, ranked by similarity to the question.

A small model cannot be trusted to invent a LOINC code or even a resource type, so each
decision is an enum built from what the patient's chart really holds, best candidates first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel

from wardround.chart.analyte import core_words, fit, named_words, names, names_result
from wardround.fhir.manifest import CodeSummary, Manifest

# Types a question may ask about as a whole ("active medications", "allergies"); offered even
# when the chart holds none, so "nothing is recorded" is a retrievable answer.
LIST_TYPES: dict[str, str] = {
    "MedicationRequest": "all medications (prescriptions)",
    "Condition": "all conditions, problems and diagnoses",
    "AllergyIntolerance": "all allergies and intolerances",
    "Immunization": "all immunizations and vaccines",
    "Encounter": "all encounters and visits",
    "Procedure": "all procedures",
    "DiagnosticReport": "all diagnostic reports",
    "DocumentReference": "all clinical notes and documents",
}
CODED_TYPES = ("Observation", "Condition", "MedicationRequest", "Procedure", "Immunization")


# The option a model picks when the chart holds nothing the question is about.
NOT_IN_CHART = "none of these: not recorded in this chart"


class Option(BaseModel):
    label: str  # what the model sees and picks
    resource_type: str
    code: str | None = None  # FHIR token `system|code`; None means every record of the type
    component: str | None = None  # read this component's code inside each record
    score: float = 0.0  # cosine similarity to the question

    @property
    def name(self) -> str:
        """The label without its `[Type]` suffix."""
        return self.label.rsplit(" [", 1)[0]


Similarity = Callable[[str, Sequence[str]], np.ndarray]


def _coded(code: CodeSummary) -> Option:
    label = f"{code.display} [{code.resource_type}]"
    if code.component_of:  # searched by the panel's code, read from the component
        return Option(
            label=label, resource_type=code.resource_type, code=code.component_of,
            component=code.code,
        )  # fmt: skip
    return Option(label=label, resource_type=code.resource_type, code=code.token)


def whole_type(resource_type: str) -> Option:
    text = LIST_TYPES[resource_type]
    return Option(label=f"{text} [{resource_type}]", resource_type=resource_type)


def candidates(manifest: Manifest) -> list[Option]:
    """Every retrieval the chart allows: whole types, then each code, labels unique."""
    found = {o.label: o for o in map(whole_type, LIST_TYPES)}
    for code in manifest.codes:
        if code.resource_type in CODED_TYPES and code.token is not None:
            option = _coded(code)
            found.setdefault(option.label, option)
    return list(found.values())


def build_options(
    manifest: Manifest, question: str, similarity: Similarity, top_k: int = 8
) -> list[Option]:
    """The whole-type options, always and in a fixed order (a list question must never lose
    them to a similar-sounding code, and a fixed prefix is reused by the prompt cache), then
    the `top_k` codes most similar to the question."""
    options = candidates(manifest)
    fixed, coded = options[: len(LIST_TYPES)], options[len(LIST_TYPES) :]
    scores = similarity(question, [o.label for o in coded]) + analyte_adjustments(question, coded)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return fixed + [coded[i].model_copy(update={"score": float(scores[i])}) for i in order]


def analyte_adjustments(question: str, options: Sequence[Option]) -> np.ndarray:
    """Score changes from the LOINC parts of each result's name (see `analyte`): nearest in
    words is not the same test. Only results carry LOINC-style names."""
    return np.array(
        [fit(question, o.name).adjustment if o.resource_type == "Observation" else 0.0
         for o in options]
    )  # fmt: skip


def settle_choice(question: str, chosen: Option, options: Sequence[Option]) -> Option | None:
    """The model's result choice, checked against the question's qualifiers.

    A variant of the same test that fits better replaces it (total cholesterol asked, HDL
    chosen). When the question names a qualifier that no variant carries (LDL asked, only
    HDL and total charted), the chart does not hold the test asked for: None. So too when
    the question names nothing of the chosen result and no other result either (eGFR asked,
    only creatinine charted): the model took the nearest test, not the one asked for; a
    question naming a charted condition may mean its test ("diabetes control": HbA1c).
    """
    if chosen.resource_type != "Observation" or not chosen.code:
        return chosen
    if not names_result(question, chosen.name) and not _names_condition(question, options):
        named = [o for o in _results(options) if names_result(question, o.name)]
        if not named:
            return None
        chosen = max(named, key=lambda o: _rank(question, o))
    if not fit(question, chosen.name).hard:
        return _better_named(question, chosen, options) or chosen
    core = core_words(chosen.name)
    siblings = [o for o in _results(options) if core & core_words(o.name)]
    best = max([chosen, *siblings], key=lambda o: _rank(question, o))
    if fit(question, best.name).missing:
        return None
    return best


def _names_condition(question: str, options: Sequence[Option]) -> bool:
    return any(o.resource_type == "Condition" and names(question, o.name) for o in options)


def _results(options: Sequence[Option]) -> list[Option]:
    return [o for o in options if o.resource_type == "Observation" and o.code]


def _rank(question: str, option: Option) -> tuple[int, int, float]:
    found = fit(question, option.name)
    return (-found.missing, -found.extra, found.adjustment + option.score)


def _better_named(question: str, chosen: Option, options: Sequence[Option]) -> Option | None:
    """A result the question names word for word, when the chosen one it names only in
    part ("lowest body mass index": Body Height chosen, Body mass index charted)."""
    held, total = named_words(question, chosen.name)
    if held == total:
        return None
    whole = [
        (n, o) for o in _results(options) if not fit(question, o.name).hard
        for n, of in [named_words(question, o.name)] if n == of and n > held
    ]  # fmt: skip
    return max(whole, key=lambda pair: pair[0])[1] if whole else None


def settle_name(question: str, chosen: str, values: Sequence[str]) -> str:
    """A chart tool's name argument (a test, an item, a list), checked against the
    question's words as `settle_choice` checks the planner's: a value the question names
    whole, with no qualifier against it, over one it names in part or not at all
    (allergies asked, medications chosen; BMI asked, the BMI percentile chosen); when the
    question names none of them, or each one it names lacks a qualifier or the specimen it
    asks for, "not recorded" where the values offer it."""
    named = [v for v in values if v != NOT_IN_CHART and names_result(question, v)]
    fitting = [v for v in named if not fit(question, v).hard]
    if not fitting:
        # As `settle_choice`: every named one lacks what the question asks (serum potassium
        # asked, only blood potassium charted): the chart does not hold it.
        lacking = all(fit(question, v).missing for v in named)
        return NOT_IN_CHART if lacking and NOT_IN_CHART in values else chosen
    best = max(fitting, key=lambda v: _share(question, v))
    if chosen in fitting and _share(question, chosen) >= _share(question, best):
        return chosen
    return best


def _share(question: str, value: str) -> tuple[float, int]:
    held, total = named_words(question, value)
    return (held / total if total else 0.0, held)
