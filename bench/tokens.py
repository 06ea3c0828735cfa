"""Tokens a model reads: the compact FHIR rendering against raw JSON of the same resources.

Counts use the embedded model's own tokenizer (its GGUF vocabulary, loaded without weights).
Raw JSON is measured in its most compact form (no spaces), so the ratio is a lower bound.

    python -m bench.tokens                              # seeded patients on the configured server
    python -m bench.tokens --base-url URL --patients 5  # another server
    python -m bench.tokens --bundles DIR                # PySynthea/carebundle bundles in DIR or DIR/fhir
    python -m bench.tokens --model gemma3-270m --json
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from wardround.fhir.client import FhirClient, FhirError
from wardround.fhir.render import render_resource
from wardround.settings import Settings

GOAL = 5.0
app = typer.Typer(help=__doc__, add_completion=False)


def load_token_counter(model: str, settings: Settings) -> Callable[[str], int]:
    """A function counting tokens with the GGUF tokenizer of an embedded model preset."""
    from llama_cpp import Llama

    from wardround.agents.embedded import gguf_path
    from wardround.agents.presets import get_preset

    llm = Llama(
        model_path=str(gguf_path(get_preset(model), settings.cache_dir)),
        vocab_only=True,
        verbose=False,
    )

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return count


def charts_from_bundles(directory: Path) -> list[list[dict[str, Any]]]:
    """One list of resources per Bundle file in `directory` (or `directory/fhir`)."""
    files = sorted(directory.glob("*.json")) or sorted((directory / "fhir").glob("*.json"))
    charts = []
    for path in files:
        bundle = json.loads(path.read_text())
        if bundle.get("resourceType") == "Bundle":
            charts.append([e["resource"] for e in bundle.get("entry", []) if "resource" in e])
    return charts


async def charts_from_server(
    settings: Settings, patients: int, patient_ids: list[str]
) -> list[list[dict[str, Any]]]:
    """`Patient/$everything` for the given patients, or the first N on the server."""
    async with FhirClient.from_settings(settings) as client:
        if not patient_ids:
            found = await client.search("Patient", {"_count": patients}, limit=patients)
            patient_ids = [p["id"] for p in found]
        return [await client.everything(pid) for pid in patient_ids]


@dataclass
class Row:
    resources: int = 0
    raw: int = 0
    compact: int = 0

    @property
    def ratio(self) -> float:
        return self.raw / self.compact if self.compact else 0.0


@dataclass
class Report:
    by_type: dict[str, Row] = field(default_factory=dict)
    total: Row = field(default_factory=Row)

    def as_dict(self) -> dict[str, Any]:
        def row(r: Row) -> dict[str, Any]:
            return {"resources": r.resources, "raw_tokens": r.raw, "compact_tokens": r.compact,
                    "ratio": round(r.ratio, 2)}  # fmt: skip

        return {"total": row(self.total), "by_type": {t: row(r) for t, r in self.by_type.items()}}


def measure(charts: list[list[dict[str, Any]]], count: Callable[[str], int]) -> Report:
    """Token counts per resource type: compact JSON vs the rendered line (plus its newline)."""
    report = Report()
    for chart in charts:
        for resource in chart:
            row = report.by_type.setdefault(resource.get("resourceType", "?"), Row())
            raw = count(json.dumps(resource, separators=(",", ":"), ensure_ascii=False))
            compact = count(render_resource(resource) + "\n")
            for target in (row, report.total):
                target.resources += 1
                target.raw += raw
                target.compact += compact
    report.by_type = dict(sorted(report.by_type.items(), key=lambda kv: -kv[1].raw))
    return report


def show(report: Report, model: str, charts: int, console: Console) -> None:
    table = Table(title=f"Tokens ({model} tokenizer), {charts} chart(s)")
    for name in ("type", "resources", "raw JSON", "compact", "ratio"):
        table.add_column(name, justify="left" if name == "type" else "right")
    for rtype, row in report.by_type.items():
        table.add_row(
            rtype, str(row.resources), f"{row.raw:,}", f"{row.compact:,}", f"{row.ratio:.1f}x"
        )
    total = report.total
    table.add_row("total", str(total.resources), f"{total.raw:,}", f"{total.compact:,}", f"{total.ratio:.1f}x",
                  style="bold")  # fmt: skip
    console.print(table)
    verdict = "meets" if total.ratio >= GOAL else "MISSES"
    console.print(
        f"compact/raw ratio: {total.ratio:.1f}x fewer tokens ({verdict} the {GOAL:.0f}x goal)"
    )


@app.command()
def main(
    bundles: Annotated[Path | None, typer.Option(help="Directory of FHIR Bundle files")] = None,
    base_url: Annotated[str | None, typer.Option(help="FHIR base URL (default: settings)")] = None,
    patients: Annotated[int, typer.Option(min=1, help="Patients to take from the server")] = 5,
    patient: Annotated[list[str] | None, typer.Option(help="Patient id (repeatable)")] = None,
    model: Annotated[
        str, typer.Option(help="Embedded model whose tokenizer counts")
    ] = "smollm2-135m",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Print how many fewer tokens the compact rendering costs than raw FHIR JSON."""
    console = Console(stderr=as_json)
    settings = Settings() if base_url is None else Settings(fhir_base_url=base_url)
    try:
        if bundles is not None:
            if not bundles.is_dir():
                raise ValueError(f"{bundles} is not a directory")
            charts = charts_from_bundles(bundles)
        else:
            charts = asyncio.run(charts_from_server(settings, patients, patient or []))
        if not charts:
            raise ValueError("no charts found")
        count = load_token_counter(model, settings)
    except (FhirError, ValueError, RuntimeError) as exc:
        console.print(f"error: {exc}", style="red", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(1) from None
    report = measure(charts, count)
    if as_json:
        print(json.dumps({"model": model, "charts": len(charts), **report.as_dict()}))
    else:
        show(report, model, len(charts), console)


if __name__ == "__main__":
    app()
