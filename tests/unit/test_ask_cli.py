"""`wardround ask`: its graph and step-choice options, and one-line refusals of bad ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from wardround.cli import ask as ask_cli
from wardround.graphs.ehr_qa import QAResult


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("ask")(ask_cli.ask)
    app.command("noop", hidden=True)(lambda: None)  # keep "ask" a subcommand
    return app


@pytest.fixture
def seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stands in for the model run: records what the command passed on."""
    monkeypatch.setenv("WARDROUND_HOME", str(tmp_path))
    calls: dict[str, Any] = {}

    async def fake(settings, question, patient, graph, choice) -> QAResult:
        calls.update(question=question, patient=patient, graph=graph, choice=choice)
        return QAResult(question=question, patient_id=patient, graph=graph, steps=2,
                        answer="6.1 % on 2023-11-12", citations=["Observation/a"],
                        tokens={"prompt": 10, "completion": 5}, latency_s=0.1)  # fmt: skip

    monkeypatch.setattr(ask_cli, "_ask", fake)
    return calls


def test_the_loop_takes_two_steps_unless_told_otherwise(seen: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli(), ["ask", "Latest A1c?", "-p", "p1", "--graph", "loop"])
    assert result.exit_code == 0, result.output
    assert seen["graph"] == "loop" and seen["choice"] == "two_step"
    assert "6.1 % on 2023-11-12" in result.output
    CliRunner().invoke(cli(), ["ask", "Latest A1c?", "-p", "p1", "--graph", "loop",
                               "--choice", "one_call"])  # fmt: skip
    assert seen["choice"] == "one_call"


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--choice", "three_step"], "unknown choice 'three_step'"),
     (["--graph", "maze"], "unknown graph 'maze'")],
)  # fmt: skip
def test_a_bad_option_is_one_line(seen: dict[str, Any], flags: list[str], message: str) -> None:
    result = CliRunner().invoke(cli(), ["ask", "Latest A1c?", "-p", "p1", *flags])
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output and not seen
