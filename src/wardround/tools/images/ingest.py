"""Index image files: find them, decode them, embed them in batches, record why any were skipped.

Nothing a single file does can abort an ingest: corrupt DICOM, an unsupported transfer
syntax, a file that is no image, all become a line in the summary. Files whose content is
already indexed (same bytes, any path) are skipped as such.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wardround.tools.files import files_under
from wardround.tools.images.corpus import builtin_images, builtin_metadata, content_id
from wardround.tools.images.dicom import (
    DICOM_SUFFIXES,
    RASTER_SUFFIXES,
    ImageLoadError,
    LoadedImage,
    load_image,
)
from wardround.tools.images.index import ImageIndex, ImageRecord

ALREADY_INDEXED = "already indexed"
SIDECAR_SUFFIXES = {".json", ".txt"}

MODALITY_NAMES = {
    "CR": "computed radiography x-ray radiograph",
    "DX": "digital x-ray radiograph",
    "MG": "mammography",
    "CT": "computed tomography CT scan",
    "MR": "magnetic resonance imaging MRI",
    "US": "ultrasound sonography",
    "NM": "nuclear medicine scintigraphy",
    "PT": "positron emission tomography PET",
    "XA": "x-ray angiography",
    "RF": "fluoroscopy",
    "OP": "ophthalmic photography fundus",
    "OPT": "optical coherence tomography of the eye",
    "SM": "slide microscopy pathology histology",
    "XC": "external camera photograph",
    "ES": "endoscopy",
    "SEG": "segmentation mask",
    "OT": "other image",
}


@dataclass
class IngestSummary:
    indexed: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return sum(1 for _, reason in self.skipped if reason.startswith(ALREADY_INDEXED))

    def reasons(self) -> dict[str, int]:
        """How many files were skipped for each reason (reasons trimmed of file detail)."""
        counts: dict[str, int] = {}
        for _, reason in self.skipped:
            key = reason.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def discover(paths: Iterable[Path]) -> list[Path]:
    """Every file under the given files and directories, sorted, without hidden files
    and without the `.json`/`.txt` sidecars that describe an image next to them."""
    return [p for p in files_under(paths) if not _is_sidecar(p)]


def _is_sidecar(path: Path) -> bool:
    if path.suffix.lower() not in SIDECAR_SUFFIXES:
        return False
    image_suffixes = RASTER_SUFFIXES | DICOM_SUFFIXES
    base = path.with_suffix("")
    if base.suffix.lower() in image_suffixes and base.exists():  # image.png.json
        return True
    return any(path.with_suffix(s).exists() for s in image_suffixes)  # image.json


def load_imaging_studies(path: Path) -> dict[str, dict[str, str]]:
    """Map DICOM Study Instance UIDs to FHIR ImagingStudy ids and patients.

    Reads a FHIR Bundle, a JSON list of resources, or NDJSON, keeping ImagingStudy resources.
    """
    text = Path(path).read_text()
    try:
        data: Any = json.loads(text)
        resources = (
            [e.get("resource", {}) for e in data.get("entry", [])]
            if isinstance(data, dict) and data.get("resourceType") == "Bundle"
            else data
            if isinstance(data, list)
            else [data]
        )
    except ValueError:
        resources = [json.loads(line) for line in text.splitlines() if line.strip()]
    return imaging_study_index(resources)


def imaging_study_index(resources: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    index: dict[str, dict[str, str]] = {}
    for res in resources:
        if res.get("resourceType") != "ImagingStudy" or not res.get("id"):
            continue
        entry = {"imaging_study": f"ImagingStudy/{res['id']}"}
        subject = (res.get("subject") or {}).get("reference")
        if subject:
            entry["patient_ref"] = subject
        for ident in res.get("identifier", []) or []:
            value = str(ident.get("value", ""))
            if ident.get("system") == "urn:dicom:uid" or value.startswith("urn:oid:"):
                index[value.removeprefix("urn:oid:")] = entry
    return index


def describe(meta: Mapping[str, Any]) -> str:
    """The text a text query is matched against: modality, body part, description, report."""
    parts = []
    modality = str(meta.get("modality", "") or "")
    if modality:
        parts.append(f"{modality} {MODALITY_NAMES.get(modality, '')}".strip() + ".")
    if meta.get("body_part"):
        parts.append(f"Body part: {str(meta['body_part']).lower()}.")
    if meta.get("description"):
        parts.append(str(meta["description"]).rstrip(".") + ".")
    if meta.get("report"):
        parts.append(f"Report: {meta['report']}")
    return " ".join(parts) or "Image without description."


@dataclass
class _Ingest:
    """One ingest in progress: what was decided per file, and the batch waiting for vectors."""

    index: ImageIndex
    extra: dict[Path, dict[str, Any]]
    studies: Mapping[str, Mapping[str, str]]
    on_file: Callable[[Path, str | None], None] | None
    summary: IngestSummary = field(default_factory=IngestSummary)
    pending: list[tuple[Path, str, LoadedImage]] = field(default_factory=list)
    seen: dict[str, Path] = field(default_factory=dict)

    def note(self, path: Path, reason: str | None) -> None:
        if reason is None:
            self.summary.indexed.append(path)
        else:
            self.summary.skipped.append((path, reason))
        if self.on_file is not None:
            self.on_file(path, reason)

    def record(self, path: Path, image_id: str, image: LoadedImage, vector: Any) -> ImageRecord:
        meta = dict(image.metadata)
        meta.update(self.extra.get(path.resolve(), {}))
        meta["source_path"] = str(path)
        meta["encoder"] = self.index.encoder.name
        study = self.studies.get(str(meta.get("study_uid", "")))
        if study:
            meta.update(study)
        return ImageRecord(image_id, vector, meta, describe(meta))

    def flush(self) -> None:
        """Embed and store the waiting batch; one bad batch must not end the ingest."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            vectors = self.index.encoder.embed_images([img.pixels for _, _, img in batch])
        except Exception as exc:
            for path, _, _ in batch:
                self.note(path, f"encoder failed: {exc}")
            return
        records = [self.record(*item, vector) for item, vector in zip(batch, vectors, strict=True)]
        self.index.add(records)
        for path, _, _ in batch:
            self.note(path, None)

    def skip_reason(self, path: Path, image_id: str, stored: set[str]) -> str | None:
        if image_id in stored:
            return f"{ALREADY_INDEXED}: same content as image:{image_id}"
        if image_id in self.seen:
            return f"{ALREADY_INDEXED}: same content as {self.seen[image_id]}"
        return None

    def load(self, path: Path, image_id: str) -> None:
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            return self.note(path, str(exc))
        except Exception as exc:  # decoders raise anything on malformed input
            return self.note(path, f"unexpected error: {type(exc).__name__}: {str(exc)[:120]}")
        self.seen[image_id] = path
        self.pending.append((path, image_id, image))

    def chunk(self, paths: list[Path]) -> None:
        ids: dict[Path, str] = {}
        for path in paths:
            try:
                ids[path] = content_id(path)
            except OSError as exc:
                self.note(path, f"unreadable file: {exc.strerror or exc}")
        stored = set(self.index.existing_ids(list(set(ids.values()))))
        for path, image_id in ids.items():
            reason = self.skip_reason(path, image_id, stored)
            if reason:
                self.note(path, reason)
            else:
                self.load(path, image_id)
        self.flush()


def ingest(
    index: ImageIndex,
    files: Iterable[Path],
    *,
    metadata: Mapping[Path, Mapping[str, Any]] | None = None,
    imaging_studies: Mapping[str, Mapping[str, str]] | None = None,
    batch_size: int = 32,
    on_file: Callable[[Path, str | None], None] | None = None,
) -> IngestSummary:
    """Index `files`; `metadata` adds fields per path, `imaging_studies` links FHIR studies.

    `on_file(path, reason)` is called once per file (reason None when indexed), for progress.
    """
    index.count()  # an index built by another encoder is refused before any work is done
    extra = {Path(k).resolve(): dict(v) for k, v in (metadata or {}).items()}
    run = _Ingest(index, extra, imaging_studies or {}, on_file)
    file_list = [Path(f) for f in files]
    for start in range(0, len(file_list), batch_size):
        run.chunk(file_list[start : start + batch_size])
    return run.summary


def ingest_builtin(
    index: ImageIndex, *, on_file: Callable[[Path, str | None], None] | None = None
) -> IngestSummary:
    """Index the curated real images that ship in pydicom-data, pydicom, deid-data, skimage."""
    found = builtin_images()
    return ingest(
        index,
        [path for _, path in found],
        metadata={path: builtin_metadata(image) for image, path in found},
        on_file=on_file,
    )
