"""`wardround images index|search|retrieval-set` from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from wardround.cli.images import app

runner = CliRunner()


def test_index_then_search(home: Path) -> None:
    folder = home / "studies"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), folder / "mr.dcm")
    (folder / "broken.dcm").write_bytes(b"\x01" * 300)
    Image.fromarray(np.full((20, 20, 3), 70, np.uint8)).save(folder / "photo.png")

    result = runner.invoke(app, ["index", str(folder)])
    assert result.exit_code == 0, result.output
    assert "3 indexed, 0 already indexed, 1 skipped" in result.output
    assert "broken.dcm" in result.output and "corrupt" in result.output
    assert (home / "home" / "chroma").is_dir()

    again = runner.invoke(app, ["index", str(folder)])
    assert "0 indexed, 3 already indexed" in again.output

    found = runner.invoke(app, ["search", "--image", str(folder / "mr.dcm"), "--k", "2", "--json"])
    assert found.exit_code == 0, found.output
    rows = json.loads(found.output)
    assert rows[0]["modality"] == "MR" and rows[0]["score"] > 0.99
    assert rows[0]["id"].startswith("image:")

    filtered = runner.invoke(app, ["search", "--text", "scan", "--modality", "CT"])
    assert filtered.exit_code == 0
    assert "| CT" in filtered.output and "| MR" not in filtered.output


def test_bad_invocations_fail_in_one_line(home: Path) -> None:
    nothing = runner.invoke(app, ["index"])
    assert nothing.exit_code == 1 and "--builtin" in nothing.output
    missing_dir = runner.invoke(app, ["index", str(home / "nope")])
    assert missing_dir.exit_code == 1 and "no such file or folder" in missing_dir.output
    both = runner.invoke(app, ["search", "--text", "x", "--id", "image:1"])
    assert both.exit_code == 1 and "exactly one" in both.output
    no_index = runner.invoke(app, ["search", "--text", "chest"])
    assert no_index.exit_code == 1
    assert "wardround images index" in no_index.output and "Traceback" not in no_index.output
    (home / "empty").mkdir()
    empty = runner.invoke(app, ["index", str(home / "empty")])
    assert empty.exit_code == 0 and "empty folder" in empty.output


def test_retrieval_set_command(home: Path) -> None:
    result = runner.invoke(app, ["retrieval-set", str(home / "set"), "--variants", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((home / "set" / "manifest.json").read_text())
    assert len(manifest["queries"]) == len(manifest["targets"]) >= 20
