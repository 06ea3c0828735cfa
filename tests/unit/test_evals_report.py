"""Comparison summaries and the report files (Markdown, HTML with embedded plots, JSON)."""

from __future__ import annotations

import base64
import json

import pytest

from wardround.evals.compare import compare_records, summarise_run
from wardround.evals.report import write_compare_report, write_run_report
from wardround.evals.results import SampleRecord


def records(pattern: list[bool], cats: list[str], model: str) -> dict[str, SampleRecord]:
    return {
        f"s{i}": SampleRecord(id=f"s{i}", task="t", model=model, category=c, input="", correct=ok)
        for i, (ok, c) in enumerate(zip(pattern, cats, strict=True))
    }


CATS = ["labs"] * 10 + ["meds"] * 10
A = [True] * 4 + [False] * 6 + [True] * 5 + [False] * 5
B = [True] * 8 + [False] * 2 + [True] * 5 + [False] * 5


def test_compare_records_pairs_by_id_and_computes_stats():
    ra, rb = records(A, CATS, "a"), records(B, CATS, "b")
    del rb["s19"]  # only the shared samples are compared
    summary = compare_records("t", "a", "b", ra, rb, n_boot=1000)
    o = summary["overall"]
    assert o["n"] == 19
    assert o["a"]["correct"] == 9 and o["b"]["correct"] == 13
    assert o["mcnemar"] == {"a_only": 0, "b_only": 4, "p_value": pytest.approx(2 / 16)}
    assert o["diff"] == pytest.approx(4 / 19)
    assert o["relative_improvement"] == pytest.approx(4 / 9)
    by_cat = {c["category"]: c for c in summary["categories"]}
    assert by_cat["labs"]["diff"] == pytest.approx(0.4) and by_cat["meds"]["diff"] == 0.0
    assert len(summary["samples"]) == 19
    with pytest.raises(ValueError):
        compare_records("t", "a", "b", ra, {}, n_boot=10)


def test_compare_report_files(tmp_path):
    summary = compare_records(
        "t",
        "gemma",
        "medgemma",
        records(A, CATS, "a"),
        records(B, CATS, "b"),
        scoring="exact",
        n_boot=500,
    )
    paths = write_compare_report(summary, tmp_path / "cmp")
    assert json.loads(paths["summary"].read_text())["overall"]["n"] == 20
    md = paths["markdown"].read_text()
    assert "| gemma | 9/20 | 45.0% |" in md and "| medgemma | 13/20 | 65.0% |" in md
    assert (
        "McNemar" in md and "| labs | 10 | 40.0% | [16.8%, 68.7%] | 80.0% | [49.0%, 94.3%] " in md
    )
    assert "| +40.0 pp [" in md and "Power: with 20 pairs (20.0% of pairs discordant)" in md
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html
    png = html.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cmp" / "difference.png").stat().st_size > 1000


def test_run_report(tmp_path):
    recs = list(records(A, CATS, "a").values())
    recs[0].error = "boom"
    summary = summarise_run("t", "a", recs, scoring="exact")
    assert summary["accuracy"] == pytest.approx(0.45) and summary["errors"] == 1
    assert [c["category"] for c in summary["categories"]] == ["labs", "meds"]
    paths = write_run_report(summary, tmp_path)
    md = paths["markdown"].read_text()
    assert "| labs | 10 | 40.0% |" in md and "11 without evidence" in md
    assert paths["html"].exists()


def scored(correct: bool, recall: float | None, cat: str = "labs", **extra) -> SampleRecord:
    score = {"retrieval_recall": recall, "retrieval_precision": None if recall is None else 0.5}
    score |= {"citation_recall": None, "citation_precision": None}
    return SampleRecord(
        id=extra.pop("id"), task="t", model="m", category=cat, input="", correct=correct,
        score=score, **extra,
    )  # fmt: skip


def test_retrieval_is_scored_apart_and_wrong_answers_are_split_by_cause(tmp_path):
    recs = [
        scored(True, 1.0, id="r1"),
        scored(False, 1.0, id="r2"),  # right records, wrong answer: reading
        scored(False, 0.5, id="r3"),  # missed one of two records: retrieval
        scored(False, 0.0, id="r4", cat="meds"),  # read nothing relevant: retrieval
        scored(False, None, id="r5", cat="meds"),  # no evidence to score
        SampleRecord(id="r6", task="t", model="m", category="meds", input="", error="boom"),
    ]
    run = summarise_run("t", "m", recs)
    assert run["failures"] == {
        "wrong": 5, "failed_to_run": 1, "reading": 1, "retrieval": 2, "no_evidence": 1
    }  # fmt: skip
    assert run["retrieval"]["retrieval_recall"] == {"mean": pytest.approx(2.5 / 4), "n": 4}
    assert run["retrieval"]["citation_recall"] == {"mean": None, "n": 0}
    other = {r.id: r.model_copy(update={"correct": True}) for r in recs}
    summary = compare_records("t", "a", "b", {r.id: r for r in recs}, other, n_boot=200)
    assert summary["failures"]["a"]["reading"] == 1 and summary["failures"]["b"]["wrong"] == 0
    meds = next(c for c in summary["categories"] if c["category"] == "meds")
    assert meds["retrieval"]["a"]["retrieval_recall"]["mean"] == 0.0
    assert meds["failures"]["a"] == {
        "wrong": 3, "failed_to_run": 1, "reading": 0, "retrieval": 1, "no_evidence": 1
    }  # fmt: skip
    md = write_compare_report(summary, tmp_path)["markdown"].read_text()
    assert "| a | 5 | 1 | 2 | 1 | 1 |" in md  # wrong, reading, retrieval, no evidence, failed
    assert "| a | 1/6 | 16.7% |" in md and "| 62.5% / 50.0% |" in md


def test_power_is_in_the_summary_and_says_what_could_be_missed(tmp_path):
    summary = compare_records("t", "a", "b", records(A, CATS, "a"), records(B, CATS, "b"))
    power = summary["overall"]["power"]
    assert power["discordance"] == pytest.approx(4 / 20)
    # 20 pairs can detect some difference, but nothing small
    assert 0.2 < power["min_detectable"] < 1.0
    assert summary["overall"]["mcnemar"]["p_value"] > 0.05
    md = write_compare_report(summary, tmp_path)["markdown"].read_text()
    assert f"smaller than about {100 * power['min_detectable']:.0f} pp could have been missed" in md


def test_expected_outcomes_show_a_category_that_never_asks_for_an_order(tmp_path):
    outcomes = ["order", "normal", "normal", "none"]
    recs = {
        f"s{i}": SampleRecord(
            id=f"s{i}", task="t", model="a", category="task5" if i else "task9", input="",
            target={"outcome": o}, correct=bool(i % 2),
        )
        for i, o in enumerate(outcomes)
    }  # fmt: skip
    summary = compare_records("t", "a", "b", recs, recs, n_boot=100)
    by_cat = {c["category"]: c["outcomes"] for c in summary["categories"]}
    assert by_cat == {"task9": {"order": 1}, "task5": {"normal": 2, "none": 1}}
    md = write_compare_report(summary, tmp_path)["markdown"].read_text()
    assert "| task5 | none 1, normal 2 |" in md
