"""`wardround doctor`: are MedGemma and MedSigLIP right on this machine's best device?"""

from __future__ import annotations

import os

import typer

from wardround.cli.common import clean_errors, console, fail, load_settings


def doctor(
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda, cuda:N or mps (default: WARDROUND_DEVICE)"
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="images per encoder batch (WARDROUND_ENCODER_BATCH_SIZE)"
    ),
    throughput: bool = typer.Option(
        False, "--throughput", help="also time preprocessing against embedding for the encoders"
    ),
    images: int = typer.Option(32, "--images", min=1, help="images per --throughput run"),
) -> None:
    """Check the in-process MedGemma and MedSigLIP paths with tiny random models of their classes.

    Loads them through wardround's own code on the configured device and reports placement,
    dtype, embeddings, agreement with the CPU, an image chat request and, on a GPU, a
    MedSigLIP-448-sized batch timing. What cannot run here is listed as skipped, with why.
    Exits 1 when a check fails.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tiny local models only, never the hub
    settings = load_settings(device=device, encoder_batch_size=batch_size)
    _quiet_transformers()
    from wardround.doctor.checks import THROUGHPUT_HEADER, encoder_throughput, run_doctor

    with console.status("building tiny SigLIP and Gemma 3 models and checking them"):
        report = run_doctor(settings.device, settings.encoder_batch_size)
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)
    if not report.ok:
        fail("a check failed (see above)")
    if throughput:
        with clean_errors(RuntimeError, OSError), console.status("timing the image encoders"):
            rows = encoder_throughput(settings.device, settings.encoder_batch_size, images)
        title = f"\nencoder throughput, {images} images of 512x512, best of 3 (seconds):"
        console.print(title, highlight=False)
        for line in [THROUGHPUT_HEADER, *(row.line() for row in rows)]:
            console.print(line, highlight=False, soft_wrap=True)


def _quiet_transformers() -> None:
    # Progress bars and config warnings about random tiny models would bury the report.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
