"""How well record text addressed to an AI is marked before a model reads it
(`wardround.fhir.injection`), with no model: recall on attacks, false positives on benign
notes, and what the compact rendering shows.

    python -m bench.injection_marking              # the table
    python -m bench.injection_marking --json       # the figures, with every miss and false hit
    python -m bench.injection_marking --charts 3   # also render 3 PySynthea charts

Attacks: bench/injection.py's five payloads in both wordings (`original`, `reworded`) and the
two held-out sets in bench/injection_notes.py (other wordings, each written before the
marker was run on it). For each payload, every sentence must lie inside a marked span ("unmarked
sentences" must be 0); and in the injected chart's DocumentReference rendered as the
planner shows it (200 note characters) and as `read_record` shows it (2,000), no part of the
payload may be visible outside the quote ("shown unmarked" must be 0).

Benign: bench/injection_notes.py's clinical notes (imperatives throughout: `BENIGN`, then
`BENIGN_2` and the hard negatives `BENIGN_HARD` that name AI tools, "the system", agents and
assistants): the share marked at all is the false-positive rate (target at most 5%). `--charts N` renders
every record of N PySynthea patients and the sample charts and counts marked lines (expected
0: nothing in them addresses an AI).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Annotated, Any

import typer

from bench.injection import WORDINGS, chart_bundle
from bench.injection_notes import BENIGN, BENIGN_2, BENIGN_HARD, HELD_OUT, HELD_OUT_2
from wardround.fhir.injection import find_injections, has_marked, strip_marked
from wardround.fhir.render import render_resource

app = typer.Typer(help=__doc__, add_completion=False)

ATTACK_SETS: dict[str, list[str]] = {
    "original": list(WORDINGS["original"].values()),
    "reworded": list(WORDINGS["reworded"].values()),
    "held_out": HELD_OUT,
    "held_out_2": HELD_OUT_2,
}
BENIGN_SETS: dict[str, list[str]] = {"benign": BENIGN, "benign_2": BENIGN_2, "hard": BENIGN_HARD}
NOTE_WIDTHS = {"planner (200 chars)": 200, "read_record (2,000 chars)": 2000}
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_SPACE = re.compile(r"\s+")


def sentences(text: str) -> list[str]:
    """The payload's sentences (at least 8 characters of text each)."""
    return [s.strip() for s in _SENTENCE.findall(text) if len(s.strip()) >= 8]


def unmarked_sentences(text: str) -> list[str]:
    """Sentences of `text` not wholly inside a span `find_injections` finds."""
    hits = find_injections(text)
    missed = []
    for sentence in sentences(text):
        at = text.find(sentence)
        if not any(h.start <= at and at + len(sentence) <= h.end for h in hits):
            missed.append(sentence)
    return missed


def shown_unmarked(line: str, payload: str) -> bool:
    """Whether any part of `payload` (a sentence's first 24 characters, whitespace
    collapsed) is visible in the rendered `line` outside a marked quote."""
    outside = strip_marked(line)
    for sentence in sentences(payload):
        probe = _SPACE.sub(" ", sentence)[:24]
        if probe in outside:
            return True
    return False


def _document(bundle: dict[str, Any]) -> dict[str, Any]:
    doc = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    )
    return {**doc, "id": "note"}


def attack_figures() -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for wording, payloads in ATTACK_SETS.items():
        missed = {p: unmarked_sentences(p) for p in payloads}
        row: dict[str, Any] = {
            "payloads": len(payloads),
            "sentences": sum(len(sentences(p)) for p in payloads),
            "payloads_marked": sum(bool(find_injections(p)) for p in payloads),
            "payloads_wholly_marked": sum(not m for m in missed.values()),
            "unmarked_sentences": sum(len(m) for m in missed.values()),
            "missed": [s for m in missed.values() for s in m],
        }
        if wording in WORDINGS:  # in the bench's chart: the note as the model sees it
            for label, width in NOTE_WIDTHS.items():
                shown = 0
                for kind, payload in WORDINGS[wording].items():
                    text = payload.format(victim="victim-id", victim_obs="victim-obs")
                    doc = _document(
                        chart_bundle(kind, "victim-id", "victim-obs", WORDINGS[wording])
                    )
                    line = render_resource(doc, note_chars=width)
                    shown += shown_unmarked(line, text) or not has_marked(line)
                row[f"shown_unmarked, {label}"] = shown
        rows[wording] = row
    return rows


def benign_figures(notes: list[str]) -> dict[str, Any]:
    false_hits = [(t, [k for h in find_injections(t) for k in h.kinds]) for t in notes]
    false_hits = [(t, k) for t, k in false_hits if k]
    # The same notes as the text of a DocumentReference: the rendering must not mark them.
    rendered = 0
    for text in notes:
        doc = {"resourceType": "DocumentReference", "id": "n", "status": "current",
               "content": [{"attachment": {"contentType": "text/plain",
                                           "data": base64.b64encode(text.encode()).decode()}}]}  # fmt: skip
        rendered += has_marked(render_resource(doc, note_chars=2000))
    return {
        "notes": len(notes),
        "marked": len(false_hits),
        "false_positive_rate": round(len(false_hits) / len(notes), 4),
        "rendered_marked": rendered,
        "false_hits": [{"text": t, "rules": k} for t, k in false_hits],
    }


def chart_figures(n: int) -> dict[str, Any]:
    """Marked lines in every record of `n` PySynthea charts and the sample charts."""
    from wardround.testing.sample_charts import (
        ann,
        bob,
        bundle_resources,
        handmade_resources,
        synthea_chart,
    )

    resources: list[dict[str, Any]] = [*handmade_resources()]
    resources += bundle_resources(ann().bundle()) + bundle_resources(bob().bundle())
    for seed in range(42, 42 + n):
        resources += bundle_resources(json.loads(synthea_chart(seed)))
    marked = [line for r in resources if has_marked(line := render_resource(r, note_chars=2000))]
    return {"records": len(resources), "marked": len(marked), "marked_lines": marked[:20]}


@app.command()
def main(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    charts: Annotated[int, typer.Option(help="also render this many PySynthea charts")] = 0,
) -> None:
    """Measure the marker on the attacks and the benign notes; print the figures."""
    benign = {name: benign_figures(notes) for name, notes in BENIGN_SETS.items()}
    report: dict[str, Any] = {"attacks": attack_figures(), "benign": benign}
    if charts:
        report["charts"] = chart_figures(charts)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    keys = ["payloads", "sentences", "payloads_wholly_marked", "unmarked_sentences",
            *(f"shown_unmarked, {label}" for label in NOTE_WIDTHS)]  # fmt: skip
    print("| attacks | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for wording, row in report["attacks"].items():
        print(f"| {wording} | " + " | ".join(str(row.get(k, "-")) for k in keys) + " |")
        for sentence in row["missed"]:
            print(f"  unmarked: {sentence}")
    print("\n| benign notes | notes | marked | rate | marked when rendered as a note |")
    print("|---|---|---|---|---|")
    for name, row in report["benign"].items():
        print(f"| {name} | {row['notes']} | {row['marked']} | {row['false_positive_rate']:.1%} "
              f"| {row['rendered_marked']} |")  # fmt: skip
        for hit in row["false_hits"]:
            print(f"  marked ({', '.join(hit['rules'])}): {hit['text']}")
    if charts:
        c = report["charts"]
        print(
            f"\nsample and {charts} PySynthea charts: {c['marked']} of {c['records']} records marked"
        )
        for line in c["marked_lines"]:
            print(f"  {line[:200]}")


if __name__ == "__main__":
    app()
