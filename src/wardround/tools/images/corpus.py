"""The real medical images that ship on PyPI.

Sources: `pydicom-data` and pydicom's own test files (chest and tibia radiographs, CT, MR,
ultrasound, echo, a bone scan), `deid-data` (renal and soft-tissue ultrasound, an echo
cine, a veterinary thorax radiograph; its `ctbrain` files are drawings, so left out) and scikit-image (retinal fundus photographs and
an immunohistochemistry slide). Each is listed once here with what it shows, because many
of these files say little about themselves in their headers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BuiltinImage:
    """One curated real image: where it lives and what it shows."""

    key: str
    package: str  # "pydicom-data", "pydicom", "deid-data" or "scikit-image"
    filename: str
    modality: str
    body_part: str
    description: str


BUILTIN_IMAGES: tuple[BuiltinImage, ...] = (
    BuiltinImage(
        "chest-xray-pa",
        "pydicom-data",
        "RG1_UNCR.dcm",
        "CR",
        "CHEST",
        "Posteroanterior (PA) chest radiograph of an adult",
    ),
    BuiltinImage(
        "tibia-xray",
        "pydicom-data",
        "RG3_UNCR.dcm",
        "CR",
        "LEG",
        "Radiograph of the distal tibia showing a non-ossifying fibroma",
    ),
    BuiltinImage(
        "shoulder-mr", "pydicom-data", "MR2_UNCR.dcm", "MR", "SHOULDER", "MRI of the shoulder"
    ),
    BuiltinImage(
        "head-ct-cq500",
        "pydicom-data",
        "693_UNCR.dcm",
        "CT",
        "HEAD",
        "Non-contrast CT of the head, axial 5 mm slice",
    ),
    BuiltinImage(
        "bone-scan",
        "pydicom-data",
        "JPEG2000_UNC.dcm",
        "NM",
        "WHOLE BODY",
        "Whole-body bone scintigraphy (nuclear medicine bone scan)",
    ),
    BuiltinImage(
        "liver-mr",
        "pydicom-data",
        "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "MR",
        "ABDOMEN",
        "MRI of the abdomen with a marked liver lesion",
    ),
    BuiltinImage(
        "lymph-node-ultrasound",
        "pydicom-data",
        "US1_UNCR.dcm",
        "US",
        "LYMPH NODE",
        "Colour Doppler ultrasound of a lymph node",
    ),
    BuiltinImage(
        "obstetric-ultrasound",
        "pydicom-data",
        "OBXXXX1A.dcm",
        "US",
        "PELVIS",
        "Obstetric ultrasound image (palette colour)",
    ),
    BuiltinImage(
        "echo-tee",
        "pydicom-data",
        "color-pl.dcm",
        "US",
        "HEART",
        "Transesophageal echocardiogram with colour Doppler",
    ),
    BuiltinImage(
        "ultrasound-3d-cine",
        "pydicom-data",
        "color3d_jpeg_baseline.dcm",
        "US",
        "HEART",
        "Multi-frame colour ultrasound cine loop (echocardiography)",
    ),
    BuiltinImage(
        "head-mr-enhanced",
        "pydicom-data",
        "emri_small.dcm",
        "MR",
        "HEAD",
        "Enhanced multi-frame MRI of the head",
    ),
    BuiltinImage(
        "ct-perfusion",
        "pydicom-data",
        "eCT_Supplemental.dcm",
        "CT",
        "HEAD",
        "CT brain perfusion map (regional cerebral blood flow), enhanced multi-frame",
    ),
    BuiltinImage(
        "pancreas-ct",
        "pydicom-data",
        "explicit_VR-UN.dcm",
        "CT",
        "PANCREAS",
        "Abdominal CT through the pancreas",
    ),
    BuiltinImage(
        "pelvis-ultrasound",
        "pydicom-data",
        "gdcm-US-ALOKA-16.dcm",
        "US",
        "PELVIS",
        "Dual-view pelvic ultrasound (16-bit palette colour)",
    ),
    BuiltinImage(
        "head-ct-small",
        "pydicom",
        "J2K_pixelrep_mismatch.dcm",
        "CT",
        "HEAD",
        "CT of the head, axial slice",
    ),
    BuiltinImage(
        "spine-ct-small",
        "pydicom",
        "CT_small.dcm",
        "CT",
        "SPINE",
        "Small CT axial slice through a vertebra",
    ),
    BuiltinImage("mr-small", "pydicom", "MR_small.dcm", "MR", "BODY", "Small MRI slice"),
    BuiltinImage(
        "kidney-ultrasound",
        "deid-data",
        "ultrasounds/GREYSCALE_IMAGE.dcm",
        "US",
        "KIDNEY",
        "Greyscale renal ultrasound",
    ),
    BuiltinImage(
        "soft-tissue-ultrasound",
        "deid-data",
        "ultrasounds/RGB_IMAGE.dcm",
        "US",
        "CHEST WALL",
        "Sagittal ultrasound of the chest wall and soft tissue",
    ),
    BuiltinImage(
        "echo-cine",
        "deid-data",
        "ultrasounds/ultrasound-multiframe.dcm",
        "US",
        "HEART",
        "Transthoracic echocardiography cine loop",
    ),
    BuiltinImage(
        "cat-thorax-xray",
        "deid-data",
        "animals/cat.dcm",
        "DX",
        "CHEST",
        "Lateral thoracic radiograph of a cat (veterinary)",
    ),
    BuiltinImage(
        "retina-fundus",
        "scikit-image",
        "retina.jpg",
        "OP",
        "EYE",
        "Colour fundus photograph of the human retina",
    ),
    BuiltinImage(
        "retina-microaneurysms",
        "scikit-image",
        "microaneurysms.png",
        "OP",
        "EYE",
        "Greyscale retinal fundus crop with microaneurysms (diabetic retinopathy)",
    ),
    BuiltinImage(
        "ihc-slide",
        "scikit-image",
        "ihc.png",
        "SM",
        "TISSUE",
        "Immunohistochemistry (IHC) stained tissue section, microscopy",
    ),
)


def builtin_image_path(image: BuiltinImage) -> Path | None:
    """Where the file of a curated image is installed, or None if its package is missing."""
    try:
        if image.package == "pydicom-data":
            from pydicom.data import get_testdata_file

            found = get_testdata_file(image.filename)
            return Path(found) if found else None
        if image.package == "pydicom":
            import pydicom.data

            path = Path(pydicom.data.__file__).parent / "test_files" / image.filename
        elif image.package == "deid-data":
            import deid_data

            path = Path(deid_data.__file__).parent / "data" / image.filename
        elif image.package == "scikit-image":
            import skimage.data

            path = Path(skimage.data.__file__).parent / image.filename
        else:
            return None
    except ImportError:
        return None
    return path if path.is_file() else None


def builtin_images() -> list[tuple[BuiltinImage, Path]]:
    """The curated images whose packages are installed, with their paths."""
    found = []
    for image in BUILTIN_IMAGES:
        path = builtin_image_path(image)
        if path is not None:
            found.append((image, path))
    return found


def builtin_metadata(image: BuiltinImage) -> dict[str, Any]:
    """What ingest should record for a curated image (overrides thin file headers)."""
    return {
        "modality": image.modality,
        "body_part": image.body_part,
        "description": image.description,
        "builtin": image.key,
        "source_package": image.package,
    }


def content_id(path: Path) -> str:
    """The id an image gets in the index: a hash of the file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24]


# --- transformed copies ------------------------------------------------------------------
