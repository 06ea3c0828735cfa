"""bench/tokens.py: token counts with the embedded model's real tokenizer, and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.tokens import app, load_token_counter, measure
from wardround.settings import Settings
from wardround.testing.sample_charts import bundle_resources, carebundle_charts, handmade_chart


@pytest.fixture(scope="module")
def count_tokens():
    return load_token_counter("smollm2-135m", Settings())


def test_tokenizer_is_the_models_own(count_tokens) -> None:
    assert count_tokens("") == 0
    assert (
        1 <= count_tokens("Hemoglobin") < count_tokens("Hemoglobin A1c/Hemoglobin.total in Blood")
    )


def test_compact_rendering_is_at_least_five_times_smaller(count_tokens) -> None:
    charts = [bundle_resources(b) for b in carebundle_charts().values()]
    for chart in charts:  # carebundle leaves ids to the server; give them server-like ids
        for n, resource in enumerate(chart):
            resource["id"] = f"{n:08d}-0000-4000-8000-000000000000"
    report = measure(charts, count_tokens)
    assert report.total.resources == sum(len(c) for c in charts)
    assert report.total.raw == sum(r.raw for r in report.by_type.values())
    assert report.total.ratio >= 5.0
    assert report.by_type["Observation"].ratio >= 5.0


def test_cli_reads_bundles_and_prints_json(tmp_path: Path) -> None:
    (tmp_path / "fhir").mkdir()
    bundle = handmade_chart()
    for n, entry in enumerate(bundle["entry"]):
        entry["resource"]["id"] = f"r{n}"
    (tmp_path / "fhir" / "one.json").write_text(json.dumps(bundle))
    result = CliRunner().invoke(app, ["--bundles", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["charts"] == 1
    assert report["total"]["resources"] == len(bundle["entry"])
    assert report["total"]["ratio"] > 3


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--bundles", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "is not a directory" in result.output
    assert "Traceback" not in result.output
