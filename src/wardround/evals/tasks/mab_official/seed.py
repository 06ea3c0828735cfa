"""Synthetic patients that carry the task file's MRNs, for tests and for a local try-out.

The benchmark's 100 patients live only in its container image. These stand-ins have the
same MRNs (as Patient id and MR identifier, as the original server has them), the names and
birth dates task1 asks about, and results under the original's local codes (MG, GLU, K,
A1C) timed around the tasks' fixed "now", varied over the MRNs so that every category's
branches occur (within 24 hours or not, low or normal, recent or stale, none at all).
Scores on them test the harness, not a model: only the real data gives numbers comparable
with the paper.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from wardround.evals.tasks.mab_official.dataset import ORIGINAL_NOW
from wardround.fhir.client import FhirClient

LAB_SYSTEM = "urn:medagentbench:lab"  # a stand-in for the original server's local codes
MR_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
_LOOKUP = re.compile(r"name (?P<name>.+?) and DOB of (?P<dob>\d{4}-\d{2}-\d{2})")
GIVEN = ["Alex", "Maria", "Sam", "Ruth", "Omar", "Lena", "Victor", "Grace", "Hugo", "Irene"]
FAMILY = ["Moreno", "Keller", "Osei", "Lindqvist", "Park", "Dubois", "Novak", "Reyes"]

# (hours before now, value) per variant; a variant is picked by the MRN's place in the list.
MAGNESIUM = [
    [(3, 0.9), (72, 1.8)],  # severe, within 24 h
    [(10, 1.3)],  # moderate
    [(20, 1.7), (200, 2.2)],  # mild
    [(5, 2.1)],  # normal
    [(30, 1.6)],  # low, but older than 24 h
    [],  # none
]
GLUCOSE = [[(2, 110.0), (9, 145.0), (20, 98.0), (50, 200.0)], [(72, 131.0), (240, 90.0)], []]
POTASSIUM = [[(6, 3.1), (960, 4.0)], [(24, 4.2), (4800, 3.2)], [(720, 3.3)], []]
HBA1C = [[(2400, 6.8)], [(12000, 7.9)], [(1500, 6.4), (14000, 8.1)], [], [(9600, 5.9)]]
LABS = {
    "MG": ("Magnesium", "mg/dL", MAGNESIUM),
    "GLU": ("Glucose", "mg/dL", GLUCOSE),
    "K": ("Potassium", "mmol/L", POTASSIUM),
    "A1C": ("Hemoglobin A1C", "%", HBA1C),
}


def people(items: Iterable[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """MRN -> (given, family, birth date): task1's people as asked, the rest made up."""
    found: dict[str, tuple[str, str, str]] = {}
    mrns: list[str] = []
    for item in items:
        match = _LOOKUP.search(item["instruction"]) if item["id"].startswith("task1_") else None
        sol = (item.get("sol") or [None])[0]
        if match and sol and str(sol).startswith("S"):
            given, _, family = match["name"].partition(" ")
            found[str(sol)] = (given, family, match["dob"])
        if item.get("eval_MRN"):
            mrns.append(str(item["eval_MRN"]))
    for mrn in mrns:
        if mrn not in found:
            n = int(hashlib.sha1(mrn.encode()).hexdigest(), 16)
            year, month, day = 1930 + n % 70, 1 + n % 12, 1 + n % 28
            found[mrn] = (
                GIVEN[n % len(GIVEN)],
                FAMILY[n % len(FAMILY)],
                f"{year}-{month:02d}-{day:02d}",
            )
    return found


def _observation(mrn: str, code: str, hours: float, value: float) -> dict[str, Any]:
    name, unit, _ = LABS[code]
    at = datetime.fromisoformat(ORIGINAL_NOW) - timedelta(hours=hours)
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LAB_SYSTEM, "code": code, "display": name}], "text": name},
        "subject": {"reference": f"Patient/{mrn}"},
        "effectiveDateTime": at.isoformat(),
        "valueQuantity": {"value": value, "unit": unit},
    }


def chart_bundle(mrn: str, person: tuple[str, str, str], index: int) -> dict[str, Any]:
    """A transaction Bundle: the Patient under its MRN as id (PUT), then its results."""
    given, family, birth = person
    patient = {
        "resourceType": "Patient",
        "id": mrn,
        "identifier": [{"type": MR_TYPE, "system": "urn:medagentbench:mrn", "value": mrn}],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": "female" if index % 2 else "male",
        "birthDate": birth,
    }
    entries = [{"resource": patient, "request": {"method": "PUT", "url": f"Patient/{mrn}"}}]
    for code, (_, _, variants) in LABS.items():
        for hours, value in variants[index % len(variants)]:
            resource = _observation(mrn, code, hours, value)
            entries.append(
                {"resource": resource, "request": {"method": "POST", "url": "Observation"}}
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def seed_bundles(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Bundle per MRN the tasks name (sorted, so the variants are reproducible)."""
    everyone = people(items)
    return [chart_bundle(mrn, everyone[mrn], i) for i, mrn in enumerate(sorted(everyone))]


async def load_seed(client: FhirClient, items: Iterable[dict[str, Any]]) -> list[str]:
    """Load the stand-in patients; returns their MRNs."""
    mrns = []
    for bundle in seed_bundles(items):
        await client.transaction(bundle)
        mrns.append(bundle["entry"][0]["resource"]["id"])
    return mrns
