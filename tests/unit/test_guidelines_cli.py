"""`wardround guidelines index|search|list` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wardround.cli.guidelines import app
from wardround.tools.guidelines import ingest

runner = CliRunner()

DOC = """# Local potassium protocol

Source: Example Hospital protocol (2024).

## Oral

Oral potassium chloride 40 mmol twice daily for mild hypokalaemia.

## Intravenous

Peripheral potassium infusion at most 10 mmol per hour.
"""


def test_index_search_and_list(home: Path) -> None:
    folder = home / "docs"
    folder.mkdir()
    (folder / "potassium.md").write_text(DOC)
    (folder / "logo.png").write_bytes(b"\x89PNG")
    result = runner.invoke(app, ["index", str(folder)])
    assert result.exit_code == 0, result.output
    assert "1 document(s) indexed as 2 passages, 1 skipped" in result.output
    assert "logo.png" in result.output

    found = runner.invoke(app, ["search", "IV potassium rate", "--k", "1", "--json"])
    assert found.exit_code == 0, found.output
    [row] = json.loads(found.output)
    assert row["id"] == "guideline:potassium#intravenous"
    assert row["citation"] == "Example Hospital protocol (2024)."

    text = runner.invoke(app, ["search", "oral potassium", "--k", "1"])
    assert "guideline:potassium#oral" in text.output

    listed = runner.invoke(app, ["list"])
    assert "potassium" in listed.output and "1 document(s)" in listed.output


def test_index_without_dir_uses_the_starter_corpus(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = home / "corpus"
    corpus.mkdir()
    (corpus / "potassium.md").write_text(DOC)
    monkeypatch.setattr(ingest, "corpus_dir", lambda: corpus)
    result = runner.invoke(app, ["index"])
    assert result.exit_code == 0, result.output
    assert "from the starter corpus" in result.output


def test_errors_are_one_line(home: Path) -> None:
    missing = runner.invoke(app, ["search", "potassium"])
    assert missing.exit_code == 1
    assert "wardround guidelines index" in missing.output and "Traceback" not in missing.output
    bad_dir = runner.invoke(app, ["index", str(home / "nope")])
    assert bad_dir.exit_code == 1 and "no such file or folder" in bad_dir.output
