"""The image index on the real bundled images: ingest, dedupe, search, filters, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from fakes import cited_tool_call
from wardround.doctor.tiny_models import TINY_DIM, make_tiny_siglip
from wardround.evals.tasks.image_retrieval_set import transform_image
from wardround.tools.images.corpus import builtin_images, content_id
from wardround.tools.images.dicom import load_image
from wardround.tools.images.encoders import SiglipEncoder, load_encoder
from wardround.tools.images.index import EmptyIndex, EncoderMismatch, ImageIndex, build_where
from wardround.tools.images.ingest import (
    discover,
    imaging_study_index,
    ingest,
    ingest_builtin,
)
from wardround.tools.images.search import search_images
from wardround.tools.images.tools import make_image_tools


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageIndex, object]:
    chroma = tmp_path_factory.mktemp("chroma")
    index = ImageIndex(chroma, load_encoder("efficientnet-lite0", device="cpu"))
    summary = ingest_builtin(index)
    return index, summary


def _by_key(index: ImageIndex, key: str) -> str:
    got = index.vectors().get(where={"builtin": key}, include=[])
    assert len(got["ids"]) == 1
    return got["ids"][0]


def test_all_bundled_real_images_are_indexed(built: tuple[ImageIndex, object]) -> None:
    index, summary = built
    expected = builtin_images()
    assert len(expected) >= 20
    assert summary.skipped == []  # type: ignore[attr-defined]
    assert len(summary.indexed) == len(expected) == index.count()  # type: ignore[attr-defined]
    modalities = {m["modality"] for m in index.vectors().get(include=["metadatas"])["metadatas"]}
    assert {"CR", "DX", "CT", "MR", "US", "NM", "OP", "SM"} <= modalities
    meta = index.vectors().get(ids=[_by_key(index, "head-ct-cq500")], include=["metadatas"])
    record = meta["metadatas"][0]
    assert record["study_uid"] and record["series_uid"] and record["patient_id"]
    assert record["source_path"].endswith("693_UNCR.dcm")
    assert record["encoder"] == "efficientnet-lite0"
    collection_meta = index.vectors().metadata
    assert collection_meta["encoder"] == "efficientnet-lite0" and collection_meta["dim"] == 1280


def test_reingest_adds_nothing(built: tuple[ImageIndex, object]) -> None:
    index, _ = built
    before = index.count()
    again = ingest_builtin(index)
    assert again.indexed == []
    assert again.duplicates == before
    assert index.count() == before
    assert index.texts().count() == before


def test_transformed_copy_finds_its_original(built: tuple[ImageIndex, object]) -> None:
    index, _ = built
    rng = np.random.default_rng(1)
    for key, kind in (
        ("chest-xray-pa", "crop"),
        ("retina-fundus", "contrast"),
        ("shoulder-mr", "combo"),
        ("echo-cine", "jpeg"),
    ):
        path = dict((img.key, p) for img, p in builtin_images())[key]
        query = transform_image(load_image(path).pixels, kind, rng)
        hits = search_images(index, image=query, k=3)
        assert hits[0].id == content_id(path), (key, kind, [h.metadata["builtin"] for h in hits])
        assert hits[0].score > hits[1].score
        assert hits[0].ref == f"image:{hits[0].id}"


def test_text_query_goes_through_metadata(built: tuple[ImageIndex, object]) -> None:
    index, _ = built
    hits = search_images(index, text="chest x-ray", k=2)
    assert hits[0].metadata["builtin"] == "chest-xray-pa"
    hits = search_images(index, text="retinal fundus photograph", k=2)
    assert {h.metadata["builtin"] for h in hits} == {"retina-fundus", "retina-microaneurysms"}


def test_filters_by_modality_and_patient(built: tuple[ImageIndex, object]) -> None:
    index, _ = built
    hits = search_images(index, text="scan", k=10, modality="ct")
    assert hits and all(h.metadata["modality"] == "CT" for h in hits)
    chest = index.vectors().get(ids=[_by_key(index, "chest-xray-pa")], include=["metadatas"])
    patient = chest["metadatas"][0]["patient_id"]
    hits = search_images(index, image_id=_by_key(index, "tibia-xray"), k=10, patient=patient)
    assert [h.metadata["builtin"] for h in hits] == ["chest-xray-pa"]


@pytest.mark.parametrize(
    ("modality", "patient_key"),
    [
        ("US", None),
        ("CT", None),
        ("OP", None),
        (None, "chest-xray-pa"),
        ("CR", "chest-xray-pa"),
        ("MR", "chest-xray-pa"),
        ("XA", None),
    ],
)
def test_filters_match_chromas_own_where_filter(
    built: tuple[ImageIndex, object], modality: str | None, patient_key: str | None
) -> None:
    """The in-memory filter paths (over-fetch for common, id-restricted for rare filters)
    return exactly what Chroma's metadata filter returns."""
    index, _ = built
    patient = None
    if patient_key:
        got = index.vectors().get(ids=[_by_key(index, patient_key)], include=["metadatas"])
        patient = got["metadatas"][0]["patient_id"]
    query = index.vectors().get(ids=[_by_key(index, "echo-cine")], include=["embeddings"])
    vector = np.asarray(query["embeddings"][0], dtype=np.float32)
    for k in (1, 3, 10):
        ours = index.query_vector(vector, k, modality=modality, patient=patient)
        where = build_where(modality, patient)
        theirs = index.vectors().query(
            query_embeddings=[vector], n_results=k, where=where, include=["distances"]
        )
        assert [h.id for h in ours] == theirs["ids"][0]
        assert all(h.metadata for h in ours)
        if modality:
            assert all(h.metadata["modality"] == modality for h in ours)


def test_overfetch_filter_path_on_a_larger_index(tmp_path: Path) -> None:
    """With hundreds of vectors a common filter is answered from a larger unfiltered query."""
    from wardround.tools.images.index import ImageRecord

    encoder = load_encoder("efficientnet-lite0", device="cpu")
    index = ImageIndex(tmp_path / "chroma", encoder)
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(400, encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    modalities = ["CT", "MR", "US", "CR"]
    records = [
        ImageRecord(
            f"r{i}",
            vectors[i],
            {"modality": modalities[i % 4], "patient_id": f"p{i % 40}"},
            "synthetic",
        )
        for i in range(400)
    ]
    index.add(records, text_vectors=np.zeros((400, index.text_embedder.dim), np.float32) + 0.05)
    for q in range(10):
        query = vectors[q * 7] + 0.3 * rng.normal(size=encoder.dim).astype(np.float32)
        for modality, patient in (("US", None), (None, "p3"), ("CT", "p4")):
            ours = [h.id for h in index.query_vector(query, 10, modality=modality, patient=patient)]
            theirs = index.vectors().query(
                query_embeddings=[query],
                n_results=10,
                include=[],
                where=build_where(modality, patient),
            )["ids"][0]
            assert ours == theirs


def test_bad_files_are_skipped_with_reasons_never_fatal(
    built: tuple[ImageIndex, object], tmp_path: Path
) -> None:
    index, _ = built
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "corrupt.dcm").write_bytes(b"\x00garbage" * 50)
    shutil.copy(get_testdata_file("MR_truncated.dcm"), folder / "truncated.dcm")
    shutil.copy(get_testdata_file("rtplan.dcm"), folder / "plan.dcm")
    (folder / "notes.docx").write_text("not an image")
    Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(folder / "new.png")
    (folder / "new.png.json").write_text(json.dumps({"modality": "XC"}))  # a sidecar, not a file
    shutil.copy(get_testdata_file("RG1_UNCR.dcm"), folder / "same-as-bundled.dcm")
    summary = ingest(index, discover([folder]))
    reasons = dict((p.name, r) for p, r in summary.skipped)
    assert [p.name for p in summary.indexed] == ["new.png"]
    assert reasons["corrupt.dcm"].startswith("corrupt")
    assert "could not be decoded" in reasons["truncated.dcm"]
    assert "without pixel data" in reasons["plan.dcm"]
    assert reasons["notes.docx"].startswith("not an image file")
    assert reasons["same-as-bundled.dcm"].startswith("already indexed")
    assert "new.png.json" not in reasons
    assert summary.reasons()["already indexed"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert discover([empty]) == []
    assert ingest(index, []).indexed == []


def test_query_on_missing_or_empty_collection_says_what_to_do(tmp_path: Path) -> None:
    encoder = load_encoder("efficientnet-lite0", device="cpu")
    missing = ImageIndex(tmp_path / "nowhere", encoder)
    with pytest.raises(EmptyIndex, match="wardround images index"):
        missing.search_text("chest", 3)
    assert not (tmp_path / "nowhere").exists()  # a read leaves nothing behind
    empty = ImageIndex(tmp_path / "chroma", encoder)
    empty.vectors(create=True)
    with pytest.raises(EmptyIndex, match="is empty"):
        empty.search_image(np.zeros((16, 16, 3), np.uint8), 3)


def test_imaging_study_link_and_patient_reference(tmp_path: Path) -> None:
    encoder = load_encoder("efficientnet-lite0", device="cpu")
    index = ImageIndex(tmp_path / "chroma", encoder)
    path = Path(get_testdata_file("CT_small.dcm"))
    study_uid = load_image(path).metadata["study_uid"]
    studies = imaging_study_index(
        [
            {
                "resourceType": "ImagingStudy",
                "id": "is1",
                "subject": {"reference": "Patient/p42"},
                "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
            },
            {"resourceType": "Observation", "id": "o1"},
        ]
    )
    assert ingest(index, [path], imaging_studies=studies).indexed == [path]
    [hit] = search_images(index, text="ct", k=5, patient="Patient/p42")
    assert hit.metadata["imaging_study"] == "ImagingStudy/is1"
    assert hit.metadata["patient_ref"] == "Patient/p42"
    assert search_images(index, text="ct", k=5, patient="p42")[0].id == hit.id


def test_medsiglip_path_stores_and_searches_in_chroma(tmp_path: Path) -> None:
    """The MedSigLIP code path end to end, with a tiny random SigLIP in place of the weights."""
    model = make_tiny_siglip(tmp_path / "tiny-medsiglip")
    encoder = SiglipEncoder(str(model), device="cpu", batch_size=4)
    chroma = tmp_path / "chroma"
    index = ImageIndex(chroma, encoder)
    files = [p for _, p in builtin_images()[:6]]
    summary = ingest(index, files, batch_size=4)
    assert len(summary.indexed) == 6
    assert index.name == "images-tiny-medsiglip"
    meta = index.vectors().metadata
    assert meta["encoder"] == "tiny-medsiglip" and meta["dim"] == TINY_DIM
    stored = index.vectors().get(include=["embeddings"])["embeddings"]
    assert np.asarray(stored).shape == (6, TINY_DIM)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-4)
    # Text goes through the SigLIP text tower into image space...
    hits = index.search_text("chest x-ray", 3)
    assert len(hits) == 3 and all(-1.0 <= h.score <= 1.0 for h in hits)
    # ...and an indexed image finds itself first.
    first = load_image(files[0]).pixels
    assert index.search_image(first, 1)[0].id == content_id(files[0])
    # Reopened from disk in a fresh index object, the collection still works.
    reopened = ImageIndex(chroma, encoder)
    assert reopened.count() == 6
    assert reopened.search_text("chest x-ray", 3)[0].id == hits[0].id
    # A collection built by one encoder refuses another.
    other = ImageIndex(
        chroma, load_encoder("efficientnet-lite0", device="cpu"), collection=index.name
    )
    with pytest.raises(EncoderMismatch, match="refusing to mix"):
        ingest(other, [Path(get_testdata_file("MR_small.dcm"))])
    # Searching with the wrong encoder names the index that is there.
    default = ImageIndex(chroma, load_encoder("efficientnet-lite0", device="cpu"))
    with pytest.raises(EmptyIndex, match=r"images-tiny-medsiglip \(--encoder medsiglip\)"):
        default.search_text("chest", 3)


def test_search_images_tool_contract(built: tuple[ImageIndex, object], tmp_path: Path) -> None:
    index, _ = built
    [tool] = make_image_tools(index)
    call = cited_tool_call(tool, "search_images", text="echocardiogram", k=3, modality="US")
    message = tool.invoke(call)
    assert message.content.startswith("3 image(s)")
    assert len(message.artifact) == 3 and all(a.startswith("image:") for a in message.artifact)
    assert message.artifact[0] in message.content
    bad = tool.invoke({**call, "args": {"text": "x", "image_id": "image:abc"}})
    assert "exactly one of" in bad.content
    missing = tool.invoke({**call, "args": {"image_path": str(tmp_path / "none.dcm")}})
    assert missing.content.startswith("Error: no such file")
    [empty_tool] = make_image_tools(ImageIndex(tmp_path / "none", index.encoder))
    empty = empty_tool.invoke(call)
    assert "wardround images index" in empty.content and empty.artifact == []
