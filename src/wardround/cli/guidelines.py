"""`wardround guidelines index|search|list`: hybrid search over clinical guideline passages."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from wardround.cli.common import clean_errors, console, fail, load_settings, progress_bar

app = typer.Typer(
    help="Clinical guideline lookup: index Markdown/HTML/PDF, search with cited passages.",
    no_args_is_help=True,
)
CollectionOpt = typer.Option("guidelines", "--collection", help="collection name")
DirArg = typer.Argument(None, help="folder or file to index (default: the bundled starter corpus)")


def _index(collection: str):
    from wardround.tools.guidelines.index import GuidelineIndex

    settings = load_settings()
    return GuidelineIndex(settings.chroma_url or settings.chroma_dir, collection=collection)


def _errors() -> tuple[type[BaseException], ...]:
    from chromadb.errors import ChromaError  # e.g. an index folder that is not a Chroma store

    from wardround.tools.guidelines.index import GuidelineIndexError

    return (GuidelineIndexError, ChromaError, OSError)


@app.command("index")
def index(
    directory: Path | None = DirArg,
    collection: str = CollectionOpt,
) -> None:
    """Index guideline documents; each file replaces its earlier chunks (no duplicates)."""
    from transformers.utils import logging as hf_logging

    from wardround.tools.guidelines.index import index_files
    from wardround.tools.guidelines.ingest import corpus_dir, discover

    source = directory or corpus_dir()
    if not source.exists():
        fail(f"no such file or folder: {source}")
    files = discover([source])
    label = "the starter corpus" if directory is None else str(directory)
    if not files:
        console.print(f"Nothing to index: {label} holds no files (empty folder).")
        return
    hf_logging.disable_progress_bar()
    target = _index(collection)
    with (
        clean_errors(*_errors()),
        progress_bar("indexing") as progress,
    ):
        task = progress.add_task("", total=len(files))
        indexed, skipped = index_files(
            target,
            files,
            on_file=lambda path, _: progress.update(task, advance=1, description=path.name[:40]),
        )
    chunks = sum(n for _, n in indexed)
    console.print(
        f"[bold]{len(indexed)}[/] document(s) indexed as {chunks} passages, {len(skipped)} "
        f"skipped, from {label} -> collection {target.name!r} ({target.count()} passages) "
        f"in {target.chroma_dir}",
        highlight=False,
        soft_wrap=True,
    )
    for path, reason in skipped:
        console.print(f"  skipped {path}: {reason}", highlight=False, soft_wrap=True)


@app.command("search")
def search(
    query: str = typer.Argument(..., help="what to look up"),
    k: int = typer.Option(5, "--k", min=1, max=50, help="how many passages"),
    source: str | None = typer.Option(None, "--source", help="only this document key"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    collection: str = CollectionOpt,
) -> None:
    """Search guideline passages (dense + BM25, reciprocal-rank fusion)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with clean_errors(*_errors()):
        hits = _index(collection).search(query, k, source=source)
    if as_json:
        rows = [
            {
                "id": h.ref,
                "score": round(h.score, 5),
                "source": h.source,
                "title": h.title,
                "section": h.section,
                "citation": h.citation,
                "text": h.text,
                "dense_rank": h.dense_rank,
                "lexical_rank": h.lexical_rank,
            }
            for h in hits
        ]
        typer.echo(json.dumps(rows, indent=1))
        return
    if not hits:
        console.print("No passage matches.")
        return
    for n, hit in enumerate(hits, start=1):
        console.print(f"[bold cyan]{n}. {hit.ref}[/]  [dim]{hit.score:.4f}[/]", highlight=False)
        console.print(f"   [bold]{hit.title} > {hit.section}[/]", highlight=False)
        if hit.citation:
            console.print(f"   [dim]source: {hit.citation}[/]", highlight=False)
        console.print(f"   {hit.text}", highlight=False)


@app.command("list")
def list_sources(collection: str = CollectionOpt) -> None:
    """List the indexed guideline documents."""
    with clean_errors(*_errors()):
        target = _index(collection)
        target.collection()
        sources = target.sources()
    for key, title in sources:
        console.print(f"{key:40} {title}", highlight=False)
    console.print(f"[dim]{len(sources)} document(s)[/]")
