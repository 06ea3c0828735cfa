"""A retrieval set for the image search, built from the real images that ship on PyPI.

Each image is turned into transformed copies (crops, rotations, contrast and brightness
changes, JPEG recompression): each copy is a query whose right answer is the original image,
so recall@k measures image-to-image search. A few text queries with their relevant images
test text-to-image search. Used by the `images` eval task and `bench/retrieval.py`.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from wardround.tools.images.corpus import builtin_images, content_id
from wardround.tools.images.dicom import ImageLoadError, load_image

# Text queries with the builtin images that answer them (for text-to-image recall).
TEXT_QUERIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chest x-ray", ("chest-xray-pa", "cat-thorax-xray")),
    ("head CT scan of the brain", ("head-ct-cq500", "head-ct-small", "ct-perfusion")),
    ("echocardiogram of the heart", ("echo-tee", "echo-cine", "ultrasound-3d-cine")),
    ("renal ultrasound", ("kidney-ultrasound",)),
    ("retinal fundus photograph", ("retina-fundus", "retina-microaneurysms")),
    ("immunohistochemistry microscopy slide", ("ihc-slide",)),
    ("MRI of the shoulder", ("shoulder-mr",)),
    ("nuclear medicine bone scan", ("bone-scan",)),
    ("liver lesion on MRI", ("liver-mr",)),
    ("radiograph of the leg bone", ("tibia-xray",)),
)

TRANSFORMS = ("crop", "rotate", "contrast", "jpeg", "combo")
# Query copies are stored at most this large: encoders look at 224 to 448 pixels.
QUERY_MAX_SIDE = 512


def transform_image(pixels: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A plausible re-acquisition of the same image: cropped, rotated, re-contrasted..."""
    img = Image.fromarray(pixels)
    if kind in ("crop", "combo"):
        width, height = img.size
        fx, fy = rng.uniform(0.7, 0.9, size=2)
        cw, ch = max(8, int(width * fx)), max(8, int(height * fy))
        left = int(rng.integers(0, width - cw + 1))
        top = int(rng.integers(0, height - ch + 1))
        img = img.crop((left, top, left + cw, top + ch))
    if kind in ("rotate", "combo"):
        angle = float(rng.uniform(5, 20)) * (1 if rng.random() < 0.5 else -1)
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    if kind in ("contrast", "combo"):
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.6, 1.5)))
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.75, 1.25)))
        gamma = float(rng.uniform(0.7, 1.4))
        lut = [min(255, round(255 * (i / 255) ** gamma)) for i in range(256)] * len(img.getbands())
        img = img.point(lut)
    if kind == "jpeg":
        scale = float(rng.uniform(0.4, 0.7))
        img = img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=int(rng.integers(40, 70)))
        img = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform {kind!r}; choose from {', '.join(TRANSFORMS)}")
    return np.asarray(img.convert("RGB"))


@dataclass
class RetrievalTarget:
    key: str
    image_id: str  # the id the index gives the original file
    path: str
    modality: str
    body_part: str
    description: str


@dataclass
class RetrievalQuery:
    query_id: str
    path: str
    target_key: str
    target_id: str
    transform: str


@dataclass
class TextQuery:
    text: str
    relevant_keys: list[str]
    relevant_ids: list[str]


@dataclass
class RetrievalSet:
    """Originals to index, transformed copies to query with, and text queries."""

    targets: list[RetrievalTarget] = field(default_factory=list)
    queries: list[RetrievalQuery] = field(default_factory=list)
    text_queries: list[TextQuery] = field(default_factory=list)

    def target_paths(self) -> list[Path]:
        return [Path(t.path) for t in self.targets]

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": [asdict(t) for t in self.targets],
            "queries": [asdict(q) for q in self.queries],
            "text_queries": [asdict(q) for q in self.text_queries],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetrievalSet:
        return cls(
            targets=[RetrievalTarget(**t) for t in data["targets"]],
            queries=[RetrievalQuery(**q) for q in data["queries"]],
            text_queries=[TextQuery(**q) for q in data["text_queries"]],
        )


def build_retrieval_set(
    out_dir: Path, *, variants_per_image: int = 4, seed: int = 0
) -> RetrievalSet:
    """Write transformed copies of every installed curated image and a manifest.json.

    Deterministic for a given seed; a second call reuses the manifest if it matches.
    """
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.json"
    settings = {"variants_per_image": variants_per_image, "seed": seed}
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("settings") == settings and all(
            Path(q["path"]).exists() for q in data["queries"]
        ):
            return RetrievalSet.from_json(data)
    queries_dir = out_dir / "queries"
    queries_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    result = RetrievalSet()
    for image, path in builtin_images():
        try:
            loaded = load_image(path)
        except ImageLoadError:
            continue  # a decoder missing on this machine; the target is left out
        target = RetrievalTarget(
            key=image.key,
            image_id=content_id(path),
            path=str(path),
            modality=image.modality,
            body_part=image.body_part,
            description=image.description,
        )
        result.targets.append(target)
        base = Image.fromarray(loaded.pixels)
        base.thumbnail((QUERY_MAX_SIDE, QUERY_MAX_SIDE), Image.Resampling.BILINEAR)
        for n in range(variants_per_image):
            kind = TRANSFORMS[n % len(TRANSFORMS)]
            pixels = transform_image(np.asarray(base), kind, rng)
            query_path = queries_dir / f"{image.key}__{n:02d}_{kind}.png"
            Image.fromarray(pixels).save(query_path)
            result.queries.append(
                RetrievalQuery(
                    query_id=f"{image.key}#{n}",
                    path=str(query_path),
                    target_key=image.key,
                    target_id=target.image_id,
                    transform=kind,
                )
            )
    ids = {t.key: t.image_id for t in result.targets}
    for text, keys in TEXT_QUERIES:
        present = [k for k in keys if k in ids]
        if present:
            result.text_queries.append(TextQuery(text, present, [ids[k] for k in present]))
    manifest.write_text(json.dumps({"settings": settings, **result.to_json()}, indent=1))
    return result
