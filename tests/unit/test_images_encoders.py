"""Encoders: the MedSigLIP code path on a tiny random SigLIP, and the real EfficientNet-Lite0."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from wardround.doctor.tiny_models import (
    TINY_DIM,
    TINY_IMAGE_SIZE,
    TINY_TEXT_TOKENS,
    make_tiny_siglip,
)
from wardround.tools.images.encoders import (
    EncoderUnavailable,
    ImageEncoderEmbeddingFunction,
    SiglipEncoder,
    encoder_slug,
    load_encoder,
    pipelined,
)


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> SiglipEncoder:
    path = make_tiny_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")
    return SiglipEncoder(str(path), device="cpu", batch_size=3)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(40, 60), (64, 64), (25, 90), (100, 30)]
    return [rng.integers(0, 256, (*shapes[i % 4], 3), dtype=np.uint8) for i in range(n)]


def test_siglip_preprocessing_matches_the_checkpoint_processor(tiny_siglip: SiglipEncoder) -> None:
    pixels = tiny_siglip.preprocess(_images(2))
    assert tuple(pixels.shape) == (2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    # mean 0.5 / std 0.5 normalisation maps 0..255 to -1..1
    assert float(pixels.min()) >= -1.0 - 1e-5 and float(pixels.max()) <= 1.0 + 1e-5
    white = tiny_siglip.preprocess([np.full((10, 10, 3), 255, np.uint8)])
    assert np.allclose(white.numpy(), 1.0, atol=1e-5)


def test_siglip_image_embeddings_are_unit_norm_and_batch_independent(
    tiny_siglip: SiglipEncoder,
) -> None:
    images = _images(7)
    batched = tiny_siglip.embed_images(images)  # batches of 3, 3, 1
    one_by_one = np.concatenate([tiny_siglip.embed_images([img]) for img in images])
    assert batched.shape == (7, TINY_DIM) == (7, tiny_siglip.dim)
    assert batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def test_siglip_text_embeddings_share_the_image_space(tiny_siglip: SiglipEncoder) -> None:
    texts = ["chest x-ray", "head ct scan", "retina fundus photograph", "chest x-ray"]
    vectors = tiny_siglip.embed_texts(texts)
    assert vectors.shape == (4, TINY_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[3], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])
    tokens = tiny_siglip.processor(
        text=texts[:1],
        padding="max_length",
        truncation=True,
        max_length=tiny_siglip.max_text_tokens,
        return_tensors="pt",
    )
    assert tokens["input_ids"].shape[1] == TINY_TEXT_TOKENS == tiny_siglip.max_text_tokens


def test_siglip_name_comes_from_the_model_id() -> None:
    assert encoder_slug("google/medsiglip-448") == "medsiglip-448"
    assert encoder_slug("/models/My SigLIP/") == "my-siglip"


def test_missing_medsiglip_weights_explain_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailable, match=r"hf auth login.*--allow-download"):
        SiglipEncoder("google/medsiglip-448-not-cached", device="cpu")
    with pytest.raises(EncoderUnavailable, match="unknown image encoder"):
        load_encoder("resnet")


def test_efficientnet_real_weights_recognise_a_cat() -> None:
    """The rebuilt network loads the packaged ImageNet weights correctly."""
    import skimage.data
    import torch

    encoder = load_encoder("efficientnet-lite0", device="cpu")
    batch = torch.from_numpy(encoder.preprocess([skimage.data.chelsea()]))
    with torch.inference_mode():
        top = encoder._net(batch).softmax(-1)[0].topk(3).indices.tolist()
    assert set(top) & {281, 282, 283, 284, 285}  # ImageNet cat classes


def test_efficientnet_embeddings(tmp_path: Path) -> None:
    encoder = load_encoder("default", device="cpu")
    assert load_encoder("efficientnet-lite0", device="cpu") is encoder  # cached per process
    vectors = encoder.embed_images(_images(3))
    assert vectors.shape == (3, 1280) and encoder.dim == 1280
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(EncoderUnavailable, match="images only"):
        encoder.embed_texts(["chest"])


def test_chroma_embedding_function_round_trips_its_config(tiny_siglip: SiglipEncoder) -> None:
    from chromadb.utils.embedding_functions import (
        config_to_embedding_function,
        known_embedding_functions,
    )

    assert known_embedding_functions["wardround-image-encoder"] is ImageEncoderEmbeddingFunction
    ef = ImageEncoderEmbeddingFunction("medsiglip", tiny_siglip.model)
    rebuilt = config_to_embedding_function({"name": ef.name(), "config": ef.get_config()})
    assert rebuilt.get_config() == {"encoder": "medsiglip", "model": tiny_siglip.model}
    image_vectors = rebuilt(_images(2))
    text_vectors = rebuilt(["chest x-ray"])
    assert len(image_vectors) == 2 and len(image_vectors[0]) == TINY_DIM
    assert len(text_vectors[0]) == TINY_DIM


def test_next_batch_is_preprocessed_while_the_model_runs() -> None:
    second_batch_ready = threading.Event()
    prepared_in: list[str] = []

    def prepare(batch: list[int]) -> list[int]:
        prepared_in.append(threading.current_thread().name)
        if batch[0] == 2:
            second_batch_ready.set()
        return [x * 10 for x in batch]

    seen = []
    for start, batch in pipelined(list(range(5)), 2, prepare):
        if start == 0:  # the "model" is busy with batch one until batch two is ready
            assert second_batch_ready.wait(5), "batch two waited for batch one's model run"
        seen.append((start, batch))
    assert seen == [(0, [0, 10]), (2, [20, 30]), (4, [40])]
    assert all(name.startswith("encoder-prep") for name in prepared_in)
    serial = list(pipelined(list(range(5)), 2, prepare, prefetch=False))
    assert serial == seen


def test_prefetch_changes_no_vector(tiny_siglip: SiglipEncoder) -> None:
    images = _images(8)
    tiny_siglip.prefetch = False
    serial = tiny_siglip.embed_images(images)
    tiny_siglip.prefetch = True
    assert np.array_equal(tiny_siglip.embed_images(images), serial)


def test_device_and_batch_size_come_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(make_tiny_siglip(tmp_path / "siglip"))
    monkeypatch.setenv("WARDROUND_ENCODER_BATCH_SIZE", "5")
    monkeypatch.setenv("WARDROUND_DEVICE", "cpu")
    encoder = load_encoder("medsiglip", path)
    assert (encoder.batch_size, encoder.device, encoder.dtype) == (5, "cpu", "float32")
    assert load_encoder("medsiglip", path, batch_size=2).batch_size == 2
    if not torch.cuda.is_available():
        monkeypatch.setenv("WARDROUND_DEVICE", "cuda:3")
        with pytest.raises(EncoderUnavailable, match="torch sees 0 CUDA device"):
            load_encoder("medsiglip", path)
        with pytest.raises(EncoderUnavailable, match="unknown device 'tpu'"):
            SiglipEncoder(path, device="tpu")


def test_efficientnet_batches_by_the_setting() -> None:
    encoder = load_encoder("efficientnet-lite0", device="cpu", batch_size=2)
    vectors = encoder.embed_images(_images(5))  # batches of 2, 2, 1
    assert encoder.batch_size == 2 and vectors.shape == (5, 1280)
    one = encoder.embed_images(_images(5)[4:])
    np.testing.assert_allclose(vectors[4:], one, atol=1e-5)
