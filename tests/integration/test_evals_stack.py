"""The evaluation tasks against the real local stack: SEKMET with PySynthea patients, the
embedded model behind llama.cpp, the real image encoder and Chroma."""

from __future__ import annotations

import json

import pytest

from live import LiveStack
from wardround.evals import suite

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def run_one(stack: LiveStack, tmp_path, task: str, limit: int, **options: str):
    taskdef = suite.get_task(task)
    # A CPU model under grammar-constrained decoding can take minutes per reply on a busy
    # machine; the harness is under test here, not the model's speed.
    settings = stack.settings.model_copy(update={"request_timeout_s": 900.0})
    async with suite.eval_env(taskdef, settings, preset=settings.model, options=options) as env:
        return await suite.run_eval(
            taskdef,
            env,
            preset=stack.settings.model,
            root=tmp_path,
            limit=limit,
            concurrency=1,
            progress=False,
        )


def no_runner_errors(result) -> None:
    # The model may answer badly (a wrong answer), but the harness itself must not fail.
    for record in result.records:
        assert record.error is None, record.error
        assert record.trace.latency_s > 0


async def test_ehrqa_on_the_seeded_patients(stack: LiveStack, tmp_path):
    result, summary = await run_one(stack, tmp_path, "ehrqa", limit=2)
    samples = [json.loads(line) for line in (tmp_path / "ehrqa" / "samples.jsonl").open()]
    assert len({s["category"] for s in samples}) >= 8
    assert {s["metadata"]["patient_id"] for s in samples} <= set(stack.patient_ids)
    no_runner_errors(result)
    assert all(r.trace.tokens["prompt"] > 0 for r in result.records)
    assert (tmp_path / "ehrqa" / stack.settings.model / "report.html").exists()
    assert summary["n"] == 2


async def test_medagentbench_on_the_seeded_patients(stack: LiveStack, tmp_path):
    result, _ = await run_one(stack, tmp_path, "medagentbench", limit=1, max_steps="2")
    no_runner_errors(result)
    samples = [json.loads(line) for line in (tmp_path / "medagentbench" / "samples.jsonl").open()]
    assert {s["category"] for s in samples} >= {"task1", "task2", "task3", "task8"}


async def test_agentclinic_with_the_embedded_doctor(stack: LiveStack, tmp_path):
    result, _ = await run_one(stack, tmp_path, "agentclinic", limit=1, max_turns="2")
    no_runner_errors(result)
    assert 1 <= result.records[0].trace.steps <= 2


async def test_images_recall_and_a_compare_report(stack: LiveStack, tmp_path):
    taskdef = suite.get_task("images")
    summary, paths = await suite.compare_eval(
        taskdef,
        stack.settings,
        a="smollm2-135m",
        b="gemma3-270m",
        root=tmp_path,
        limit=12,
        concurrency=2,
        progress=False,
    )
    overall = summary["overall"]
    assert overall["n"] == 12 and overall["a"]["accuracy"] >= 0.75
    assert overall["diff"] == 0.0  # no chat model takes part in this task
    assert paths["html"].exists() and "recall@5" in summary["scoring"]
