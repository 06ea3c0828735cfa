"""Publishing a comparison: files copied, one report for all tasks, rebuilt from the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wardround.cli.eval import app
from wardround.evals import publish as pub
from wardround.evals.results import SampleRecord, write_json, write_samples
from wardround.evals.suite import Layout
from wardround.evals.task import Sample, Trace

A, B = "small-1", "big-2"


def write_run(root: Path, task: str, options: dict, preset: str, right: list[bool]) -> None:
    layout = Layout(root, task, options)
    cats = ["x", "y"]
    samples = [Sample(id=f"{task}-{i}", input="q", category=cats[i % 2]) for i in range(len(right))]
    if not layout.samples.exists():
        write_samples(layout.samples, samples)
    lines = []
    for i, (s, ok) in enumerate(zip(samples, right, strict=True)):
        recall = None if i % 5 == 0 else (1.0 if i % 3 else 0.5)
        score = {"retrieval_recall": recall, "retrieval_precision": recall and recall / 2}
        trace = Trace(latency_s=2.0 + i, tokens={"prompt": 100 + i, "completion": 10})
        record = SampleRecord(
            id=s.id, task=task, model=preset, category=s.category, input="q",
            correct=ok, score=score, trace=trace,
        )  # fmt: skip
        lines.append(record.model_dump_json() + "\n")
    layout.results(preset).parent.mkdir(parents=True, exist_ok=True)
    layout.results(preset).write_text("".join(lines))
    write_json(layout.run_dir(preset) / "summary.json", {"scoring": f"{task} rules"})


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "home" / "runs"
    weak = [i % 3 == 0 for i in range(30)]
    strong = [i % 3 != 2 for i in range(30)]
    write_run(root, "ehrqa", {}, A, weak)
    write_run(root, "ehrqa", {}, B, strong)
    write_run(root, "ehrqa", {"graph": "loop"}, A, weak[:12])
    write_run(root, "ehrqa", {"graph": "loop"}, B, weak[:10])  # B finished only 10
    write_run(root, "medagentbench", {}, A, [False] * 20)
    write_run(root, "medagentbench", {}, B, [i < 4 for i in range(20)])
    return root


SPECS = "ehrqa,ehrqa+graph=loop,medagentbench"


def test_task_specs_parse_like_run_names():
    spec = pub.TaskSpec.parse("ehrqa+graph=loop+patients=20")
    assert spec.task == "ehrqa" and spec.options == {"graph": "loop", "patients": "20"}
    assert spec.label == "ehrqa+graph=loop+patients=20"
    assert [s.label for s in pub.parse_specs(SPECS)] == SPECS.split(",")
    with pytest.raises(ValueError):
        pub.TaskSpec.parse("ehrqa+graph")


def test_publish_copies_the_runs_and_rebuilds_from_the_folder_alone(runs: Path, tmp_path: Path):
    dest = tmp_path / "docs" / "results" / "demo"
    notes = tmp_path / "notes.md"
    notes.write_text("Wall time: ehrqa 1.5B 25 min.\n")
    summary, paths = pub.publish(
        dest, a=A, b=B, specs=pub.parse_specs(SPECS), source=runs, notes=notes
    )
    assert (dest / "runs" / "ehrqa" / "samples.jsonl").exists()
    assert (dest / "runs" / "ehrqa" / f"{B}+graph=loop" / "results.jsonl").exists()
    assert (dest / "runs" / "medagentbench" / A / "summary.json").exists()
    assert [t["label"] for t in summary["tasks"]] == SPECS.split(",")
    ehrqa, loop, mab = summary["tasks"]
    assert ehrqa["overall"]["n"] == 30 and loop["overall"]["n"] == 10
    assert ehrqa["overall"]["b"]["correct"] == 20 and ehrqa["scoring"] == "ehrqa rules"
    assert mab["overall"]["mcnemar"]["b_only"] == 4
    assert "--limit" not in ehrqa["command"] and "--limit 10" in loop["command"]
    assert "-o graph=loop" in loop["command"]
    md = paths["markdown"].read_text()
    for needed in (
        "## How to read this", "## Published anchors", "Measured elsewhere",
        "| MedAgentBench v1 | GPT-4o | 64.00% |", "Claude 3.5 Sonnet v2 | 69.67%",
        "| MedGemma technical report, EHRQA | MedGemma 1.5 4B | 89.6 |",
        "## ehrqa+graph=loop: big-2+graph=loop vs small-1+graph=loop", "Wall time: ehrqa 1.5B 25 min.",
        "reading failures", "detectable (80% power)", "![overview](overview.png)",
        "small-1+graph=loop finished 12, big-2+graph=loop 10",
    ):  # fmt: skip
        assert needed in md, needed
    for png in ("overview", "retrieval", "ehrqa-difference", "medagentbench-categories"):
        assert (dest / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["summary"].read_text()) == json.loads(json.dumps(summary))
    assert paths["html"].read_text().count("data:image/png;base64,") == 2 + 2 * 3

    # The runs root goes away; the folder alone rebuilds the same summary and report.
    shutil.rmtree(runs)
    before_md, before_json = md, paths["summary"].read_text()
    for name in ("report.md", "report.html", "summary.json", "overview.png"):
        (dest / name).unlink()
    result = CliRunner().invoke(app, ["publish", "--to", str(dest), "--rebuild"])
    assert result.exit_code == 0, result.output
    assert (dest / "summary.json").read_text() == before_json
    assert (dest / "report.md").read_text() == before_md
    assert (dest / "overview.png").exists() and "detectable" in result.output


def test_publish_names_a_missing_run(runs: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing"):
        pub.publish(tmp_path / "out", a=A, b="absent", specs=pub.parse_specs("ehrqa"), source=runs)
