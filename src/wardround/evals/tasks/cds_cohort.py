"""Synthetic patients for the `cds` task: one small chart per case, made so that every rule
in `tools.guidelines.rules` meets each of its decisions, near its thresholds too.

A case is a Patient with a few Conditions, MedicationRequests and results dated back from a
fixed "today", and for an order rule the draft order the EHR would send with `order-sign`
(kept in the sample, never written: drafts are hook context, not chart records). Ids are
fixed (`cds-<rule>-<n>...`), so seeding is a PUT of each resource and safe to repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from wardround.tools.guidelines import rules

TODAY = date(2025, 6, 30)
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

CONDITIONS = {
    "t2dm": ("44054006", "Diabetes mellitus type 2"),
    "htn": ("38341003", "Essential hypertension"),
    "ckd3": ("433144002", "Chronic kidney disease stage 3"),
    "hf": ("84114007", "Heart failure"),
    "prediabetes": ("15777000", "Prediabetes"),
}
LABS = {
    "hba1c": ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%"),
    "uacr": ("9318-7", "Albumin/Creatinine [Mass Ratio] in Urine", "mg/g"),
    "ldl": ("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
            "mg/dL"),
    "k": ("6298-4", "Potassium [Moles/volume] in Blood", "mmol/L"),
    "egfr": ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted", "mL/min/1.73m2"),
    "na": ("2947-0", "Sodium [Moles/volume] in Blood", "mmol/L"),
}  # fmt: skip
GIVEN = {"female": ["Ada", "Chloe", "Elif", "Greta", "Iris"],
         "male": ["Ben", "Dev", "Farid", "Hiro", "Jonas"]}  # fmt: skip
FAMILY = ["Abbott", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Gupta", "Haddad"]

Lab = tuple[str, int, float]  # (lab key, days before today, value)


@dataclass
class Case:
    rule: str
    n: int
    age: int
    labs: list[Lab]
    conditions: list[str] = field(default_factory=list)
    medications: list[str] = field(default_factory=list)  # active ones, by name
    order: str | None = None  # the draft order's medicine (or "HbA1c" for a lab order)

    @property
    def patient_id(self) -> str:
        return f"cds-{self.rule}-{self.n:02d}"


def _cases() -> list[Case]:
    t2 = ["t2dm"]
    cases: list[Case] = []

    def add(rule: str, items: list[tuple[Any, ...]]) -> None:
        for n, item in enumerate(items, 1):
            cases.append(Case(rule, n, *item))

    add(rules.HBA1C_INTERVAL.name, [
        (58, [("hba1c", 40, 6.4)], t2),
        (64, [("hba1c", 150, 6.8)], [*t2, "htn"]),
        (71, [("hba1c", 200, 6.5), ("na", 20, 139)], t2),
        (49, [("hba1c", 60, 8.2)], t2),
        (55, [("hba1c", 120, 7.4), ("hba1c", 300, 6.6)], [*t2, "htn"]),
        (67, [("na", 30, 141)], t2),
        (62, [("hba1c", 100, 6.9), ("hba1c", 190, 7.8)], t2),
        (46, [("hba1c", 95, 7.0), ("hba1c", 400, 6.2)], t2),
        (73, [("hba1c", 170, 5.9)], [*t2, "ckd3"]),
        (60, [("hba1c", 250, 7.1)], t2),
    ])  # fmt: skip
    add(rules.UACR_YEARLY.name, [
        (57, [("uacr", 100, 12)], t2),
        (66, [("uacr", 400, 25)], [*t2, "htn"]),
        (52, [("hba1c", 50, 7.2)], t2),
        (61, [("uacr", 300, 45), ("uacr", 700, 20)], t2),
        (70, [("uacr", 380, 8)], t2),
        (48, [("uacr", 20, 150)], [*t2, "ckd3"]),
        (63, [("uacr", 366, 18)], t2),
        (59, [("uacr", 364, 22)], t2),
        (74, [("uacr", 500, 10), ("uacr", 900, 9)], t2),
    ])  # fmt: skip
    statin = ["atorvastatin 20 MG Oral Tablet"]
    add(rules.LIPIDS_ON_STATIN.name, [
        (61, [("ldl", 90, 95)], ["htn"], statin),
        (68, [("ldl", 400, 110)], [], ["rosuvastatin 10 MG Oral Tablet"]),
        (55, [("k", 30, 4.2)], t2, statin),
        (72, [("ldl", 200, 130), ("ldl", 600, 160)], [], ["simvastatin 40 MG Oral Tablet"]),
        (50, [("ldl", 370, 88)], t2, statin),
        (64, [("ldl", 30, 70)], ["htn"], ["rosuvastatin 20 MG Oral Tablet"]),
        (58, [("ldl", 500, 120), ("ldl", 800, 140)], [], statin),
        (66, [("ldl", 360, 101)], t2, ["pravastatin 40 MG Oral Tablet"]),
    ])  # fmt: skip
    add(rules.POTASSIUM_ORDER.name, [
        (67, [("k", 2, 5.8)], ["htn"], [], "lisinopril 10 MG Oral Tablet"),
        (54, [("k", 5, 4.6)], ["htn"], [], "losartan potassium 50 MG Oral Tablet"),
        (78, [("k", 1, 6.3)], ["hf"], [], "spironolactone 25 MG Oral Tablet"),
        (62, [("k", 10, 5.4)], ["ckd3"], [], "ramipril 5 MG Oral Capsule"),
        (70, [("k", 3, 5.5)], ["hf"], [], "lisinopril 20 MG Oral Tablet"),
        (59, [("k", 1, 4.1), ("k", 30, 5.9)], ["htn"], [], "valsartan 80 MG Oral Tablet"),
        (81, [("k", 2, 5.6), ("k", 20, 4.4)], ["hf", "ckd3"], [], "eplerenone 25 MG Oral Tablet"),
        (45, [("k", 7, 3.9)], ["htn"], [], "enalapril 10 MG Oral Tablet"),
        (76, [("k", 1, 6.6), ("egfr", 1, 28)], ["ckd3"], [], "lisinopril 5 MG Oral Tablet"),
    ])  # fmt: skip
    metformin = "metformin hydrochloride 500 MG Oral Tablet"
    add(rules.METFORMIN_ORDER.name, [
        (56, [("egfr", 10, 62)], t2, [], metformin),
        (69, [("egfr", 5, 38)], [*t2, "ckd3"], [], metformin),
        (77, [("egfr", 3, 24)], [*t2, "ckd3"], [], metformin),
        (63, [("egfr", 20, 47)], t2, [], metformin),
        (72, [("egfr", 8, 30)], [*t2, "ckd3"], [], metformin),
        (80, [("egfr", 2, 29)], [*t2, "ckd3"], [], metformin),
        (58, [("egfr", 6, 52), ("egfr", 200, 28)], t2, [], metformin),
        (66, [("egfr", 4, 41), ("egfr", 300, 70)], t2, [], metformin),
        (74, [("egfr", 1, 18), ("egfr", 90, 35)], [*t2, "ckd3"], [], metformin),
    ])  # fmt: skip
    new_statin = "atorvastatin 40 MG Oral Tablet"
    add(rules.STATIN_ORDER.name, [
        (60, [("ldl", 60, 140)], t2, [], new_statin),
        (65, [("ldl", 500, 150)], ["htn"], [], new_statin),
        (52, [("hba1c", 40, 7.6)], t2, [], "rosuvastatin 10 MG Oral Tablet"),
        (57, [("ldl", 300, 180)], [], [], new_statin),
        (70, [("ldl", 370, 120)], t2, [], "simvastatin 20 MG Oral Tablet"),
        (48, [("ldl", 10, 200)], [], [], "rosuvastatin 20 MG Oral Tablet"),
        (63, [("ldl", 800, 130), ("ldl", 1200, 120)], ["htn"], [], new_statin),
        (55, [("ldl", 364, 160)], t2, [], new_statin),
    ])  # fmt: skip
    add(rules.HBA1C_REPEAT_ORDER.name, [
        (59, [("hba1c", 30, 7.2)], t2, [], "HbA1c"),
        (64, [("hba1c", 120, 6.8)], t2, [], "HbA1c"),
        (47, [("na", 60, 138)], ["prediabetes"], [], "HbA1c"),
        (71, [("hba1c", 89, 8.0)], t2, [], "HbA1c"),
        (68, [("hba1c", 90, 7.5)], t2, [], "HbA1c"),
        (53, [("hba1c", 10, 6.1), ("hba1c", 200, 7.0)], t2, [], "HbA1c"),
        (62, [("hba1c", 200, 7.7)], t2, [], "HbA1c"),
        (75, [("hba1c", 60, 9.1)], t2, [], "HbA1c"),
    ])  # fmt: skip
    add(rules.STATIN_INDICATION.name, [
        (50, [("ldl", 30, 200)], []),
        (30, [("ldl", 60, 195)], []),
        (55, [("ldl", 40, 120)], t2),
        (35, [("ldl", 20, 120)], t2),
        (45, [("ldl", 50, 130)], ["htn"]),
        (80, [("ldl", 15, 150)], ["htn"]),
        (62, [("ldl", 25, 65)], []),
        (70, [("ldl", 90, 100)], t2),
        (25, [("ldl", 10, 150)], []),
        (58, [("ldl", 70, 189)], ["htn"]),
    ])  # fmt: skip
    return cases


CASES: list[Case] = _cases()


def _birth(case: Case) -> str:
    # About 100 days past the birthday, so the age on TODAY is `age` either way.
    born = TODAY - timedelta(days=100)
    return born.replace(year=born.year - case.age).isoformat()


def _at(days: int) -> str:
    return f"{(TODAY - timedelta(days=days)).isoformat()}T09:00:00Z"


def chart(case: Case) -> dict[str, list[dict[str, Any]]]:
    """The case's records by kind: patient, conditions, medications, observations."""
    pid = case.patient_id
    subject = {"reference": f"Patient/{pid}"}
    gender = "female" if case.n % 2 else "male"
    given = GIVEN[gender][(case.n + len(case.rule)) % len(GIVEN[gender])]
    patient = {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"use": "official", "family": FAMILY[case.n % len(FAMILY)], "given": [given]}],
        "gender": gender,
        "birthDate": _birth(case),
    }  # fmt: skip
    conditions = []
    for i, key in enumerate(case.conditions, 1):
        code, display = CONDITIONS[key]
        conditions.append({
            "resourceType": "Condition", "id": f"{pid}-c{i}", "subject": subject,
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}],
                     "text": display},
            "onsetDateTime": _at(900 + 200 * i),
        })  # fmt: skip
    medications = [
        {
            "resourceType": "MedicationRequest", "id": f"{pid}-m{i}", "subject": subject,
            "status": "active", "intent": "order", "authoredOn": _at(700),
            "medicationCodeableConcept": {"text": name},
        }
        for i, name in enumerate(case.medications, 1)
    ]  # fmt: skip
    observations = []
    for i, (key, days, value) in enumerate(case.labs, 1):
        code, display, unit = LABS[key]
        observations.append({
            "resourceType": "Observation", "id": f"{pid}-o{i}", "subject": subject,
            "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}],
                     "text": display},
            "effectiveDateTime": _at(days),
            "valueQuantity": {"value": value, "unit": unit},
        })  # fmt: skip
    return {"patient": [patient], "conditions": conditions, "medications": medications,
            "observations": observations}  # fmt: skip


def draft_order(case: Case) -> dict[str, Any] | None:
    """The draft order the EHR sends with `order-sign` (status draft; not on the server)."""
    if case.order is None:
        return None
    subject = {"reference": f"Patient/{case.patient_id}"}
    rid = f"{case.patient_id}-draft"
    if case.order == "HbA1c":
        code, display, _ = LABS["hba1c"]
        return {
            "resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
            "subject": subject, "authoredOn": TODAY.isoformat(),
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}],
                     "text": "Hemoglobin A1c"},
        }  # fmt: skip
    return {
        "resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
        "subject": subject, "authoredOn": TODAY.isoformat(),
        "medicationCodeableConcept": {"text": case.order},
    }  # fmt: skip


def seed_bundle(case: Case) -> dict[str, Any]:
    """A transaction Bundle that PUTs the case's records under their fixed ids."""
    records = [r for kind in chart(case).values() for r in kind]
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in records
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def seed(fhir: Any, cases: list[Case] | None = None) -> list[str]:
    """Write the cases' charts to the FHIR server (idempotent); returns the Patient ids."""
    chosen = CASES if cases is None else cases
    for case in chosen:
        await fhir.transaction(seed_bundle(case))
    return [c.patient_id for c in chosen]
