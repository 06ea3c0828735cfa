"""Pair two runs of one task sample by sample and compute the statistics the report shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from wardround.evals.results import SampleRecord
from wardround.evals.stats import (
    ALPHA,
    POWER,
    Paired,
    Proportion,
    min_detectable_difference,
    paired,
    paired_by_category,
    wilson,
)

N_BOOT = 10_000
SEED = 0
# Set by the task's scorer in `record.score` (see scorers.retrieval_scores); None = undefined.
RETRIEVAL_KEYS = (
    "retrieval_recall",
    "retrieval_precision",
    "citation_recall",
    "citation_precision",
)


def _prop(p: Proportion) -> dict[str, Any]:
    return {"correct": p.k, "n": p.n, "accuracy": p.p, "ci95": [p.lo, p.hi]}


def power_dict(stat: Paired) -> dict[str, Any]:
    """The smallest difference the exact McNemar test would detect on these pairs."""
    m = stat.mcnemar
    discordance = (m.a_only + m.b_only) / stat.n if stat.n else 0.0
    return {
        "discordance": discordance,
        "min_detectable": min_detectable_difference(stat.n, discordance),
        "min_detectable_normal": min_detectable_difference(stat.n, discordance, method="normal"),
        "power": POWER,
        "alpha": ALPHA,
        "method": "exact McNemar (binomial on discordant pairs), unconditional power, "
        "discordance held at the observed share (at least the difference)",
    }


def _paired_dict(stat: Paired) -> dict[str, Any]:
    return {
        "n": stat.n,
        "a": _prop(stat.a),
        "b": _prop(stat.b),
        "diff": stat.diff,
        "diff_ci95": [stat.diff_lo, stat.diff_hi],
        "mcnemar": {
            "a_only": stat.mcnemar.a_only,
            "b_only": stat.mcnemar.b_only,
            "p_value": stat.mcnemar.p_value,
        },
        "relative_improvement": stat.relative,
        "power": power_dict(stat),
    }


def retrieval(records: Sequence[SampleRecord]) -> dict[str, Any]:
    """Mean of each retrieval score over the samples where it is defined, and how many."""
    out: dict[str, Any] = {}
    for key in RETRIEVAL_KEYS:
        values = [float(r.score[key]) for r in records if r.score.get(key) is not None]
        out[key] = {"mean": sum(values) / len(values) if values else None, "n": len(values)}
    return out


def failures(records: Sequence[SampleRecord]) -> dict[str, int]:
    """Wrong answers split by what went wrong: a reading failure had every evidence record
    retrieved (retrieval recall 1), a retrieval failure missed some; samples without
    evidence to score, and samples that failed to run, are counted apart."""
    wrong = [r for r in records if not r.correct]
    failed = [r for r in wrong if r.error is not None]
    ran = [r for r in wrong if r.error is None]
    recall = [r.score.get("retrieval_recall") for r in ran]
    return {
        "wrong": len(wrong),
        "failed_to_run": len(failed),
        "reading": sum(1 for x in recall if x is not None and x >= 1.0),
        "retrieval": sum(1 for x in recall if x is not None and x < 1.0),
        "no_evidence": sum(1 for x in recall if x is None),
    }


def _usage(records: Sequence[SampleRecord]) -> dict[str, Any]:
    n = max(1, len(records))
    return {
        "errors": sum(r.error is not None for r in records),
        "total_latency_s": sum(r.trace.latency_s for r in records),
        "mean_prompt_tokens": sum(r.trace.tokens.get("prompt", 0) for r in records) / n,
        "mean_completion_tokens": sum(r.trace.tokens.get("completion", 0) for r in records) / n,
        "mean_latency_s": sum(r.trace.latency_s for r in records) / n,
        "mean_steps": sum(r.trace.steps for r in records) / n,
    }


def summarise_run(
    task: str, model: str, records: Sequence[SampleRecord], scoring: str = ""
) -> dict:
    """Accuracy with its Wilson interval, overall and per category, for one run."""
    by_cat: dict[str, list[bool]] = {}
    for r in records:
        by_cat.setdefault(r.category, []).append(r.correct)
    overall = wilson(sum(r.correct for r in records), len(records))
    return {
        "task": task,
        "model": model,
        "scoring": scoring,
        "created_at": datetime.now(UTC).isoformat(),
        **_prop(overall),
        **_usage(records),
        "retrieval": retrieval(records),
        "failures": failures(records),
        "categories": [{"category": c, **_prop(wilson(sum(v), len(v)))} for c, v in by_cat.items()],
    }


def compare_records(
    task: str,
    model_a: str,
    model_b: str,
    records_a: Mapping[str, SampleRecord],
    records_b: Mapping[str, SampleRecord],
    *,
    order: Sequence[str] | None = None,
    scoring: str = "",
    seed: int = SEED,
    n_boot: int = N_BOOT,
) -> dict[str, Any]:
    """The comparison summary on the samples both runs finished (a failed sample is wrong)."""
    ids = [i for i in (order or list(records_a)) if i in records_a and i in records_b]
    if not ids:
        raise ValueError(f"runs of {model_a} and {model_b} on {task} share no finished samples")
    a = [records_a[i].correct for i in ids]
    b = [records_b[i].correct for i in ids]
    cats = [records_a[i].category for i in ids]
    overall = paired(a, b, seed=seed, n_boot=n_boot)
    per_cat = paired_by_category(list(zip(cats, a, b, strict=True)), seed=seed, n_boot=n_boot)
    sides = {"a": [records_a[i] for i in ids], "b": [records_b[i] for i in ids]}
    return {
        "task": task,
        "scoring": scoring,
        "model_a": model_a,
        "model_b": model_b,
        "created_at": datetime.now(UTC).isoformat(),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": 0.95},
        "overall": _paired_dict(overall),
        **_side_stats(sides),
        "categories": [
            {"category": c, **_paired_dict(stat), **_side_stats(_of_category(sides, c))}
            for c, stat in per_cat.items()
        ],
        "samples": [
            {"id": i, "category": c, "a": x, "b": y}
            for i, c, x, y in zip(ids, cats, a, b, strict=True)
        ],
    }


def _of_category(
    sides: Mapping[str, Sequence[SampleRecord]], category: str
) -> dict[str, list[SampleRecord]]:
    return {k: [r for r in v if r.category == category] for k, v in sides.items()}


def outcomes(records: Sequence[SampleRecord]) -> dict[str, int]:
    """How many samples expect each outcome (e.g. "order" vs "normal" for an order task),
    so a category whose samples all expect the same outcome is visible in the report."""
    counts: dict[str, int] = {}
    for r in records:
        if isinstance(r.target, dict) and r.target.get("outcome") is not None:
            key = str(r.target["outcome"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def _side_stats(sides: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
    """Usage, retrieval and failure kinds of each side (keys "a" and "b"), and the
    reference outcomes (the same samples on both sides)."""
    return {
        "outcomes": outcomes(sides["a"]),
        "usage": {k: _usage(v) for k, v in sides.items()},
        "retrieval": {k: retrieval(v) for k, v in sides.items()},
        "failures": {k: failures(v) for k, v in sides.items()},
    }
