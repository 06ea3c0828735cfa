"""The guideline and image indexes of the local stack, built once by `stack up`, reused after.

Without them the copilot on the default stack has no `lookup_guideline` and no
`search_images`. A stamp file next to the indexes records what was indexed (the starter
corpus's content hash, the built-in images, their links to patients); a later `stack up`
with the same stamp and non-empty indexes loads no model and indexes nothing.

Images and patients: the built-in images are public test images, not pictures of the
synthetic patients. The only link made is where a seeded chart already records the kind of
study an image shows (a plain chest X-ray procedure for the PA chest radiograph): that
patient gets an ImagingStudy for the procedure whose description says plainly that the
image is a public example, not acquired from the patient. Everyone else gets none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from wardround.settings import Settings

SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EXAMPLE_SYSTEM = "urn:wardround:example-image"
# SNOMED procedure -> the built-in image of that kind of study, and the body site shown.
EXAMPLE_FOR_PROCEDURE = {"399208008": ("chest-xray-pa", ("51185008", "Thoracic structure"))}
STAMP = "stack-indexes.json"


def _location(settings: Settings) -> Path | str:
    """Where the copilot reads its indexes: a Chroma server URL when one is set, else the
    local index directory."""
    return getattr(settings, "chroma_url", None) or settings.chroma_dir


def _stamp_path(settings: Settings) -> Path:
    return settings.chroma_dir / STAMP


def _read_stamp(settings: Settings) -> dict[str, Any]:
    try:
        return json.loads(_stamp_path(settings).read_text())
    except (OSError, ValueError):
        return {}


def _write_stamp(settings: Settings, key: str, value: str) -> None:
    stamp = _read_stamp(settings)
    stamp[key] = value
    _stamp_path(settings).parent.mkdir(parents=True, exist_ok=True)
    _stamp_path(settings).write_text(json.dumps(stamp, indent=1))


def _digest(parts: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ guidelines


def ensure_guidelines(settings: Settings) -> tuple[int, bool]:
    """Index the starter guideline corpus unless already done; (passages, built now)."""
    from wardround.tools.guidelines.index import GuidelineIndex, index_files
    from wardround.tools.guidelines.ingest import corpus_dir, discover

    files = discover([corpus_dir()])
    content = [(f.name, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]
    digest = _digest([str(_location(settings)), content])
    index = GuidelineIndex(_location(settings))
    if _read_stamp(settings).get("guidelines") == digest and index.count() > 0:
        return index.count(), False
    index_files(index, files)
    _write_stamp(settings, "guidelines", digest)
    return index.count(), True


# ---------------------------------------------------------------------- images


def _dicom_uids(path: Path) -> tuple[str, str, str, str]:
    """(study, series, instance, SOP class) UIDs of a DICOM file."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return (
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.SOPClassUID),
    )


def example_study(
    patient_id: str, procedure: dict[str, Any], image: Any, path: Path, site: tuple[str, str]
) -> dict[str, Any]:
    """An ImagingStudy for `procedure` showing a public example image, and saying so."""
    study, series, instance, sop_class = _dicom_uids(path)
    note = (
        f"Example image: {image.description} from the public {image.package} test set "
        f"({image.filename}); not acquired from this patient. Attached so image search can "
        "be tried on this chart."
    )
    modality = {"system": DCM, "code": image.modality}
    return {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"},
            {"system": EXAMPLE_SYSTEM, "value": f"{patient_id}-{image.key}"},
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "started": procedure.get("performedDateTime")
        or (procedure.get("performedPeriod") or {}).get("start"),
        "procedureReference": {"reference": f"Procedure/{procedure['id']}"},
        "procedureCode": [procedure["code"]],
        "modality": [modality],
        "description": note,
        "note": [{"text": note}],
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "series": [
            {
                "uid": series,
                "modality": modality,
                "bodySite": {"system": SNOMED, "code": site[0], "display": site[1]},
                "instance": [
                    {
                        "uid": instance,
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"},
                    }
                ],
            }
        ],
    }


def _search(http: httpx.Client, resource_type: str, **params: Any) -> list[dict[str, Any]]:
    response = http.get(resource_type, params=params)
    response.raise_for_status()
    return [e["resource"] for e in response.json().get("entry", [])]


def _example_for(
    http: httpx.Client,
    patient_id: str,
    procedure: dict,
    image: Any,
    path: Path,
    site: tuple[str, str],
) -> dict:
    """The patient's example ImagingStudy for `image`: the one made before, or a new one."""
    mark = f"{EXAMPLE_SYSTEM}|{patient_id}-{image.key}"
    found = _search(http, "ImagingStudy", identifier=mark, _count=1)
    if found:
        return found[0]
    response = http.post(
        "ImagingStudy",
        json=example_study(patient_id, procedure, image, path, site),
        headers={"Content-Type": "application/fhir+json"},
    )
    response.raise_for_status()
    return response.json()


def link_examples(
    settings: Settings, fhir_url: str, patient_ids: Sequence[str]
) -> dict[str, dict[str, str]]:
    """ImagingStudy records for the built-in images, where a seeded chart records that kind of
    study (see the module notes); returns study UID -> {"imaging_study", "patient_ref"}."""
    from wardround.tools.images.corpus import builtin_images

    images = {image.key: (image, path) for image, path in builtin_images()}
    links: dict[str, dict[str, str]] = {}
    headers = {"Accept": "application/fhir+json"}
    with httpx.Client(base_url=fhir_url.rstrip("/") + "/", timeout=60, headers=headers) as http:
        for code, (key, site) in EXAMPLE_FOR_PROCEDURE.items():
            if key not in images:
                continue
            image, path = images[key]
            for pid in patient_ids:
                done = _search(
                    http, "Procedure", patient=pid, code=f"{SNOMED}|{code}", _sort="-date", _count=1
                )
                if not done:
                    continue
                study = _example_for(http, pid, done[0], image, path, site)
                uid = _dicom_uids(path)[0]
                links[uid] = {
                    "imaging_study": f"ImagingStudy/{study['id']}",
                    "patient_ref": f"Patient/{pid}",
                }
                break  # an image is one entry in the index: it can point at one patient
    return links


def _image_count(settings: Settings) -> int:
    """Images in the default encoder's collection, without loading the encoder."""
    from wardround.tools.images.encoders import DEFAULT_ENCODER
    from wardround.tools.images.index import COLLECTION_PREFIX, open_chroma

    try:
        return int(
            open_chroma(_location(settings))
            .get_collection(COLLECTION_PREFIX + DEFAULT_ENCODER)
            .count()
        )
    except Exception:  # missing collection (chroma raises its own types across versions)
        return 0


def ensure_images(settings: Settings, links: dict[str, dict[str, str]]) -> tuple[int, bool]:
    """Index the built-in images (linked to patients per `links`) unless already done."""
    from wardround.tools.images.corpus import builtin_images, builtin_metadata, content_id
    from wardround.tools.images.ingest import ingest
    from wardround.tools.images.search import open_image_index

    found = builtin_images()
    digest = _digest([str(_location(settings)), [image.key for image, _ in found], links])
    if _read_stamp(settings).get("images") == digest and _image_count(settings) > 0:
        return _image_count(settings), False
    index = open_image_index(_location(settings))
    if index.count():  # links changed (other patients): re-add the images they concern
        stale = [content_id(path) for image, path in found if image.key in _linked_keys()]
        index.vectors().delete(ids=stale)
        index.texts().delete(ids=stale)
        index = open_image_index(_location(settings))
    metadata = {path: builtin_metadata(image) for image, path in found}
    ingest(index, [path for _, path in found], metadata=metadata, imaging_studies=links)
    _write_stamp(settings, "images", digest)
    return index.count(), True


def _linked_keys() -> set[str]:
    return {key for key, _ in EXAMPLE_FOR_PROCEDURE.values()}


class IndexBuildError(RuntimeError):
    """Building an index failed; the message says which and how to skip it."""


def _failures() -> tuple[type[BaseException], ...]:
    from wardround.tools.guidelines.index import GuidelineIndexError
    from wardround.tools.images.dicom import ImageLoadError
    from wardround.tools.images.encoders import EncoderUnavailable
    from wardround.tools.images.index import ImageIndexError

    return (GuidelineIndexError, ImageIndexError, ImageLoadError, EncoderUnavailable, OSError,
            ValueError, httpx.HTTPError)  # fmt: skip


def ensure_indexes(
    settings: Settings, fhir_url: str, patient_ids: Sequence[str], step: Callable[[str], None]
) -> dict[str, int]:
    """Guidelines and images for the copilot's tools; quick when nothing changed."""
    what = "the guideline index"
    try:
        step("guideline index (starter corpus)")
        passages, _ = ensure_guidelines(settings)
        what = "the image index"
        step("image index (built-in images)")
        links = link_examples(settings, fhir_url, patient_ids)
        images, _ = ensure_images(settings, links)
    except _failures() as exc:
        raise IndexBuildError(
            f"building {what} in {_location(settings)} failed: {exc} "
            "(`wardround stack up --no-indexes` starts the stack without it)"
        ) from exc
    return {"guideline_passages": passages, "images": images, "linked_images": len(links)}
