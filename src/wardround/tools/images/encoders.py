"""Image encoders: MedSigLIP (production) and EfficientNet-Lite0 (the embedded default).

MedSigLIP (`google/medsiglip-448`, a transformers `SiglipModel`) puts images and text in one
space, so a text query is embedded with its text tower and compared with image vectors.
The embedded default has no text tower: it serves image-to-image search, and text queries go
through the text of each image's metadata and report (see `index.py`).

Encoders take 8-bit RGB arrays, batch, run on the configured device (`WARDROUND_DEVICE`,
default auto: the GPU when there is one) and return unit vectors. While the model embeds one
batch, a worker thread prepares the next (decoding, resizing and normalising images is about
as slow as the model on a CPU, and idles a GPU when done in turn). `load_encoder` caches one
instance per (name, model, device, batch size) in the process.
`ImageEncoderEmbeddingFunction` is the registered Chroma embedding function of an image
collection, so a reopened collection knows which encoder produced it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, TypeGuard, cast

import numpy as np
from chromadb.api.types import Embeddable, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from wardround.runtime.devices import (
    DeviceUnavailable,
    load_pretrained,
    preferred_dtype,
    resolve_device,
)
from wardround.tools.text_embeddings import query_threads

DEFAULT_BATCH_SIZE = 16

DEFAULT_ENCODER = "efficientnet-lite0"
MEDSIGLIP = "medsiglip"
MEDSIGLIP_MODEL = "google/medsiglip-448"
ENCODER_ALIASES = {
    "default": DEFAULT_ENCODER,
    "efficientnet": DEFAULT_ENCODER,
    DEFAULT_ENCODER: DEFAULT_ENCODER,
    "siglip": MEDSIGLIP,
    MEDSIGLIP: MEDSIGLIP,
}


class EncoderUnavailable(RuntimeError):
    """The encoder's weights or packages are missing; the message says how to get them."""


class ImageEncoder(Protocol):
    name: str  # what the index records, e.g. "efficientnet-lite0" or "medsiglip-448"
    kind: str  # "efficientnet-lite0" or "medsiglip"
    dim: int
    supports_text: bool
    device: str
    dtype: str  # e.g. "bfloat16"
    batch_size: int
    prefetch: bool  # preprocess the next batch while the model embeds this one

    @property
    def model(self) -> str | None:
        """Model id or path for kinds that take one (read-only: None or a str)."""

    def preprocess(self, images: Sequence[np.ndarray]) -> Any: ...

    def embed_pixels(self, pixels: Any) -> np.ndarray: ...

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalize(vectors: Any) -> np.ndarray:
    import torch

    return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()


def _device(requested: str | None) -> str:
    try:
        return resolve_device(requested)
    except DeviceUnavailable as exc:
        raise EncoderUnavailable(str(exc)) from None


def pipelined(
    items: Sequence[Any],
    batch_size: int,
    prepare: Callable[[Sequence[Any]], Any],
    prefetch: bool = True,
) -> Iterator[tuple[int, Any]]:
    """(start, prepare(batch)) for each batch; the next batch is prepared while the caller
    runs the model on this one (PIL and numpy release the GIL while they work)."""
    starts = range(0, len(items), batch_size)
    if not prefetch or len(starts) < 2:
        for start in starts:
            yield start, prepare(items[start : start + batch_size])
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder-prep") as pool:
        pending = pool.submit(prepare, items[0:batch_size])
        for start in starts:
            ready = pending.result()
            following = start + batch_size
            if following < len(items):
                pending = pool.submit(prepare, items[following : following + batch_size])
            yield start, ready


def _as_rgb_images(images: Sequence[np.ndarray]) -> list[Any]:
    from PIL import Image

    out = []
    for image in images:
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.dtype != np.uint8:
            raise TypeError(f"expected 8-bit RGB arrays, got {array.dtype}")
        out.append(Image.fromarray(array[..., :3]))
    return out


class EfficientNetEncoder:
    """EfficientNet-Lite0 pooled features (1280-d), ImageNet preprocessing at 224 pixels."""

    kind = DEFAULT_ENCODER
    name = DEFAULT_ENCODER
    model = None
    supports_text = False

    def __init__(
        self, device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, prefetch: bool = True
    ) -> None:
        from wardround.tools.images import efficientnet

        self.dim = efficientnet.EMBEDDING_DIM
        self.device = _device(device)
        self.dtype = "float32"  # 18 MB of weights: half precision would save nothing
        self.batch_size = batch_size
        self.prefetch = prefetch
        self._size = efficientnet.INPUT_SIZE
        import torch

        # Channels-last runs the depthwise convolutions about 1.5x faster on CPU.
        # cast: torch's stubs for Module.to leave out its documented memory_format keyword
        # (it returns the module itself).
        self._net: efficientnet.EfficientNetLite0 = cast(Any, efficientnet.load_pretrained()).to(
            self.device, memory_format=torch.channels_last
        )
        self._mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
        self._std = np.array([0.229, 0.224, 0.225], dtype=np.float32)

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 3, 224, 224) float32: the whole image squeezed to the input size, normalised."""
        from PIL import Image

        batch = np.empty((len(images), 3, self._size, self._size), dtype=np.float32)
        for i, image in enumerate(_as_rgb_images(images)):
            resized = image.resize((self._size, self._size), Image.Resampling.BILINEAR)
            array = np.asarray(resized, dtype=np.float32) / 255.0
            batch[i] = ((array - self._mean) / self._std).transpose(2, 0, 1)
        return batch

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Unit vectors of one preprocessed batch."""
        import torch

        batch = torch.from_numpy(pixels).to(self.device)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return _normalize(self._net.features(batch))

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return _embed_all(self, images)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise EncoderUnavailable(
            f"{self.name} embeds images only; text queries go through image metadata"
        )


class SiglipEncoder:
    """A transformers SiglipModel and its processor: MedSigLIP, or any SigLIP checkpoint."""

    kind = MEDSIGLIP
    supports_text = True

    def __init__(
        self,
        model: str = MEDSIGLIP_MODEL,
        device: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        allow_download: bool = False,
        prefetch: bool = True,
    ) -> None:
        from transformers import AutoProcessor, SiglipModel

        self.model = str(model)
        self.name = encoder_slug(self.model)
        self.device = _device(device)
        self.batch_size = batch_size
        self.prefetch = prefetch
        self._dtype = preferred_dtype(self.device)
        self.dtype = str(self._dtype).removeprefix("torch.")
        try:
            self._model = load_pretrained(
                SiglipModel,
                self.model,
                self.device,
                self._dtype,
                local_files_only=not allow_download,
            )
            self.processor = AutoProcessor.from_pretrained(
                self.model, local_files_only=not allow_download
            )
        except (OSError, ValueError) as exc:
            raise EncoderUnavailable(siglip_help(self.model, exc)) from exc
        config = self._model.config
        self.dim = int(
            getattr(config.vision_config, "projection_size", None)
            or config.vision_config.hidden_size
        )
        self.max_text_tokens = int(config.text_config.max_position_embeddings)

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        """Pixel values exactly as the checkpoint's image processor prepares them."""
        return self.processor(images=_as_rgb_images(images), return_tensors="pt")["pixel_values"]

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        """Unit vectors of one preprocessed batch."""
        import torch

        with torch.inference_mode():
            features = self._model.get_image_features(
                pixel_values=pixels.to(self.device, self._dtype)
            )
            return _normalize(_pooled(features))

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return _embed_all(self, images)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with query_threads(len(texts)):
            for start in range(0, len(texts), self.batch_size):
                chunk = list(texts[start : start + self.batch_size])
                # SigLIP's text tower was trained on max-length padded input without a mask.
                tokens = self.processor(
                    text=chunk,
                    padding="max_length",
                    truncation=True,
                    max_length=self.max_text_tokens,
                    return_tensors="pt",
                )
                input_ids = tokens["input_ids"].to(self.device)
                with torch.inference_mode():
                    features = _pooled(self._model.get_text_features(input_ids=input_ids))
                out[start : start + len(chunk)] = _normalize(features)
        return out


def _embed_all(encoder: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    """Batches of `encoder.batch_size`, the next one preprocessed while this one embeds."""
    out = np.zeros((len(images), encoder.dim), dtype=np.float32)
    batches = pipelined(images, encoder.batch_size, encoder.preprocess, encoder.prefetch)
    with query_threads(len(images)):
        for start, pixels in batches:
            out[start : start + len(pixels)] = encoder.embed_pixels(pixels)
    return out


def _pooled(output: Any) -> Any:
    # transformers 5 returns a model output; older releases returned the tensor itself.
    return output if hasattr(output, "shape") else output.pooler_output


def siglip_help(model: str, exc: BaseException | None = None) -> str:
    detail = f" ({str(exc).splitlines()[0][:160]})" if exc else ""
    if Path(model).exists():
        return f"Could not load a SigLIP model from {model}{detail}."
    return (
        f"The weights of {model} are not available locally{detail}. MedSigLIP is gated: accept "
        f"its terms on https://huggingface.co/{model}, log in with `hf auth login` (or set "
        "HF_TOKEN), then run `hf download " + model + "` or pass --allow-download."
    )


def encoder_slug(model: str) -> str:
    """A collection-safe name for a model id or path ("google/medsiglip-448" -> "medsiglip-448")."""
    base = Path(model.rstrip("/")).name or model
    slug = re.sub(r"[^a-zA-Z0-9._-]+", "-", base).strip("-._").lower()
    return slug or "siglip"


def resolve_encoder_name(name: str) -> str:
    try:
        return ENCODER_ALIASES[name.lower()]
    except KeyError:
        choices = ", ".join(sorted(set(ENCODER_ALIASES.values())))
        raise EncoderUnavailable(f"unknown image encoder {name!r}; choose {choices}") from None


@lru_cache(maxsize=4)
def _cached(
    kind: str, model: str | None, device: str, allow_download: bool, batch_size: int
) -> ImageEncoder:
    if kind == DEFAULT_ENCODER:
        try:
            return EfficientNetEncoder(device=device, batch_size=batch_size)
        except RuntimeError as exc:
            raise EncoderUnavailable(str(exc)) from exc
    return SiglipEncoder(
        model or MEDSIGLIP_MODEL,
        device=device,
        batch_size=batch_size,
        allow_download=allow_download,
    )


def load_encoder(
    name: str = DEFAULT_ENCODER,
    model: str | None = None,
    device: str | None = None,
    allow_download: bool = False,
    batch_size: int | None = None,
) -> ImageEncoder:
    """The encoder called `name` ("efficientnet-lite0" or "medsiglip"), loaded once per process.

    `model` picks the SigLIP checkpoint (hub id or local directory; default MedSigLIP-448).
    Downloads from the hub happen only with `allow_download=True`. `device` and `batch_size`
    default to the `device` and `encoder_batch_size` settings: a Chroma collection reopening
    its embedding function has no Settings object to pass, and must still honour them.
    """
    kind = resolve_encoder_name(name)
    if device is None or batch_size is None:
        from wardround.settings import Settings

        configured = Settings()
        device = device or configured.device
        batch_size = batch_size or configured.encoder_batch_size
    return _cached(
        kind, model if kind == MEDSIGLIP else None, _device(device), allow_download, batch_size
    )


def _all_text(items: list[Any]) -> TypeGuard[list[str]]:
    return bool(items) and all(isinstance(item, str) for item in items)


@register_embedding_function
class ImageEncoderEmbeddingFunction(EmbeddingFunction[Embeddable]):
    """Chroma's view of an image encoder: embeds image arrays, and text when it can."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, model: str | None = None) -> None:
        self._encoder_name = resolve_encoder_name(encoder)
        self._model = model

    def encoder(self) -> ImageEncoder:
        return load_encoder(self._encoder_name, self._model)

    def __call__(self, input: Embeddable) -> Embeddings:
        items: list[Any] = list(input)
        if _all_text(items):
            return list(self.encoder().embed_texts(items))
        return list(self.encoder().embed_images(items))

    @staticmethod
    def name() -> str:
        return "wardround-image-encoder"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ImageEncoderEmbeddingFunction:
        return ImageEncoderEmbeddingFunction(
            config.get("encoder", DEFAULT_ENCODER), config.get("model")
        )

    def get_config(self) -> dict[str, Any]:
        return {"encoder": self._encoder_name, "model": self._model}

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]
