"""`wardround eval run|compare`: runs, resumes, reuses finished runs, writes the reports."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from eval_fixtures import BENCHMARK_DATA
from fakes import ScriptedChatModel
from wardround.cli.eval import app
from wardround.evals import suite
from wardround.evals.task import Sample
from wardround.evals.tasks.images import recall_at, score_ranking
from wardround.testing.chat_simulator import doctor_responder

runner = CliRunner()


@pytest.fixture
def models(monkeypatch, tmp_path):
    """Presets 'good' (right on the first three cases) and 'bad' (never right)."""
    monkeypatch.setenv("WARDROUND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WARDROUND_BENCHMARK_DATA_DIR", str(BENCHMARK_DATA))
    from wardround.evals.data import load_jsonl
    from wardround.settings import Settings

    rows = load_jsonl("agentclinic/agentclinic_medqa.jsonl", Settings())
    right = {
        r["OSCE_Examination"]["Objective_for_Doctor"]: r["OSCE_Examination"]["Correct_Diagnosis"]
        for r in rows[:3]
    }
    built: list[str] = []

    def make(settings, preset):
        built.append(preset)
        answers = right if preset == "good" else {}
        return ScriptedChatModel(respond=doctor_responder(answers))

    monkeypatch.setattr(suite, "default_model", make)
    return built


def test_run_then_rerun_continues(models, tmp_path):
    out = tmp_path / "runs"
    first = runner.invoke(
        app, ["run", "agentclinic", "--model", "good", "--limit", "2", "--out", str(out)]
    )
    assert first.exit_code == 0, first.output
    assert "accuracy 100.0%" in first.output and "ran 2" in first.output
    results = out / "agentclinic" / "good" / "results.jsonl"
    assert len(results.read_text().splitlines()) == 2
    second = runner.invoke(app, ["run", "agentclinic", "-m", "good", "-n", "4", "--out", str(out)])
    assert second.exit_code == 0 and "ran 2" in second.output and "(3/4" in second.output
    assert len(results.read_text().splitlines()) == 4
    assert (out / "agentclinic" / "samples.jsonl").exists()
    assert json.loads((out / "agentclinic" / "good" / "summary.json").read_text())["n"] == 4


def test_compare_writes_the_report_and_reuses_runs(models, tmp_path):
    out = tmp_path / "runs"
    args = [
        "compare",
        "--a",
        "bad",
        "--b",
        "good",
        "--task",
        "agentclinic",
        "--limit",
        "5",
        "--out",
        str(out),
        "-c",
        "2",
    ]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "bad 0.0% vs good 60.0%" in done.output and "+60.0 pp" in done.output
    folder = out / "agentclinic" / "compare" / "bad-vs-good"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["overall"]["mcnemar"]["b_only"] == 3
    assert "normalised matching with synonyms" in summary["scoring"]
    assert (folder / "report.html").read_text().count("data:image/png;base64,") == 3
    assert models == ["bad", "good"]
    again = runner.invoke(app, args)  # both runs finished: no model is built again
    assert again.exit_code == 0 and models == ["bad", "good"]
    assert "normalised matching" in json.loads((folder / "summary.json").read_text())["scoring"]


def test_options_change_the_run_name(models, tmp_path):
    out = tmp_path / "runs"
    done = runner.invoke(
        app, ["run", "agentclinic", "-m", "good", "-n", "1", "--out", str(out), "-o", "max_turns=2"]
    )
    assert done.exit_code == 0, done.output
    record = json.loads((out / "agentclinic" / "good+max_turns=2" / "results.jsonl").read_text())
    assert record["trace"]["steps"] == 2 and record["answer"] == ""  # out of turns


def test_bad_input_is_one_line_and_nonzero(models, tmp_path):
    unknown = runner.invoke(app, ["run", "nope", "--model", "good", "--out", str(tmp_path)])
    assert unknown.exit_code == 1 and "unknown task 'nope'" in unknown.output
    assert "Traceback" not in unknown.output
    bad_option = runner.invoke(app, ["run", "agentclinic", "-m", "good", "-o", "oops"])
    assert bad_option.exit_code == 1 and "KEY=VALUE" in bad_option.output
    same = runner.invoke(app, ["compare", "--a", "x", "--b", "x", "--task", "agentclinic"])
    assert same.exit_code == 1


def test_tasks_are_listed():
    listed = runner.invoke(app, ["tasks"])
    assert listed.exit_code == 0
    for name in ("ehrqa", "medagentbench", "agentclinic", "images"):
        assert name in listed.output


def test_image_recall_scoring():
    sample = Sample(id="q", input="x", target={"relevant": ["a", "b"]})
    assert recall_at(["x", "a", "y", "b"], ["a", "b"], 2) == 0.5
    partial = score_ranking(sample, ["x", "a", "y", "b"], k=2)
    assert not partial.correct and partial.value == 0.5 and partial.metadata["first_rank"] == 2
    assert score_ranking(sample, ["b", "a"], k=2).correct


def test_rescore_applies_the_current_scorer_to_stored_traces(models, tmp_path):
    out = tmp_path / "runs"
    assert (
        runner.invoke(
            app, ["run", "agentclinic", "-m", "good", "-n", "2", "--out", str(out)]
        ).exit_code
        == 0
    )
    results = out / "agentclinic" / "good" / "results.jsonl"
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    lines[0]["correct"] = False  # as if scored by an older, stricter rule
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    built = len(models)
    done = runner.invoke(app, ["rescore", "agentclinic", "-m", "good", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "1 verdicts changed" in done.output and "(2/2)" in done.output
    assert len(models) == built  # no model was built to rescore
    assert all(json.loads(line)["correct"] for line in results.read_text().splitlines())
    missing = runner.invoke(app, ["rescore", "agentclinic", "-m", "other", "--out", str(out)])
    assert missing.exit_code == 1 and "no run of other" in missing.output
