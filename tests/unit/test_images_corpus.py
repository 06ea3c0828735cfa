"""The bundled real images and the retrieval set built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wardround.evals.tasks.image_retrieval_set import (
    TEXT_QUERIES,
    TRANSFORMS,
    RetrievalSet,
    build_retrieval_set,
    transform_image,
)
from wardround.tools.images.corpus import BUILTIN_IMAGES, builtin_images, content_id
from wardround.tools.images.dicom import load_image


def test_every_curated_image_is_installed_and_loads() -> None:
    found = builtin_images()
    assert [image.key for image, _ in found] == [image.key for image in BUILTIN_IMAGES]
    assert len({image.key for image in BUILTIN_IMAGES}) == len(BUILTIN_IMAGES)
    packages = {image.package for image, _ in found}
    assert packages == {"pydicom-data", "pydicom", "deid-data", "scikit-image"}
    ids = {content_id(path) for _, path in found}
    assert len(ids) == len(found)  # no file is listed twice
    keys = {image.key for image in BUILTIN_IMAGES}
    assert all(set(relevant) <= keys for _, relevant in TEXT_QUERIES)


def test_transforms_change_the_image_but_keep_it_usable() -> None:
    path = dict((image.key, p) for image, p in builtin_images())["chest-xray-pa"]
    pixels = load_image(path).pixels
    rng = np.random.default_rng(0)
    for kind in TRANSFORMS:
        out = transform_image(pixels, kind, rng)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        assert min(out.shape[:2]) >= 0.35 * min(pixels.shape[:2])
        if out.shape == pixels.shape:
            assert np.abs(out.astype(int) - pixels.astype(int)).mean() > 1.0


def test_retrieval_set_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    first = build_retrieval_set(tmp_path / "a", variants_per_image=2, seed=3)
    second = build_retrieval_set(tmp_path / "b", variants_per_image=2, seed=3)
    assert len(first.targets) == len(BUILTIN_IMAGES)
    assert len(first.queries) == 2 * len(first.targets)
    assert {q.transform for q in first.queries} == set(TRANSFORMS[:2])
    for q1, q2 in zip(first.queries, second.queries, strict=True):
        assert Path(q1.path).read_bytes() == Path(q2.path).read_bytes()
    targets = {t.key: t for t in first.targets}
    assert all(q.target_id == targets[q.target_key].image_id for q in first.queries)
    assert first.text_queries and all(q.relevant_ids for q in first.text_queries)
    reloaded = RetrievalSet.from_json(first.to_json())
    assert reloaded == first
    # A second call reuses the manifest instead of rewriting the images.
    again = build_retrieval_set(tmp_path / "a", variants_per_image=2, seed=3)
    assert again == first
