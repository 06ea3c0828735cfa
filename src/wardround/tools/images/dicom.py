"""Turn image files (DICOM, PNG, JPEG, TIFF) into display-ready 8-bit RGB arrays plus metadata.

DICOM needs care before a model sees it: the stored values are rescaled (modality LUT),
windowed to the range a reader would look at, inverted for MONOCHROME1 (where high values
are dark, e.g. computed radiography), palette- and YBR-coded colour is converted to RGB, and
multi-frame objects (cine ultrasound, enhanced CT/MR) are represented by their middle frame.
Anything that cannot be read raises `ImageLoadError` with a reason a person can act on.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
# Larger images are downsampled on load: encoders work at 224 to 448 pixels.
MAX_SIDE = 1024


class ImageLoadError(Exception):
    """A file that cannot become an image; the message is the reason shown to the user."""


@dataclass
class LoadedImage:
    """An 8-bit RGB array (H, W, 3) and what is known about it."""

    pixels: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


def is_dicom(path: Path) -> bool:
    """True for files with the DICOM preamble, or a DICOM suffix (old files lack the preamble)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def load_image(path: Path) -> LoadedImage:
    """Load any supported file; raises ImageLoadError for anything else."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"no such file: {path}")
    if not path.is_file():
        raise ImageLoadError("not a file")
    if is_dicom(path):
        image = load_dicom(path)
    elif path.suffix.lower() in RASTER_SUFFIXES:
        image = load_raster(path)
    else:
        raise ImageLoadError(f"not an image file ({path.suffix or 'no suffix'})")
    image.metadata.update(read_sidecar(path))
    return image


def read_sidecar(path: Path) -> dict[str, Any]:
    """Metadata a user keeps next to an image: `<name>.json` (fields) and `<name>.txt` (report)."""
    meta: dict[str, Any] = {}
    json_path = path.with_name(path.name + ".json")
    if not json_path.exists():
        json_path = path.with_suffix(".json")
    if json_path.exists() and json_path != path:
        try:
            data = json.loads(json_path.read_text())
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            meta.update({k: v for k, v in data.items() if isinstance(v, str | int | float | bool)})
    for txt in (path.with_name(path.name + ".txt"), path.with_suffix(".txt")):
        if txt.exists() and txt != path:
            meta["report"] = txt.read_text(errors="replace").strip()[:4000]
            break
    if "modality" in meta:
        meta["modality"] = str(meta["modality"]).upper()
    return meta


# --- rasters -----------------------------------------------------------------------------


def load_raster(path: Path) -> LoadedImage:
    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                img.seek(frames // 2)
            fmt = (img.format or path.suffix.lstrip(".")).lower()
            if img.mode in {"I", "I;16", "I;16B", "I;16L", "F"}:
                pixels = to_uint8(np.asarray(img, dtype=np.float32))
            else:
                pixels = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"unreadable image: {exc}") from exc
    return LoadedImage(
        pixels=_limit(_rgb(pixels)),
        metadata={"format": fmt, "frames": frames},
    )


# --- DICOM -------------------------------------------------------------------------------


def load_dicom(path: Path) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    forced = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:
                # Files written without the preamble and file meta are still common.
                forced = True
                ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise ImageLoadError(f"corrupt or unreadable DICOM: {_short(exc)}") from exc
    # Forced parsing turns any bytes into "elements"; real files carry identifying ones.
    if forced and not any(k in ds for k in _IDENTIFYING):
        raise ImageLoadError("corrupt or not DICOM: no DICOM header could be read")
    if "PixelData" not in ds:
        kind = str(ds.get("Modality", "") or ds.get("SOPClassUID", "")).strip()
        raise ImageLoadError(f"DICOM without pixel data{f' ({kind})' if kind else ''}")
    with warnings.catch_warnings():
        # Real-world files carry many small standard violations pydicom warns about.
        warnings.simplefilter("ignore")
        pixels = dicom_pixels(ds)
        metadata = dicom_metadata(ds)
    return LoadedImage(pixels=_limit(pixels), metadata=metadata)


_IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Modality", "Rows")


def dicom_pixels(ds: Any) -> np.ndarray:
    """Decode the representative frame of a dataset to 8-bit RGB."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, pixel_array

    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        raise ImageLoadError("DICOM file meta has no transfer syntax; cannot decode pixels")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise ImageLoadError(f"unsupported transfer syntax {tsyntax.name} ({tsyntax})") from exc
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise ImageLoadError(
            f"unsupported transfer syntax {tsyntax.name} ({tsyntax}): needs {needs}"
        )

    frames = _frame_count(ds)
    index = frames // 2 if frames > 1 else None
    try:
        arr = pixel_array(ds, index=index) if index is not None else ds.pixel_array
    except Exception as exc:
        raise ImageLoadError(
            f"pixel data could not be decoded ({tsyntax.name}): {_short(exc)}"
        ) from exc

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    try:
        if photometric == "PALETTE COLOR":
            return to_uint8(apply_color_lut(arr, ds).astype(np.float32), percentile=False)
        if samples > 1 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
            # pydicom already converts YBR to RGB; wide samples are rescaled to 8 bits.
            rgb = arr[..., :3]
            if rgb.dtype != np.uint8:
                rgb = to_uint8(rgb.astype(np.float32), percentile=False)
            return _rgb(rgb)
        values = _rescale(arr, ds, index or 0, apply_modality_lut)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(f"pixel data could not be converted: {_short(exc)}") from exc
    if values.ndim != 2:
        raise ImageLoadError(f"unexpected pixel array shape {values.shape}")
    gray = window(values, ds, index or 0)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return _rgb(gray)


def window(values: np.ndarray, ds: Any, frame: int = 0) -> np.ndarray:
    """Apply the first stored window (centre/width), else a robust percentile window."""
    item = _frame_item(ds, "FrameVOILUTSequence", frame) or ds
    center, width = _first(item.get("WindowCenter")), _first(item.get("WindowWidth"))
    if center is not None and width is not None and width > 1:
        low, high = center - width / 2.0, center + width / 2.0
        # A stored window that misses the data entirely (wrong units) is worse than none.
        if high > float(values.min()) and low < float(values.max()):
            return _scale(values, low, high)
    return to_uint8(values)


def _rescale(arr: np.ndarray, ds: Any, frame: int, apply_modality_lut: Any) -> np.ndarray:
    """Stored values to real-world units (e.g. Hounsfield), including enhanced multi-frame."""
    item = _frame_item(ds, "PixelValueTransformationSequence", frame)
    if "RescaleSlope" not in ds and item is not None and "RescaleSlope" in item:
        slope = float(item.RescaleSlope)
        intercept = float(item.get("RescaleIntercept", 0.0))
        return arr.astype(np.float32) * slope + intercept
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)


def _frame_item(ds: Any, sequence: str, frame: int) -> Any:
    """The item of a functional-group sequence that applies to a frame (enhanced CT/MR)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    groups = []
    if per_frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared is not None and len(shared):
        groups.append(shared[0])
    for group in groups:
        items = group.get(sequence)
        if items is not None and len(items):
            return items[0]
    return None


def to_uint8(values: np.ndarray, percentile: bool = True) -> np.ndarray:
    """Scale any numeric array to 0..255; percentile windowing ignores outliers."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    if percentile:
        low, high = np.percentile(finite, [0.5, 99.5])
    else:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    return _scale(values, float(low), float(high))


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.clip(values, low, high) - low) * (255.0 / (high - low))
    return np.nan_to_num(scaled).round().astype(np.uint8)


def dicom_metadata(ds: Any) -> dict[str, Any]:
    def text(keyword: str) -> str | None:
        value = ds.get(keyword)
        value = str(value).strip() if value is not None else ""
        return value or None

    description = " / ".join(
        part
        for part in (text("StudyDescription"), text("SeriesDescription"), text("ImageComments"))
        if part
    )
    meta: dict[str, Any] = {
        "format": "dicom",
        "modality": (text("Modality") or "").upper() or None,
        "body_part": text("BodyPartExamined"),
        "patient_id": text("PatientID"),
        "study_uid": text("StudyInstanceUID"),
        "series_uid": text("SeriesInstanceUID"),
        "sop_uid": text("SOPInstanceUID"),
        "study_date": text("StudyDate"),
        "description": description or None,
        "photometric": text("PhotometricInterpretation"),
        "frames": _frame_count(ds),
    }
    return {k: v for k, v in meta.items() if v is not None}


def _frame_count(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _first(value: Any) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, str | bytes):
            return float(value)
        seq = list(value) if hasattr(value, "__iter__") else [value]
        return float(seq[0]) if seq else None
    except (TypeError, ValueError):
        return None


def _rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.shape[-1] == 1:
        return np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def _limit(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    if max(height, width) <= MAX_SIDE:
        return pixels
    img = Image.fromarray(pixels)
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _short(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    message = " ".join(lines[:2]) if lines else type(exc).__name__
    return message if len(message) <= 200 else message[:197] + "..."
