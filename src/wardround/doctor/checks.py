"""`wardround doctor`: check the MedGemma and MedSigLIP paths on this machine's best device.

It builds tiny randomly initialised models of the production classes (`SiglipModel`,
`Gemma3ForConditionalGeneration`, see `tiny_models`), loads them through wardround's own
loaders on the configured device, and reports placement and dtype, embedding norms and
dimensions, agreement with the CPU (cosine > 0.99), an image chat request end to end, and a
MedSigLIP-448-sized batch timing on a GPU. What cannot run here is listed as skipped, with
the reason. `encoder_throughput` measures preprocessing against embedding for the encoders.
"""

from __future__ import annotations

import base64
import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np

from wardround.runtime.devices import accelerate_available, resolve_device

Status = Literal["ok", "fail", "skipped"]
MIN_COSINE = 0.99


class _VisionShape(TypedDict):
    """The SiglipVisionConfig arguments that give a vision tower its size."""

    image_size: int
    patch_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int


# google/medsiglip-448's vision tower (SigLIP So400m/14 at 448 pixels).
MEDSIGLIP_448_VISION: _VisionShape = {
    "image_size": 448,
    "patch_size": 14,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
}


@dataclass
class Check:
    name: str
    status: Status
    detail: str


@dataclass
class Report:
    device: str  # what was asked for, e.g. "auto"
    resolved: str  # what it means here, e.g. "cuda:0"
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def lines(self) -> list[str]:
        width = max((len(c.name) for c in self.checks), default=0)
        out = [f"device: {self.device} -> {self.resolved}"]
        out += [f"  {c.status:<8} {c.name:<{width}}  {c.detail}" for c in self.checks]
        skipped = sum(c.status == "skipped" for c in self.checks)
        failed = sum(c.status == "fail" for c in self.checks)
        passed = len(self.checks) - skipped - failed
        out.append(f"{passed} ok, {failed} failed, {skipped} skipped")
        return out


def _attempt(report: Report, name: str, run: Callable[[], str]) -> bool:
    """Run one check; an exception becomes a failed line, not a traceback."""
    try:
        report.add(name, "ok", run())
        return True
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        report.add(name, "fail", f"{type(exc).__name__}: {first[:200]}")
        return False


def _vs_cpu(report: Report, name: str, agree: Callable[[], str], device: str, ran: bool) -> None:
    """Check `agree` (the device computes what the CPU computes) once the device's own check
    `ran`; skipped when the CPU is the only device."""
    if device == "cpu":
        report.add(name, "skipped", "no GPU: the CPU is the only device here")
    elif ran:
        _attempt(report, name, agree)


def sample_images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size + 8 * i % 24, 3), dtype=np.uint8) for i in range(n)]


def environment() -> str:
    import torch
    import transformers

    accel = "accelerate " + _version("accelerate") if accelerate_available() else "no accelerate"
    parts = [f"torch {torch.__version__}", f"transformers {transformers.__version__}", accel]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            name = torch.cuda.get_device_name(i)
            major, minor = torch.cuda.get_device_capability(i)
            parts.append(f"cuda:{i} {name} (sm_{major}{minor})")
    else:
        build = f"torch built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
        parts.append(f"no CUDA device ({build})")
    return ", ".join(parts)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _placement(module: Any) -> str:
    devices = sorted({str(p.device) for p in module.parameters()})
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()})
    return f"on {'+'.join(devices)}, {'+'.join(dtypes)}"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def siglip_checks(report: Report, workdir: Path, device: str, batch_size: int) -> None:
    from wardround.doctor.tiny_models import make_tiny_siglip
    from wardround.tools.images.encoders import SiglipEncoder

    path = str(make_tiny_siglip(workdir / "tiny-siglip"))
    loaded: dict[str, Any] = {}

    def load() -> str:
        loaded["encoder"] = SiglipEncoder(path, device=device, batch_size=batch_size)
        return f"tiny SigLIP {_placement(loaded['encoder']._model)}"

    if not _attempt(report, "siglip load", load):
        return
    encoder = loaded["encoder"]
    images, texts = sample_images(2 * batch_size + 1), ["chest x-ray", "head ct scan"]

    def embed() -> str:
        vectors = encoder.embed_images(images)
        words = encoder.embed_texts(texts)
        norms = np.linalg.norm(np.concatenate([vectors, words]), axis=1)
        _require(vectors.shape == (len(images), encoder.dim), f"image shape {vectors.shape}")
        _require(words.shape == (len(texts), encoder.dim), f"text shape {words.shape}")
        _require(bool(np.all(np.abs(norms - 1) < 1e-3)), f"norms {norms.min():.4f}..")
        loaded["vectors"], loaded["words"] = vectors, words
        return (
            f"{len(images)} images and {len(texts)} texts -> {encoder.dim}-d, "
            f"norms {norms.min():.4f}..{norms.max():.4f}"
        )

    ran = _attempt(report, "siglip embeddings", embed)

    def agree() -> str:
        cpu = SiglipEncoder(path, device="cpu", batch_size=batch_size)
        image_cos = _cosines(loaded["vectors"], cpu.embed_images(images))
        text_cos = _cosines(loaded["words"], cpu.embed_texts(texts))
        worst = float(min(image_cos.min(), text_cos.min()))
        _require(worst > MIN_COSINE, f"cosine {worst:.4f} <= {MIN_COSINE}")
        return f"{device} ({encoder.dtype}) vs cpu (float32): min cosine {worst:.5f}"

    _vs_cpu(report, "siglip vs cpu", agree, device, ran)


def _image_message(text: str = "what is this image ?") -> Any:
    from langchain_core.messages import HumanMessage
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(sample_images(1, size=48)[0]).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return HumanMessage(
        content=[{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    )


def _last_logits(chat: Any, message: Any) -> np.ndarray:
    import torch

    inputs = chat._inputs([message])
    with torch.inference_mode():
        logits = chat._model(**inputs).logits[0, -1]
    return logits.float().cpu().numpy()


def gemma3_checks(report: Report, workdir: Path, device: str) -> None:
    from wardround.agents.transformers_backend import TransformersChatModel
    from wardround.doctor.tiny_models import make_tiny_gemma3

    path = str(make_tiny_gemma3(workdir / "tiny-gemma3"))
    loaded: dict[str, Any] = {}
    how = (
        "weights read straight onto it"
        if device == "cpu" or accelerate_available()
        else "host RAM first (pip install accelerate to load straight onto the GPU)"
    )

    def load() -> str:
        loaded["chat"] = TransformersChatModel.load(path, max_new_tokens=4, device=device)
        return f"tiny Gemma3ForConditionalGeneration {_placement(loaded['chat']._model)}; {how}"

    if not _attempt(report, "gemma3 load", load):
        return
    chat, message = loaded["chat"], _image_message()

    def image_chat() -> str:
        inputs = chat._inputs([message])
        marked = int(inputs["token_type_ids"].sum()) if "token_type_ids" in inputs else 0
        _require(marked > 0, "no image tokens marked in token_type_ids")
        start = time.perf_counter()
        reply = chat.invoke([message])
        seconds = time.perf_counter() - start
        usage = reply.usage_metadata or {}
        return (
            f"text + image -> {usage.get('output_tokens')} tokens in {seconds:.2f} s; prompt "
            f"{usage.get('input_tokens')} tokens, {marked} image tokens marked for generate"
        )

    ran = _attempt(report, "gemma3 image chat", image_chat)

    def agree() -> str:
        cpu = TransformersChatModel.load(path, max_new_tokens=4, device="cpu")
        cosine = float(_cosines(_last_logits(chat, message), _last_logits(cpu, message)))
        _require(cosine > MIN_COSINE, f"cosine {cosine:.4f} <= {MIN_COSINE}")
        dtype = str(chat._model.dtype).removeprefix("torch.")
        return f"next-token logits, {device} ({dtype}) vs cpu (float32): cosine {cosine:.5f}"

    _vs_cpu(report, "gemma3 vs cpu", agree, device, ran)


def medsiglip_timing(report: Report, device: str, batch_size: int) -> None:
    """Images/s of a randomly initialised MedSigLIP-448 vision tower (GPU only)."""
    if device == "cpu":
        report.add(
            "medsiglip-448 batch",
            "skipped",
            "no GPU: a 400M-parameter tower on a CPU says nothing about GPU throughput",
        )
        return

    def run() -> str:
        import torch
        from transformers import SiglipVisionConfig, SiglipVisionModel

        from wardround.runtime.devices import preferred_dtype

        dtype = preferred_dtype(device)
        with torch.device(device):  # initialise on the device, as a checkpoint would load
            model = SiglipVisionModel(SiglipVisionConfig(**MEDSIGLIP_448_VISION)).to(dtype)
        pixels = torch.randn(batch_size, 3, 448, 448, device=device, dtype=dtype)
        seconds = _timed(lambda: model(pixel_values=pixels), device, repeats=3)
        memory = ""
        if device.startswith("cuda"):
            memory = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
        return (
            f"batch {batch_size} at 448 px, {str(dtype).removeprefix('torch.')}: "
            f"{seconds * 1000:.0f} ms/batch, {batch_size / seconds:.0f} images/s{memory}; "
            f"preprocessing that batch on the CPU: {_siglip448_preprocess(batch_size):.0f} ms"
        )

    _attempt(report, "medsiglip-448 batch", run)


def _siglip448_preprocess(batch_size: int) -> float:
    """Milliseconds to prepare one batch of 512x512 images as MedSigLIP-448's processor does."""
    from wardround.doctor.tiny_models import image_processor

    processor = image_processor(
        "Siglip", size={"height": 448, "width": 448}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    images = sample_images(batch_size, size=512)
    processor(images=images, return_tensors="pt")  # warm-up
    start = time.perf_counter()
    processor(images=images, return_tensors="pt")
    return (time.perf_counter() - start) * 1000


def _timed(step: Callable[[], Any], device: str, repeats: int) -> float:
    """Mean seconds of `step` after one warm-up run, waiting for the device each time."""
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        step()
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        sync()
    return (time.perf_counter() - start) / repeats


def run_doctor(device: str = "auto", batch_size: int = 16, workdir: Path | None = None) -> Report:
    """Every check, on `device` ("auto" for the best one present)."""
    try:
        resolved = resolve_device(device)
    except RuntimeError as exc:
        report = Report(device, "unavailable")
        report.add("device", "fail", str(exc))
        return report
    report = Report(device, resolved)
    _attempt(report, "environment", environment)
    with tempfile.TemporaryDirectory(prefix="wardround-doctor-") as tmp:
        base = workdir or Path(tmp)
        siglip_checks(report, base, resolved, batch_size)
        gemma3_checks(report, base, resolved)
    medsiglip_timing(report, resolved, batch_size)
    return report


@dataclass
class Throughput:
    encoder: str
    device: str
    batch_size: int
    images: int
    preprocess_s: float  # preprocessing alone, every batch in turn
    embed_s: float  # the model alone, on already preprocessed batches
    serial_s: float  # embed_images, preprocessing then model, batch after batch
    overlapped_s: float  # embed_images, next batch preprocessed while the model runs

    def line(self) -> str:
        rate = self.images / self.overlapped_s
        return (
            f"{self.encoder:<26} {self.device:<6} {self.batch_size:>5} "
            f"{self.preprocess_s:>8.2f} {self.embed_s:>8.2f} {self.serial_s:>8.2f} "
            f"{self.overlapped_s:>10.2f} {rate:>8.1f}"
        )


THROUGHPUT_HEADER = (
    f"{'encoder':<26} {'device':<6} {'batch':>5} {'prep s':>8} {'embed s':>8} "
    f"{'serial s':>8} {'overlap s':>10} {'img/s':>8}"
)


def measure_encoder(encoder: Any, images: list[np.ndarray], repeats: int = 3) -> Throughput:
    """Preprocessing against embedding for one encoder: the best of `repeats` rounds, each
    round timing every variant in turn so that all see the same load on a shared machine."""
    size = encoder.batch_size
    chunks = [images[i : i + size] for i in range(0, len(images), size)]
    pixels = [encoder.preprocess(chunk) for chunk in chunks]  # warm-up, and the model's input

    def embed_all(prefetch: bool) -> Callable[[], Any]:
        def run() -> Any:
            encoder.prefetch = prefetch
            return encoder.embed_images(images)

        return run

    steps = {
        "preprocess_s": lambda: [encoder.preprocess(chunk) for chunk in chunks],
        "embed_s": lambda: [encoder.embed_pixels(batch) for batch in pixels],
        "serial_s": embed_all(False),
        "overlapped_s": embed_all(True),
    }
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for key, step in steps.items():
            best[key] = min(best[key], _timed(step, encoder.device, repeats=1))
    encoder.prefetch = True
    return Throughput(encoder.name, encoder.device, size, len(images), **best)


def encoder_throughput(
    device: str = "auto", batch_size: int = 16, n_images: int = 64, image_size: int = 512
) -> list[Throughput]:
    """EfficientNet-Lite0 (real weights) and a SigLIP preprocessing at MedSigLIP's 448 px."""
    from wardround.doctor.tiny_models import make_tiny_siglip
    from wardround.tools.images.encoders import EfficientNetEncoder, SiglipEncoder

    resolved = resolve_device(device)
    images = sample_images(n_images, size=image_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wardround-doctor-") as tmp:
        path = make_tiny_siglip(Path(tmp) / "siglip-448px", image_size=448, patch_size=32)
        siglip = SiglipEncoder(str(path), device=resolved, batch_size=batch_size)
        siglip.name = "tiny siglip (448 px input)"
        rows.append(measure_encoder(siglip, images))
    rows.append(measure_encoder(EfficientNetEncoder(resolved, batch_size=batch_size), images))
    return rows
