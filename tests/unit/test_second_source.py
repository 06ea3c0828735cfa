"""The second synthetic data source: clinosim patients, loaded into an in-process SEKMET, give
ehrqa samples whose truth is computed from their records."""

from __future__ import annotations

from pathlib import Path

import pytest

from wardround.evals.chart import fetch_chart, list_patient_ids
from wardround.evals.task import EvalEnv
from wardround.evals.tasks import ehrqa
from wardround.settings import Settings
from wardround.stack import second_source
from wardround.testing.sekmet_inprocess import asgi_client, sekmet_app

pytest.importorskip("clinosim")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return second_source.generate(tmp_path_factory.mktemp("clinosim"), n=2, seed=7)


def test_generate_writes_two_patients_with_coded_records(generated: Path):
    patients = second_source.read_ndjson(generated, "Patient")
    assert len(patients) == 2 and len({p["id"] for p in patients}) == 2
    observations = second_source.read_ndjson(generated, "Observation")
    systems = {c.get("system") for o in observations for c in o["code"].get("coding", [])}
    assert "http://loinc.org" in systems
    assert second_source.read_ndjson(generated, "Condition")
    assert second_source.read_ndjson(generated, "MedicationRequest")


@pytest.mark.asyncio(loop_scope="session")
async def test_ehrqa_dataset_builds_computed_samples_from_clinosim(generated: Path, tmp_path: Path):
    app = sekmet_app(tmp_path / "sekmet")
    async with asgi_client(app) as fhir:
        report = await second_source.load(fhir, generated)
        assert len(report["patients"]) == 2
        assert report["loaded"]["Observation"] > 50 and report["loaded"]["Condition"] >= 2
        assert sorted(await list_patient_ids(fhir)) == report["patients"]

        env = EvalEnv(settings=Settings(), fhir=fhir, options={"per_category": "3"})
        samples = await ehrqa.dataset(env)
        categories = {s.category for s in samples}
        assert {"latest_value", "active_medications", "last_encounter", "age"} <= categories
        assert {s.metadata["patient_id"] for s in samples} == set(report["patients"])

        # Each latest value is the newest result of its code in the patient's records.
        latest = [s for s in samples if s.category == "latest_value"]
        assert latest
        for sample in latest:
            chart = await fetch_chart(fhir, sample.metadata["patient_id"])
            ref = sample.target["evidence"][0]
            obs = next(o for o in chart.of("Observation") if f"Observation/{o['id']}" == ref)
            code = obs["code"]["coding"][0]["code"]
            assert chart.observations(code)[-1][1] == sample.target["value"]
            assert ehrqa.score_answer(sample, f"{sample.target['value']} on file").correct
