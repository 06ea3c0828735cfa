"""`wardround images index|search|retrieval-set`: medical image search over Chroma."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from wardround.cli.common import clean_errors, console, fail, load_settings, progress_bar

if TYPE_CHECKING:
    from wardround.tools.images.index import ImageIndex
    from wardround.tools.images.ingest import IngestSummary

app = typer.Typer(
    help="Medical image search: index DICOM/PNG/JPEG folders, search by text or by image.",
    no_args_is_help=True,
)

ENCODER_HELP = "efficientnet-lite0 (embedded default, CPU) or medsiglip (MedSigLIP, GPU advised)"
EncoderOpt = typer.Option(
    "efficientnet-lite0", "--encoder", envvar="WARDROUND_IMAGE_ENCODER", help=ENCODER_HELP
)
ModelOpt = typer.Option(
    None,
    "--model",
    envvar="WARDROUND_IMAGE_MODEL",
    help="SigLIP checkpoint for --encoder medsiglip: hub id or local folder "
    "(default google/medsiglip-448)",
)
DownloadOpt = typer.Option(
    False,
    "--allow-download",
    help="let the MedSigLIP weights download from the Hugging Face hub (needs a token)",
)
CollectionOpt = typer.Option(
    None, "--collection", help="collection name (default images-<encoder>)"
)
DirArg = typer.Argument(None, help="folder (searched recursively) or file")
StudiesOpt = typer.Option(
    None, help="FHIR ImagingStudy resources (Bundle, JSON list or NDJSON) to link by Study UID"
)
ImageOpt = typer.Option(None, "--image", help="find images like this file")
OutArg = typer.Argument(..., help="folder for the query images and manifest.json")


def _errors() -> tuple[type[BaseException], ...]:
    from chromadb.errors import ChromaError  # e.g. an index folder that is not a Chroma store

    from wardround.tools.images.dicom import ImageLoadError
    from wardround.tools.images.encoders import EncoderUnavailable
    from wardround.tools.images.index import ImageIndexError

    return (ImageIndexError, ImageLoadError, EncoderUnavailable, ChromaError, OSError)


def _open_index(encoder: str, model: str | None, collection: str | None, allow_download: bool):
    from transformers.utils import logging as hf_logging

    from wardround.tools.images.search import open_image_index

    hf_logging.disable_progress_bar()  # the CLI draws its own progress
    settings = load_settings()
    with clean_errors(*_errors()), console.status(f"loading the {encoder} encoder"):
        return open_image_index(
            settings.chroma_url or settings.chroma_dir,
            encoder,
            model=model,
            collection=collection,
            allow_download=allow_download,
        )


def _files_to_index(directory: Path | None, builtin: bool) -> tuple[list[Path], dict[Path, dict]]:
    from wardround.tools.images.corpus import builtin_images, builtin_metadata
    from wardround.tools.images.ingest import discover

    files: list[Path] = []
    metadata: dict[Path, dict] = {}
    if builtin:
        for image, path in builtin_images():
            files.append(path)
            metadata[path] = builtin_metadata(image)
    if directory is not None:
        files.extend(discover([directory]))
    return files, metadata


def _report(
    summary: IngestSummary, total: int, target: str, index: ImageIndex, verbose: bool
) -> None:
    """What was indexed and why the rest was skipped (20 reasons unless `verbose`)."""
    console.print(
        f"[bold]{len(summary.indexed)}[/] indexed, {summary.duplicates} already indexed, "
        f"{len(summary.skipped) - summary.duplicates} skipped, from {total} file(s) in "
        f"{target} -> collection {index.name!r} ({index.count()} images) in {index.chroma_dir}",
        highlight=False,
        soft_wrap=True,
    )
    problems = [(p, r) for p, r in summary.skipped if not r.startswith("already indexed")]
    shown = problems if verbose else problems[:20]
    for path, reason in shown:
        console.print(f"  skipped {path}: {reason}", highlight=False, soft_wrap=True)
    if len(shown) < len(problems):
        console.print(f"... and {len(problems) - len(shown)} more (--verbose lists all)")


@app.command("index")
def index(
    directory: Path | None = DirArg,
    builtin: bool = typer.Option(
        False, "--builtin", help="index the real images shipped in pydicom-data, deid-data, skimage"
    ),
    imaging_studies: Path | None = StudiesOpt,
    encoder: str = EncoderOpt,
    model: str | None = ModelOpt,
    allow_download: bool = DownloadOpt,
    collection: str | None = CollectionOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="list every skipped file"),
) -> None:
    """Index images; files that cannot be used are skipped with a reason, never fatal."""
    from wardround.tools.images.ingest import ingest, load_imaging_studies

    if directory is None and not builtin:
        fail("give a DIR to index, or --builtin for the bundled real images")
    if directory is not None and not directory.exists():
        fail(f"no such file or folder: {directory}")
    studies = None
    if imaging_studies is not None:
        with clean_errors(OSError, ValueError):
            studies = load_imaging_studies(imaging_studies)

    files, metadata = _files_to_index(directory, builtin)
    target = "the bundled images" if directory is None else str(directory)
    if not files:
        console.print(f"Nothing to index: {target} holds no files (empty folder).")
        return

    index = _open_index(encoder, model, collection, allow_download)
    with (
        clean_errors(*_errors()),
        progress_bar("indexing") as progress,
    ):
        task = progress.add_task("", total=len(files))

        def step(path: Path, reason: str | None) -> None:
            progress.update(task, advance=1, description=path.name[:40])

        summary = ingest(index, files, metadata=metadata, imaging_studies=studies, on_file=step)

    _report(summary, len(files), target, index, verbose)


@app.command("search")
def search(
    text: str | None = typer.Option(None, "--text", help="describe the images wanted"),
    image: Path | None = ImageOpt,
    image_id: str | None = typer.Option(None, "--id", help="find images like an indexed one"),
    k: int = typer.Option(10, "--k", min=1, max=200, help="how many results"),
    modality: str | None = typer.Option(None, "--modality", help="only this modality, e.g. CT"),
    patient: str | None = typer.Option(None, "--patient", help="only this patient"),
    text_mode: str = typer.Option(
        "auto", help="auto, image-space (MedSigLIP text tower) or metadata (report text)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    encoder: str = EncoderOpt,
    model: str | None = ModelOpt,
    allow_download: bool = DownloadOpt,
    collection: str | None = CollectionOpt,
) -> None:
    """Search the image index by --text, --image or --id."""
    from wardround.tools.images.index import TEXT_MODES
    from wardround.tools.images.search import hit_json, hit_line, search_images

    if sum(x is not None for x in (text, image, image_id)) != 1:
        fail("give exactly one of --text, --image or --id")
    if image is not None and not image.is_file():
        fail(f"no such image file: {image}")
    if text_mode not in TEXT_MODES:
        fail(f"unknown --text-mode {text_mode!r}: use auto, image-space or metadata")
    index = _open_index(encoder, model, collection, allow_download)
    with clean_errors(*_errors()):
        hits = search_images(
            index,
            text=text,
            image=image,
            image_id=image_id,
            k=k,
            modality=modality,
            patient=patient,
            text_mode=text_mode,
        )
    if as_json:
        typer.echo(json.dumps([hit_json(h) for h in hits], indent=1))
        return
    if not hits:
        console.print("No image matches.")
        return
    for hit in hits:
        console.print(hit_line(hit), highlight=False, soft_wrap=True)


@app.command("retrieval-set")
def retrieval_set(
    out: Path = OutArg,
    variants: int = typer.Option(4, min=1, max=50, help="transformed copies per image"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """Write the image-retrieval eval set: transformed copies of the bundled real images."""
    from wardround.evals.tasks.image_retrieval_set import build_retrieval_set

    with clean_errors(OSError), console.status("writing transformed copies"):
        result = build_retrieval_set(out, variants_per_image=variants, seed=seed)
    console.print(
        f"{len(result.targets)} target images, {len(result.queries)} image queries, "
        f"{len(result.text_queries)} text queries -> {out / 'manifest.json'}"
    )
