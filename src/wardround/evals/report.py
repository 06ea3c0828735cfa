"""Reports: summary.json, report.md and report.html (plots embedded as base64 PNG)."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
from markdown_it import MarkdownIt

from wardround.evals.results import write_json

_COLORS = ("#7f7f7f", "#1f77b4")


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _pp(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:+.1f} pp"


def _ci(ci: list[float], fmt: Any = _pct) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _p(p: float) -> str:
    return f"{p:.3g}" if p >= 0.001 else "< 0.001"


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _err(acc: float, ci: list[float]) -> list[float]:
    return [max(0.0, acc - ci[0]), max(0.0, ci[1] - acc)]


# ---------------------------------------------------------------- plots


def plot_accuracy(summary: dict[str, Any]) -> bytes:
    o = summary["overall"]
    names = [summary["model_a"], summary["model_b"]]
    accs = [o["a"]["accuracy"], o["b"]["accuracy"]]
    errs = list(zip(_err(accs[0], o["a"]["ci95"]), _err(accs[1], o["b"]["ci95"]), strict=True))
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.bar(names, accs, yerr=errs, capsize=6, color=_COLORS)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.set_title(f"{summary.get('label', summary['task'])}: n = {o['n']}")
    for i, acc in enumerate(accs):
        ax.text(i, min(0.97, acc + 0.03), _pct(acc), ha="center", va="bottom")
    return _png(fig)


def plot_difference(summary: dict[str, Any]) -> bytes:
    rows = [("overall", summary["overall"])] + [(c["category"], c) for c in summary["categories"]]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2))
    for y, (label, row) in enumerate(reversed(rows)):
        lo, hi = row["diff_ci95"]
        color = "black" if label == "overall" else _COLORS[1]
        ax.plot([100 * lo, 100 * hi], [y, y], color=color, lw=2)
        ax.plot([100 * row["diff"]], [y], "o", color=color)
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [f"{label} (n={row['n']})" for label, row in reversed(rows)])
    ax.set_xlabel(f"{summary['model_b']} - {summary['model_a']} (pp, bootstrap 95% CI)")
    ax.set_title(f"{summary.get('label', summary['task'])}: paired difference")
    return _png(fig)


def plot_categories(summary: dict[str, Any]) -> bytes:
    cats = summary["categories"]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(cats) + 2), 3.8))
    width = 0.38
    for j, (side, name) in enumerate((("a", summary["model_a"]), ("b", summary["model_b"]))):
        xs = [i + (j - 0.5) * width for i in range(len(cats))]
        accs = [c[side]["accuracy"] for c in cats]
        errs = list(zip(*[_err(c[side]["accuracy"], c[side]["ci95"]) for c in cats], strict=True))
        ax.bar(
            xs, accs, width, yerr=errs if cats else None, capsize=3, label=name, color=_COLORS[j]
        )
    ax.set_xticks(range(len(cats)), [c["category"] for c in cats], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.legend()
    ax.set_title(f"{summary.get('label', summary['task'])}: per category")
    return _png(fig)


Series = tuple[
    str, list[float], list[list[float]] | None, str, str
]  # name, values, errs, color, hatch


def _grouped_bars(ax: Any, labels: list[str], series: list[Series]) -> None:
    width = 0.8 / max(1, len(series))
    for j, (name, values, errs, color, hatch) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(labels))]
        yerr = list(zip(*errs, strict=True)) if errs else None
        ax.bar(xs, values, width, yerr=yerr, capsize=3, label=name, color=color, hatch=hatch)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def plot_overview(pub: dict[str, Any]) -> bytes:
    """Accuracy of both models on every task, with Wilson intervals."""
    tasks = pub["tasks"]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(tasks) + 2), 3.8))
    series: list[Series] = []
    for j, (side, name) in enumerate((("a", pub["model_a"]), ("b", pub["model_b"]))):
        accs = [_nan0(t["overall"][side]["accuracy"]) for t in tasks]
        errs = [_err(acc, t["overall"][side]["ci95"]) for acc, t in zip(accs, tasks, strict=True)]
        series.append((name, accs, errs, _COLORS[j], ""))
    _grouped_bars(ax, [t["label"] for t in tasks], series)
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.set_title("accuracy per task")
    return _png(fig)


def plot_retrieval(pub: dict[str, Any]) -> bytes:
    """Mean retrieval recall and precision per task (tasks without evidence show no bar)."""
    tasks = pub["tasks"]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(tasks) + 2), 3.8))
    series: list[Series] = []
    for j, (side, name) in enumerate((("a", pub["model_a"]), ("b", pub["model_b"]))):
        for key, hatch in (("retrieval_recall", ""), ("retrieval_precision", "//")):
            means = [_nan0(t["retrieval"][side][key]["mean"]) for t in tasks]
            series.append((f"{name} {key.split('_')[1]}", means, None, _COLORS[j], hatch))
    _grouped_bars(ax, [t["label"] for t in tasks], series)
    ax.set_ylabel("mean over samples with evidence")
    ax.set_title("records retrieved vs evidence")
    return _png(fig)


def _nan0(x: float | None) -> float:
    return 0.0 if x is None or math.isnan(x) else x


# ---------------------------------------------------------------- markdown


def _size(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} pp"


def _rp(side: dict[str, Any], kind: str) -> str:
    """Mean recall / precision of one kind ("retrieval" or "citation"), '-' if undefined."""
    recall, precision = side[f"{kind}_recall"]["mean"], side[f"{kind}_precision"]["mean"]
    return f"{_pct(recall)} / {_pct(precision)}"


def _tokens(usage: dict[str, Any]) -> str:
    return f"{usage['mean_prompt_tokens']:.0f} / {usage['mean_completion_tokens']:.0f}"


def power_sentence(stat: dict[str, Any]) -> str:
    """What the test could have detected, so a non-significant result says what it missed."""
    power, n = stat["power"], stat["n"]
    share = f"{_pct(power['discordance'])} of pairs discordant"
    mdd = power["min_detectable"]
    if mdd is None:
        return (
            f"Power: with {n} pairs ({share}) the exact McNemar test cannot reach "
            f"{power['power']:.0%} power for any difference; a non-significant result here "
            "rules nothing out."
        )
    text = (
        f"Power: with {n} pairs ({share}), the exact McNemar test (two-sided, alpha "
        f"{power['alpha']:g}) detects a difference of {100 * mdd:.1f} pp with "
        f"{power['power']:.0%} power (normal approximation: "
        f"{_size(power['min_detectable_normal'])})."
    )
    if stat["mcnemar"]["p_value"] >= power["alpha"]:
        text += f" Not significant: a real difference smaller than about {100 * mdd:.0f} pp "
        text += "could have been missed."
    return text


def _model_rows(summary: dict[str, Any]) -> list[str]:
    o = summary["overall"]
    rows = [
        "| model | correct | accuracy | 95% CI (Wilson) | failed runs | retrieval recall / "
        "precision | citation recall / precision | tokens in / out per sample | latency "
        "per sample |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for side, name in (("a", summary["model_a"]), ("b", summary["model_b"])):
        usage, ret = summary["usage"][side], summary["retrieval"][side]
        rows.append(
            f"| {name} | {o[side]['correct']}/{o[side]['n']} | {_pct(o[side]['accuracy'])} | "
            f"{_ci(o[side]['ci95'])} | {usage['errors']} | {_rp(ret, 'retrieval')} | "
            f"{_rp(ret, 'citation')} | {_tokens(usage)} | {usage['mean_latency_s']:.1f} s |"
        )
    return rows


def _test_lines(summary: dict[str, Any]) -> list[str]:
    o, a, b = summary["overall"], summary["model_a"], summary["model_b"]
    m, rel = o["mcnemar"], o["relative_improvement"]
    return [
        f"- Difference ({b} - {a}): **{_pp(o['diff'])}**, bootstrap 95% CI "
        f"{_ci(o['diff_ci95'], _pp)} ({summary['bootstrap']['n_boot']} resamples, "
        f"seed {summary['bootstrap']['seed']}).",
        f"- Exact McNemar test: {m['b_only']} samples only {b} got right, {m['a_only']} only "
        f"{a} got right; p = {_p(m['p_value'])}.",
        f"- {power_sentence(o)}",
        f"- Relative improvement: {'-' if rel is None else f'{100 * rel:+.1f}%'}.",
    ]


def _failure_rows(summary: dict[str, Any]) -> list[str]:
    rows = [
        "Wrong answers by cause. A *reading failure* had every evidence record retrieved "
        "(retrieval recall 1) and still answered wrong; a *retrieval failure* never read "
        "some evidence record.",
        "",
        "| model | wrong | reading failures | retrieval failures | no evidence to score | "
        "failed to run |",
        "|---|---|---|---|---|---|",
    ]
    for side, name in (("a", summary["model_a"]), ("b", summary["model_b"])):
        f = summary["failures"][side]
        rows.append(
            f"| {name} | {f['wrong']} | {f['reading']} | {f['retrieval']} | "
            f"{f['no_evidence']} | {f['failed_to_run']} |"
        )
    return rows


def _category_rows(summary: dict[str, Any]) -> list[str]:
    a, b = summary["model_a"], summary["model_b"]
    rows = [
        f"| category | n | {a} | 95% CI | {b} | 95% CI | difference (95% CI) | McNemar p | "
        "detectable (80% power) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["categories"]:
        mdd = c["power"]["min_detectable"]
        rows.append(
            f"| {c['category']} | {c['n']} | {_pct(c['a']['accuracy'])} | {_ci(c['a']['ci95'])} "
            f"| {_pct(c['b']['accuracy'])} | {_ci(c['b']['ci95'])} | {_pp(c['diff'])} "
            f"{_ci(c['diff_ci95'], _pp)} | {_p(c['mcnemar']['p_value'])} | "
            f"{'n too small' if mdd is None else f'{100 * mdd:.0f} pp'} |"
        )
    return rows


def _outcome_text(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted((counts or {}).items())) or "-"


def _category_detail_rows(summary: dict[str, Any]) -> list[str]:
    a, b = summary["model_a"], summary["model_b"]
    rows = [
        f"| category | expected outcomes | {a} retrieval R / P | {b} retrieval R / P | {a} "
        f"reading / retrieval failures | {b} reading / retrieval failures | {a} tokens in / "
        f"out, latency | {b} tokens in / out, latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["categories"]:
        cells = [c["category"], _outcome_text(c.get("outcomes"))]
        cells += [_rp(c["retrieval"][s], "retrieval") for s in "ab"]
        cells += [f"{c['failures'][s]['reading']} / {c['failures'][s]['retrieval']}" for s in "ab"]
        cells += [
            f"{_tokens(c['usage'][s])}, {c['usage'][s]['mean_latency_s']:.1f} s" for s in "ab"
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _finished(summary: dict[str, Any]) -> str:
    done = summary.get("finished")
    if not done or done["a"] == done["b"] == summary["overall"]["n"]:
        return ""
    return (
        f" (the ones both runs finished: {summary['model_a']} finished {done['a']}, "
        f"{summary['model_b']} {done['b']})"
    )


def task_markdown(
    summary: dict[str, Any], images: dict[str, str] | None = None, level: int = 1
) -> str:
    """One task's comparison: accuracy, paired tests, power, retrieval, failures, categories."""
    h = "#" * level
    label = summary.get("label", summary["task"])
    n = summary["overall"]["n"]
    lines = [
        f"{h} {label}: {summary['model_b']} vs {summary['model_a']}",
        "",
        f"Paired comparison on the same {n} samples{_finished(summary)}. "
        f"Scoring: {summary['scoring'] or '-'}.",
        "A sample that failed to run counts as wrong. Retrieval and citation scores are means "
        "over the samples with evidence records (R = recall, P = precision).",
        "",
        *_model_rows(summary),
        "",
        *_test_lines(summary),
        "",
        *_failure_rows(summary),
        "",
        f"{h}# Per category",
        "",
        *_category_rows(summary),
        "",
        *_category_detail_rows(summary),
    ]
    if images:
        lines += ["", f"{h}# Plots", ""]
        lines += [f"![{name}]({src})" for name, src in images.items()]
    return "\n".join(lines) + "\n"


def compare_markdown(summary: dict[str, Any], images: dict[str, str] | None = None) -> str:
    return task_markdown(summary, images, level=1)


# ---------------------------------------------------------------- publication (all tasks)

# Results published by others, on their own data and harnesses: context, not a baseline.
ANCHORS: tuple[tuple[str, str, str, str], ...] = (
    ("MedAgentBench v1 (300 tasks, 100 patients)", "Claude 3.5 Sonnet v2", "69.67%",
     "success rate; MedAgentBench paper"),
    ("MedAgentBench v1", "GPT-4o", "64.00%", "success rate; MedAgentBench paper"),
    ("MedAgentBench v1", "Qwen2.5-72B", "51.33%", "success rate; MedAgentBench paper"),
    ("MedAgentBench v1", "Gemma 2 27B", "19.33%", "success rate; MedAgentBench paper"),
    ("AgentClinic-MedQA", "Claude 3.5 Sonnet", "62.1%", "diagnostic accuracy; AgentClinic"),
    ("MedGemma technical report, agentic evaluation", "MedGemma vs Gemma 3", "+10.8%",
     "gain over the base model; MedGemma report"),
    ("MedGemma technical report, EHRQA", "Gemma 3 4B", "70.9", "MedGemma report"),
    ("MedGemma technical report, EHRQA", "MedGemma 1.5 4B", "89.6", "MedGemma report"),
)  # fmt: skip

HOW_TO_READ = (
    "Every sample runs on synthetic patients (PySynthea) loaded into a local FHIR server, and "
    "every reference answer is computed from those same records. So the suite can show, for "
    "two models under one harness, on the same samples: which one answers more questions "
    "right, whether the gap is larger than chance (the paired McNemar test and the bootstrap "
    "interval), how large a gap this many samples could have detected (the power line), and "
    "whether a wrong answer came from not fetching the right records or from misreading "
    "them. It cannot show clinical accuracy on real charts, which hold free-text notes, "
    "missing codes and mixed units that synthetic ones lack; it cannot rank these models "
    "against the published anchors below, which were measured on other patients, other "
    "task instances and other graders; and a category with few samples has intervals too "
    "wide to say much on its own. Read the difference and its interval, not the accuracies "
    "alone, and treat a non-significant difference as 'smaller than the detectable size', "
    "not as 'no difference'."
)


def anchors_markdown() -> list[str]:
    rows = [
        "Measured elsewhere, on other data and with other harnesses: not comparable with the "
        "numbers above, shown for scale only.",
        "",
        "| benchmark | model | published result | what it is; source |",
        "|---|---|---|---|",
    ]
    rows += [f"| {bench} | {model} | {value} | {what} |" for bench, model, value, what in ANCHORS]
    return rows


def _overview_rows(pub: dict[str, Any]) -> list[str]:
    a, b = pub["model_a"], pub["model_b"]
    rows = [
        f"| task | n | {a} (95% CI) | {b} (95% CI) | difference (95% CI) | McNemar p | "
        f"detectable (80% power) | retrieval recall {a} / {b} | compute time {a} / {b} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in pub["tasks"]:
        o = t["overall"]
        recall = [t["retrieval"][s]["retrieval_recall"]["mean"] for s in "ab"]
        wall = [t["usage"][s]["total_latency_s"] / 60 for s in "ab"]
        rows.append(
            f"| {t['label']} | {o['n']} | {_pct(o['a']['accuracy'])} {_ci(o['a']['ci95'])} | "
            f"{_pct(o['b']['accuracy'])} {_ci(o['b']['ci95'])} | {_pp(o['diff'])} "
            f"{_ci(o['diff_ci95'], _pp)} | {_p(o['mcnemar']['p_value'])} | "
            f"{_size(o['power']['min_detectable'])} | {_pct(recall[0])} / {_pct(recall[1])} | "
            f"{wall[0]:.1f} / {wall[1]:.1f} min |"
        )
    return rows


def _provenance(pub: dict[str, Any]) -> list[str]:
    machine = pub.get("machine") or {}
    lines = ["## Machine, commands and wall times", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    lines += [
        "- Compute time is the sum of per-sample latency (the wall time of a run that took "
        "one sample at a time).",
        "",
        "Run (each `compare` reuses finished runs; `--out` points at the runs copied here):",
        "",
        "```",
        *pub.get("commands", []),
        "```",
    ]
    if pub.get("notes"):
        lines += ["", pub["notes"].strip()]
    return lines


def publication_markdown(pub: dict[str, Any], images: dict[str, str]) -> str:
    """The one report of a published comparison: overview, how to read it, the anchors,
    provenance, then one section per task."""
    lines = [
        f"# {pub['title']}",
        "",
        f"{pub['model_b']} (B) against {pub['model_a']} (A) on {len(pub['tasks'])} task "
        f"run{'s' if len(pub['tasks']) != 1 else ''}, each on the same samples for both "
        "models. Every number below is rebuilt from "
        "the per-sample results files in `runs/` by the commands at the end.",
        "",
        *_overview_rows(pub),
        "",
        *[f"![{n}]({src})" for n, src in images.items() if n in ("overview", "retrieval")],
        "",
        "## How to read this",
        "",
        HOW_TO_READ,
        "",
        "## Published anchors",
        "",
        *anchors_markdown(),
        "",
        *_provenance(pub),
    ]
    for t in pub["tasks"]:
        own = {n: src for n, src in images.items() if n.startswith(f"{t['label']}-")}
        lines += ["", task_markdown(t, own, level=2).rstrip()]
    return "\n".join(lines) + "\n"


def _run_retrieval(summary: dict[str, Any]) -> list[str]:
    ret, f = summary.get("retrieval"), summary.get("failures")
    if not ret or not f:
        return []  # summaries written before retrieval was scored
    return [
        "",
        f"Retrieval recall / precision {_rp(ret, 'retrieval')}, citation recall / precision "
        f"{_rp(ret, 'citation')}. Wrong answers: {f['reading']} reading failures (all "
        f"evidence read), {f['retrieval']} retrieval failures, {f['no_evidence']} without "
        f"evidence, {f['failed_to_run']} failed to run.",
    ]


def run_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# {summary['task']}: {summary['model']}",
        "",
        f"Accuracy {_pct(summary['accuracy'])} ({summary['correct']}/{summary['n']}), "
        f"95% CI {_ci(summary['ci95'])}; {summary['errors']} failed samples. "
        f"Scoring: {summary['scoring'] or '-'}.",
        *_run_retrieval(summary),
        "",
        "| category | n | accuracy | 95% CI |",
        "|---|---|---|---|",
    ]
    for c in summary["categories"]:
        lines.append(f"| {c['category']} | {c['n']} | {_pct(c['accuracy'])} | {_ci(c['ci95'])} |")
    return "\n".join(lines) + "\n"


def _html(title: str, markdown: str) -> str:
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem}"
        "img{max-width:100%;display:block;margin:1rem 0}"
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )


# ---------------------------------------------------------------- writers


def write_compare_report(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """summary.json, report.md (plots as PNG files beside it) and report.html (embedded)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {
        "accuracy": plot_accuracy(summary),
        "difference": plot_difference(summary),
        "categories": plot_categories(summary),
    }
    for name, png in plots.items():
        (out_dir / f"{name}.png").write_bytes(png)
    write_json(out_dir / "summary.json", summary)
    md = compare_markdown(summary, {n: f"{n}.png" for n in plots})
    (out_dir / "report.md").write_text(md, encoding="utf-8")
    embedded = {
        n: "data:image/png;base64," + base64.b64encode(p).decode() for n, p in plots.items()
    }
    title = f"{summary['task']}: {summary['model_b']} vs {summary['model_a']}"
    (out_dir / "report.html").write_text(
        _html(title, compare_markdown(summary, embedded)), encoding="utf-8"
    )
    return {
        "summary": out_dir / "summary.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }


def write_run_report(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "summary.json", summary)
    md = run_markdown(summary)
    (out_dir / "report.md").write_text(md, encoding="utf-8")
    title = f"{summary['task']}: {summary['model']}"
    (out_dir / "report.html").write_text(_html(title, md), encoding="utf-8")
    return {
        "summary": out_dir / "summary.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }


def _embedded(plots: dict[str, bytes]) -> dict[str, str]:
    return {n: "data:image/png;base64," + base64.b64encode(p).decode() for n, p in plots.items()}


def write_publication(pub: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """summary.json, report.md with its PNG plots beside it, and report.html (embedded)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"overview": plot_overview(pub), "retrieval": plot_retrieval(pub)}
    for t in pub["tasks"]:
        plots[f"{t['label']}-difference"] = plot_difference(t)
        plots[f"{t['label']}-categories"] = plot_categories(t)
    for name, png in plots.items():
        (out_dir / f"{name}.png").write_bytes(png)
    write_json(out_dir / "summary.json", pub)
    md = publication_markdown(pub, {n: f"{n}.png" for n in plots})
    (out_dir / "report.md").write_text(md, encoding="utf-8")
    html = _html(pub["title"], publication_markdown(pub, _embedded(plots)))
    (out_dir / "report.html").write_text(html, encoding="utf-8")
    return {
        "summary": out_dir / "summary.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
