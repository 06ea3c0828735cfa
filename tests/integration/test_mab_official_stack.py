"""MedAgentBench's official mode over real HTTP: SEKMET served on loopback and seeded with
the stand-in patients, reached through `-o fhir_url=` as a user reaches the benchmark's
container; the whole suite path (frozen samples, runner, scorer, report, export) with a
scripted model in both protocols."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_fixtures import BENCHMARK_DATA
from fakes import ScriptedChatModel
from wardround.evals import export, suite
from wardround.evals.data import load_json
from wardround.evals.tasks.mab_official import seed
from wardround.evals.tasks.mab_official.dataset import TASK_FILE
from wardround.evals.tasks.mab_official.references import reference
from wardround.fhir.client import FhirClient
from wardround.settings import Settings
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sekmet_inprocess import sekmet_app

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def answer_minus_one(protocol: str):
    """A model that answers "not available" at once, whatever it is asked."""
    if protocol == "original":
        return lambda messages: "FINISH([-1])"
    return lambda messages: json.dumps({"action": "final_answer", "answer": "FINISH([-1])"})


@pytest.mark.parametrize("protocol", ["original", "tools"])
async def test_official_mode_end_to_end_over_http(tmp_path: Path, protocol: str):
    settings = Settings(home=tmp_path / "home", benchmark_data_dir=BENCHMARK_DATA)
    items = load_json(TASK_FILE, settings)
    with LoopbackServer(sekmet_app(tmp_path / "fhir", base_url="http://127.0.0.1/fhir")) as server:
        url = f"{server.url}/fhir"
        async with FhirClient(url) as client:
            await seed.load_seed(client, items)
        options = {"mode": "official", "protocol": protocol, "per_category": "3", "fhir_url": url}
        taskdef = suite.get_task("medagentbench")
        model = ScriptedChatModel(respond=answer_minus_one(protocol))
        factory = {"make_model": lambda s, preset: model}
        async with suite.eval_env(
            taskdef, settings, preset="scripted", options=options, **factory
        ) as env:
            assert env.fhir.base_url == url
            result, summary = await suite.run_eval(
                taskdef,
                env,
                preset="scripted",
                root=tmp_path / "runs",
                concurrency=4,
                progress=False,
            )
            expected = {}
            for record in result.records:
                sample = next(s for s in await taskdef.dataset(env) if s.id == record.id)
                target = await reference(env.fhir, sample)
                # [-1] is right where nothing is available and nothing is to be ordered
                no_order = (
                    target.get("dose") is None
                    and target.get("dose_meq") is None
                    and not target.get("order")
                )
                expected[record.id] = target.get("value") == -1 and no_order
    assert summary["n"] == 30 and summary["errors"] == 0
    assert {r.id: r.correct for r in result.records} == expected
    assert any(expected.values()) and not all(expected.values())
    # the run is named by protocol, not by where the server was
    assert result.path.parent.name == f"scripted+protocol={protocol}"
    assert (
        tmp_path / "runs" / "medagentbench" / "samples+mode=official+per_category=3.jsonl"
    ).exists()
    out = tmp_path / "train.jsonl"
    assert export.export_records(result.records, out, "openai") == sum(expected.values())
