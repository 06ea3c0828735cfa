"""Words that decide a question's kind over the model's choice, and the fixes behind the
misses measured on the new kinds (a procedure for a diagnosis, Body Height for BMI, a
saline order for a magnesium result, a limit on the latest value, LDL spelled out).

Phrasings here are our own and differ from the bench's (bench/ehrqa_kinds.py); the same
fixes on a real chart are in test_ehr_qa_kinds_new.py."""

from __future__ import annotations

import pytest

from wardround.chart.analyte import fit, named_words
from wardround.chart.dates import find_window
from wardround.chart.kinds import Kind
from wardround.chart.options import Option, settle_choice
from wardround.chart.steer import kind_from_words, steer


def _obs(name: str) -> Option:
    return Option(label=f"{name} [Observation]", resource_type="Observation", code=f"x|{name}")


def _of(rtype: str, name: str = "x") -> Option:
    return Option(label=f"{name} [{rtype}]", resource_type=rtype, code=f"x|{name}")


STEERED = [
    ("Number of A1c results on file", Kind.LATEST, _obs("A1c"), Kind.COUNT),
    ("how often has her potassium been checked", Kind.TREND, _obs("K"), Kind.COUNT),
    ("What's the max systolic she's had", Kind.LATEST, _obs("SBP"), Kind.HIGHEST),
    ("nadir of her platelets", Kind.TREND, _obs("PLT"), Kind.LOWEST),
    ("smallest weight on record", Kind.OTHER, _obs("Weight"), Kind.LOWEST),
    ("Did any potassium exceed 5.5 in 2021?", Kind.EVER, _obs("K"), Kind.THRESHOLD),
    ("glucose > 180 ever?", Kind.LATEST, _obs("Glu"), Kind.THRESHOLD),
    ("When did she begin lisinopril?", Kind.LATEST, _of("MedicationRequest"), Kind.STARTED),
    ("hypertension, initially identified when?", Kind.EVER, _of("Condition"),
     Kind.FIRST_DIAGNOSED),
    ("earliest creatinine", Kind.LATEST, _obs("Cr"), Kind.FIRST),
    ("what was done at the 3/4/2021 appointment", Kind.OTHER, None, Kind.HAPPENED),
    ("shots given during 2019", Kind.CURRENT, _of("Immunization"), Kind.HAPPENED),
    ("Ever had a colonoscopy?", Kind.LATEST, _of("Procedure"), Kind.EVER),
    ("Any hx of gout", Kind.OTHER, None, Kind.EVER),
    ("# of times her A1c was drawn", Kind.TREND, _obs("A1c"), Kind.COUNT),
    ("2019 - what vaccines?", Kind.CURRENT, _of("Immunization"), Kind.HAPPENED),
]  # fmt: skip
KEPT = [
    ("What was the potassium on 2021-03-04", Kind.ON_DATE, _obs("K")),
    ("How old was she in 2010", Kind.AGE, None),
    ("Did she get a flu shot in 2020", Kind.EVER, _of("Immunization")),  # yes/no, not a list
    ("latest LDL", Kind.LATEST, _obs("LDL")),
    ("is her creatinine going up", Kind.TREND, _obs("Cr")),
    ("which meds is she on now", Kind.CURRENT, None),
    ("BP at the visit on 2020-01-02", Kind.ON_DATE, _obs("BP")),  # one test's value that day
]


@pytest.mark.parametrize(("question", "chosen", "option", "want"), STEERED)
def test_words_that_decide_the_kind(question, chosen, option, want) -> None:
    assert steer(question, chosen, find_window(question), option) is want


@pytest.mark.parametrize(("question", "chosen", "option"), KEPT)
def test_the_models_choice_stands_where_no_word_decides(question, chosen, option) -> None:
    assert steer(question, chosen, find_window(question), option) is chosen


def test_ldl_spelled_out_is_still_ldl() -> None:
    spelled = "Low Density Lipoprotein Cholesterol"
    assert fit("LDL above 130 in 2005?", spelled).hard == 0
    assert fit("latest HDL", spelled).hard == 2  # HDL asked, LDL carried
    assert fit("VLDL", "Very Low Density Lipoprotein Cholesterol").hard == 0
    options = [_obs(spelled), _obs("High Density Lipoprotein Cholesterol")]
    assert settle_choice("was the LDL ever over 109", options[0], options) is options[0]
    assert settle_choice("was the HDL ever over 60", options[0], options) is options[1]


def test_a_result_named_in_part_gives_way_to_one_named_word_for_word() -> None:
    height, bmi = _obs("Body Height"), _obs("Body mass index (BMI) [Ratio]")
    weight = _obs("Body Weight")
    options = [height, bmi, weight]
    assert named_words("lowest body mass index", "Body Height") == (1, 2)
    assert settle_choice("lowest body mass index", height, options) is bmi
    assert settle_choice("lowest BMI", height, options) is bmi
    assert settle_choice("how tall is she", height, options) is height  # no word named: kept
    assert settle_choice("latest weight", weight, options) is weight


def test_a_year_a_terse_question_starts_with_is_its_window() -> None:
    window = find_window("2019 - what vaccines did she get?")
    assert window is not None and window.year and window.start.isoformat() == "2019-01-01"
    assert find_window("2019-03-04 labs?") is not None and not find_window("2019-03-04").year
    assert find_window("200 mg twice daily") is None


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("what age is she now", Kind.AGE),
        ("when did we last see him? last visit date", Kind.LAST_VISIT),
        ("is he intolerant of anything, any allergies", Kind.CURRENT),
        ("meds he's currently taking", Kind.CURRENT),
        ("# of A1c checks on file", Kind.COUNT),
        ("peak troponin", Kind.HIGHEST),
        ("any new problems since 3/4/2022?", Kind.SINCE),
        ("did the creatinine go up or down", Kind.TREND),
        ("sodium on 2019-02-03", Kind.ON_DATE),
        ("newest TSH", Kind.LATEST),
        ("what does the chart say about her kidneys", None),
    ],
)
def test_the_words_alone_decide_a_kind_or_leave_it_open(question: str, kind: Kind | None) -> None:
    assert kind_from_words(question) == kind
