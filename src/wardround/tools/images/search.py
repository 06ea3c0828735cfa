"""Image search as one call: by text, by an image file or array, or by an indexed image id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wardround.tools.images.dicom import load_image
from wardround.tools.images.encoders import DEFAULT_ENCODER, load_encoder
from wardround.tools.images.index import ImageHit, ImageIndex, ImageIndexError, TextMode


def open_image_index(
    chroma_dir: Path | str,
    encoder: str = DEFAULT_ENCODER,
    *,
    model: str | None = None,
    collection: str | None = None,
    allow_download: bool = False,
) -> ImageIndex:
    """The index of `encoder` ("efficientnet-lite0" or "medsiglip") under `chroma_dir` (a
    directory, or a Chroma server's URL)."""
    return ImageIndex(
        chroma_dir,
        load_encoder(encoder, model, allow_download=allow_download),
        collection=collection,
    )


def search_images(
    index: ImageIndex,
    *,
    text: str | None = None,
    image: Path | str | np.ndarray | None = None,
    image_id: str | None = None,
    k: int = 10,
    modality: str | None = None,
    patient: str | None = None,
    text_mode: TextMode = "auto",
) -> list[ImageHit]:
    """Top-k images for exactly one of `text`, `image` (path or RGB array), `image_id`."""
    given = [
        bool(text),
        image is not None and not (isinstance(image, str) and not image),
        bool(image_id),
    ]
    if sum(given) != 1:
        raise ImageIndexError("give exactly one of a text, an image or an image id")
    if k < 1:
        raise ImageIndexError("k must be at least 1")
    if text:
        return index.search_text(text, k, modality=modality, patient=patient, mode=text_mode)
    if image_id:
        return index.search_similar(image_id, k, modality=modality, patient=patient)
    pixels = image if isinstance(image, np.ndarray) else load_image(Path(str(image))).pixels
    return index.search_image(pixels, k, modality=modality, patient=patient)


def hit_line(hit: ImageHit) -> str:
    """One compact line per hit, the form the model reads."""
    meta = hit.metadata
    fields = [hit.ref, f"score {hit.score:.3f}"]
    what = " ".join(str(meta[k]) for k in ("modality", "body_part") if meta.get(k))
    if what:
        fields.append(what)
    if meta.get("description"):
        fields.append(str(meta["description"])[:100])
    for key, label in (
        ("patient_ref", "patient"),
        ("patient_id", "patient id"),
        ("imaging_study", "study"),
        ("study_date", "date"),
    ):
        if meta.get(key):
            fields.append(f"{label} {meta[key]}")
    if meta.get("report"):
        fields.append(f"report: {str(meta['report'])[:160]}")
    return " | ".join(fields)


def hit_json(hit: ImageHit) -> dict[str, Any]:
    return {"id": hit.ref, "score": round(hit.score, 4), **hit.metadata}
