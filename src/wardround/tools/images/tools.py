"""`search_images`: the LangChain tool over the image index.

Search by a description, by an image file, or by an indexed image id, optionally for one
modality or patient. The text lists one image per line (id, score, modality, body part,
description, patient, study); the artifact is the "image:<id>" references an answer may cite.
"""

from __future__ import annotations

from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, model_validator

from wardround.tools.evidence import tool_result
from wardround.tools.images.dicom import ImageLoadError
from wardround.tools.images.encoders import EncoderUnavailable
from wardround.tools.images.index import ImageHit, ImageIndex, ImageIndexError
from wardround.tools.images.search import hit_line, search_images
from wardround.tools.index_tool import index_tool


class SearchImagesArgs(BaseModel):
    text: str | None = Field(
        None, max_length=300, description="Describe the images wanted, e.g. 'chest x-ray'"
    )
    image_path: str | None = Field(
        None, description="Path of an image file (DICOM, PNG, JPEG) to find images like it"
    )
    image_id: str | None = Field(
        None, description="An indexed image, e.g. 'image:3f2a...', to find images like it"
    )
    modality: str | None = Field(
        None, max_length=8, description="Only this DICOM modality: CR, DX, CT, MR, US, NM, OP, SM"
    )
    patient: str | None = Field(
        None, description="Only this patient's images (patient id or 'Patient/<id>')"
    )
    k: int = Field(5, ge=1, le=20, description="How many images to return")

    @model_validator(mode="after")
    def _one_query(self) -> SearchImagesArgs:
        given = [name for name in ("text", "image_path", "image_id") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of text, image_path or image_id")
        return self


def render_hits(hits: list[ImageHit], what: str) -> str:
    if not hits:
        return f"No indexed image matches {what}. Try without filters or other words."
    return "\n".join([f"{len(hits)} image(s) for {what}:", *(hit_line(h) for h in hits)])


def make_image_tools(index: ImageIndex | None) -> list[BaseTool]:
    """[search_images] over `index` (None: for its schema only); works with `invoke` and
    `ainvoke`."""

    def search(args: SearchImagesArgs) -> list[ImageHit]:
        if index is None:
            raise RuntimeError("search_images was made without an image index")
        try:
            return search_images(
                index,
                text=args.text,
                image=args.image_path,
                image_id=args.image_id,
                k=args.k,
                modality=args.modality,
                patient=args.patient,
            )
        except FileNotFoundError as exc:
            raise ImageLoadError(f"no such image file: {exc.filename}") from exc

    def render(args: SearchImagesArgs, hits: list[ImageHit]) -> tuple[str, list[str]]:
        what = repr(args.text or args.image_path or args.image_id)
        return tool_result(render_hits(hits, what), [h.ref for h in hits])

    description = (
        "Search the medical image index by a description (text), by an image file "
        "(image_path) or by an indexed image (image_id), optionally for one modality "
        "or patient. Returns image ids with scores and what each image shows."
    )
    return [
        index_tool(
            "search_images",
            description,
            SearchImagesArgs,
            search,
            render,
            known=(ImageIndexError, ImageLoadError, EncoderUnavailable),
            what="image search",
        )
    ]
