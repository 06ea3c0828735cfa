"""Hybrid guideline search over the starter corpus: right passages, BM25, fusion, the tool."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from fakes import cited_tool_call
from wardround.tools.guidelines.index import (
    GuidelineIndex,
    GuidelineIndexError,
    _Lexical,
    index_files,
    tokenize,
)
from wardround.tools.guidelines.ingest import corpus_dir, discover
from wardround.tools.guidelines.tools import make_guideline_tools


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> GuidelineIndex:
    target = GuidelineIndex(tmp_path_factory.mktemp("chroma"))
    indexed, skipped = index_files(target, discover([corpus_dir()]))
    assert skipped == [] and len(indexed) >= 30
    return target


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "maximum rate of IV potassium through a peripheral line",
            "guideline:potassium-repletion#oral-versus-intravenous",
        ),
        (
            "HbA1c goal for older adults with multiple chronic illnesses",
            "guideline:hba1c-targets#older-adults",
        ),
        ("how often should HbA1c be measured", "guideline:hba1c-targets#monitoring-interval"),
        (
            "blood pressure stage 2 hypertension definition",
            "guideline:blood-pressure-thresholds#categories-in-adults",
        ),
        (
            "CHA2DS2-VASc score threshold for anticoagulation in women",
            "guideline:af-anticoagulation#who-should-be-anticoagulated",
        ),
        ("qSOFA criteria", "guideline:sepsis-criteria#qsofa-and-sirs"),
        ("GFR category G3b range", "guideline:ckd-staging#gfr-categories"),
        (
            "statin for diabetes age 40 to 75",
            "guideline:statin-indications#primary-prevention-groups",
        ),
        (
            "recombinant zoster vaccine age",
            "guideline:adult-immunizations#tetanus-zoster-and-hepatitis-b",
        ),
        (
            "magnesium sulfate dose for torsades de pointes",
            "guideline:magnesium-repletion#replacement",
        ),
        ("how fast to correct chronic hyponatraemia", "guideline:hyponatraemia#correction-limits"),
        (
            "restrictive haemoglobin threshold for transfusion",
            "guideline:transfusion-thresholds#hospitalised-adults",
        ),
    ],
)
def test_clear_queries_find_the_right_passage(
    index: GuidelineIndex, query: str, expected: str
) -> None:
    hits = index.search(query, k=3)
    assert expected in [h.ref for h in hits], [h.ref for h in hits]
    assert hits[0].citation and hits[0].title


def test_hits_carry_ranks_and_fused_scores(index: GuidelineIndex) -> None:
    hits = index.search("apixaban dose reduction age weight creatinine", k=5)
    assert hits[0].source == "doac-dosing" or hits[1].source == "doac-dosing"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    top = hits[0]
    expected = sum(1 / (60 + r) for r in (top.dense_rank, top.lexical_rank) if r)
    assert top.score == pytest.approx(expected)


def test_source_filter(index: GuidelineIndex) -> None:
    hits = index.search("monitoring", k=5, source="warfarin-inr")
    assert hits and {h.source for h in hits} == {"warfarin-inr"}
    assert all(h.dense_rank for h in hits)  # the dense side searched that document too
    assert index.search("monitoring", k=5, source="no-such-document") == []


def test_sparse_bm25_matches_rank_bm25() -> None:
    from rank_bm25 import BM25Okapi

    texts = [
        "potassium chloride oral",
        "intravenous potassium rate rate",
        "statin therapy dose",
        "potassium potassium magnesium",
        "hba1c target older adults",
    ]
    metas = [{"title": "", "section": ""} for _ in texts]
    lexical = _Lexical([f"d{i}" for i in range(len(texts))], texts, metas)
    reference = BM25Okapi([tokenize(f". . {t}") for t in texts])
    for query in ("potassium rate", "statin", "magnesium potassium potassium", "unknown words"):
        np.testing.assert_allclose(
            lexical.scores(query), reference.get_scores(tokenize(query)), rtol=1e-5, atol=1e-6
        )
    assert (
        lexical.top("potassium rate", 2) == ["d1", "d3"]
        or lexical.top("potassium rate", 2)[0] == "d1"
    )
    assert lexical.top("unknown words", 3) == []


def test_stemming_joins_word_forms() -> None:
    assert tokenize("reduce reduced reduction") == ["reduc"] * 3
    assert tokenize("dose dosing doses") == ["dos"] * 3
    assert tokenize("The sepsis of the kidneys") == ["sepsis", "kidney"]


def test_reindex_replaces_instead_of_duplicating(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(corpus_dir() / "potassium-repletion.md", folder)
    (folder / "scan.png").write_bytes(b"\x89PNG")
    target = GuidelineIndex(tmp_path / "chroma")
    indexed, skipped = index_files(target, discover([folder]))
    first = target.count()
    assert first == indexed[0][1] > 0
    assert skipped[0][0].name == "scan.png" and "not a guideline" in skipped[0][1]
    index_files(target, discover([folder]))
    assert target.count() == first
    (folder / "potassium-repletion.md").write_text(
        "# Potassium\n\nSource: Local protocol 2025.\n\n## Only section\n\nNew text only.\n"
    )
    index_files(target, discover([folder]))
    assert target.count() == 1
    assert target.search("potassium", k=3)[0].text == "New text only."


def test_missing_and_empty_index_messages(tmp_path: Path) -> None:
    missing = GuidelineIndex(tmp_path / "nowhere")
    with pytest.raises(
        GuidelineIndexError, match=r"no guideline index.*wardround guidelines index"
    ):
        missing.search("potassium")
    assert not (tmp_path / "nowhere").exists()
    empty = GuidelineIndex(tmp_path / "chroma")
    empty.collection(create=True)
    with pytest.raises(GuidelineIndexError, match="is empty"):
        empty.search("potassium")
    with pytest.raises(GuidelineIndexError, match="empty query"):
        empty.search("  ")


def test_lookup_guideline_tool_contract(index: GuidelineIndex, tmp_path: Path) -> None:
    [tool] = make_guideline_tools(index)
    call = cited_tool_call(
        tool, "lookup_guideline", query="INR target for a mechanical mitral valve", k=2
    )
    message = tool.invoke(call)
    assert message.artifact[0] == "guideline:warfarin-inr#target-ranges"
    assert "[guideline:warfarin-inr#target-ranges]" in message.content
    assert "2.5 to 3.5" in message.content and "CHEST" in message.content
    again = asyncio.run(tool.ainvoke(call))
    assert again.artifact == message.artifact
    bad = tool.invoke({**call, "args": {"query": "x", "k": 99}})
    assert bad.content.startswith("Error: invalid arguments")
    [missing] = make_guideline_tools(GuidelineIndex(tmp_path / "none"))
    reply = missing.invoke(call)
    assert reply.content.startswith("Error: no guideline index") and reply.artifact == []
