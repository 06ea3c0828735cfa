"""The image index: Chroma persistent collections, one per encoder.

`images-<encoder>` holds the image vectors; its metadata records the encoder's name and
dimension, and a collection built by one encoder refuses vectors from another. Its companion
`images-<encoder>-text` holds MiniLM vectors of each image's metadata and report text, which
answers text queries when the encoder has no text tower (and optionally when it has one).
Ids are content hashes of the files, so indexing the same file twice stores it once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import numpy as np

from wardround.tools.images.encoders import ImageEncoder, ImageEncoderEmbeddingFunction
from wardround.tools.text_embeddings import MiniLMEmbeddingFunction, TextEmbedder

COLLECTION_PREFIX = "images-"
TEXT_SUFFIX = "-text"
TextMode = Literal["auto", "image-space", "metadata"]
TEXT_MODES: tuple[TextMode, ...] = get_args(TextMode)
COUNT_TTL_S = 1.0


class ImageIndexError(Exception):
    """A problem with the index the user can fix; the message says how."""


class EncoderMismatch(ImageIndexError):
    """The collection was built by another encoder (or with another dimension)."""


class EmptyIndex(ImageIndexError):
    """The collection does not exist yet or holds nothing."""


@dataclass
class ImageRecord:
    """One image ready to store: its id, vector, metadata and descriptive text."""

    id: str
    vector: np.ndarray
    metadata: dict[str, Any]
    document: str


@dataclass
class ImageHit:
    id: str
    score: float  # cosine similarity, higher is closer
    metadata: dict[str, Any] = field(default_factory=dict)
    document: str = ""

    @property
    def ref(self) -> str:
        return f"image:{self.id}"


def is_chroma_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(("http://", "https://"))


def open_chroma(chroma_dir: Path | str) -> Any:
    """A Chroma client, telemetry off: an HTTP client for a server URL (`chroma run`), else
    a persistent client at the directory (created)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if is_chroma_url(chroma_dir):
        url = urlsplit(str(chroma_dir))
        ssl = url.scheme == "https"
        port = url.port or (443 if ssl else 8000)
        host = url.hostname or "localhost"
        return chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
    chroma_dir = Path(chroma_dir).expanduser()
    chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(chroma_dir), settings=settings)


def _local_and_missing(location: Path | str) -> bool:
    """A local index directory that does not exist (reads must not create one)."""
    return not is_chroma_url(location) and not Path(location).exists()


def collection_name(encoder: ImageEncoder) -> str:
    return f"{COLLECTION_PREFIX}{encoder.name}"


def build_where(modality: str | None = None, patient: str | None = None) -> dict[str, Any] | None:
    """A Chroma filter for modality (e.g. "CT") and patient (DICOM id or FHIR reference)."""
    clauses: list[dict[str, Any]] = []
    if modality:
        clauses.append({"modality": modality.strip().upper()})
    if patient:
        patient = patient.strip()
        bare = patient.removeprefix("Patient/")
        clauses.append(
            {
                "$or": [
                    {"patient_id": bare},
                    {"patient_ref": f"Patient/{bare}"},
                    {"patient_id": patient},
                ]
            }
        )
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _patient_keys(patient: str) -> set[str]:
    bare = patient.strip().removeprefix("Patient/")
    return {bare, f"Patient/{bare}", patient.strip()}


class _FilterMap:
    """Which ids have which modality and patient: the filters, resolved in memory."""

    def __init__(self, ids: list[str], metadatas: list[Any], count: int) -> None:
        self.count = count
        self.by_modality: dict[str, set[str]] = {}
        self.by_patient: dict[str, set[str]] = {}
        for id_, meta in zip(ids, metadatas, strict=True):
            meta = meta or {}
            if meta.get("modality"):
                self.by_modality.setdefault(str(meta["modality"]).upper(), set()).add(id_)
            for key in ("patient_id", "patient_ref"):
                if meta.get(key):
                    self.by_patient.setdefault(str(meta[key]), set()).add(id_)

    def matching(self, modality: str | None, patient: str | None) -> set[str]:
        sets: list[set[str]] = []
        if modality:
            sets.append(self.by_modality.get(modality.strip().upper(), set()))
        if patient:
            sets.append(
                set().union(*(self.by_patient.get(k, set()) for k in _patient_keys(patient)))
            )
        return set.intersection(*sets) if sets else set()


class ImageIndex:
    """Image vectors plus metadata text, for one encoder, in one Chroma directory."""

    def __init__(
        self,
        chroma_dir: Path | str,
        encoder: ImageEncoder,
        *,
        collection: str | None = None,
        text_embedder: TextEmbedder | None = None,
    ) -> None:
        # A directory, or the URL of a Chroma server.
        self.chroma_dir = chroma_dir if is_chroma_url(chroma_dir) else Path(chroma_dir).expanduser()
        self.encoder = encoder
        self.name = collection or collection_name(encoder)
        self.text_embedder = text_embedder or TextEmbedder()
        self._client: Any = None
        self._vectors: Any = None
        self._texts: Any = None
        self._filter_maps: dict[str, _FilterMap] = {}
        self._counts: dict[str, tuple[float, int]] = {}

    # -- collections ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = open_chroma(self.chroma_dir)
        return self._client

    def _exists(self, name: str) -> bool:
        opened = {self.name: self._vectors, self.name + TEXT_SUFFIX: self._texts}
        if opened.get(name) is not None:
            return True
        if self._client is None and _local_and_missing(self.chroma_dir):
            return False  # a read must not leave an empty Chroma directory behind
        return name in {c.name for c in self.client.list_collections()}

    def _image_ef(self) -> ImageEncoderEmbeddingFunction:
        return ImageEncoderEmbeddingFunction(self.encoder.kind, self.encoder.model)

    def _expected_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "kind": "image-vectors",
            "encoder": self.encoder.name,
            "encoder_kind": self.encoder.kind,
            "dim": int(self.encoder.dim),
        }
        if self.encoder.model:
            meta["model"] = str(self.encoder.model)
        return meta

    def vectors(self, create: bool = False) -> Any:
        """The image-vector collection; checks it belongs to this encoder."""
        if self._vectors is not None:
            return self._vectors
        if not self._exists(self.name):
            if not create:
                raise EmptyIndex(self._missing_message())
            self._vectors = self.client.create_collection(
                self.name,
                metadata=self._expected_metadata(),
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=self._image_ef(),
            )
            return self._vectors
        try:
            found = self.client.get_collection(self.name, embedding_function=self._image_ef())
        except ValueError as exc:
            raise EncoderMismatch(
                f"collection {self.name!r} was not built by a wardround image encoder ({exc}); "
                "choose another collection name"
            ) from exc
        meta = found.metadata or {}
        if meta.get("encoder") != self.encoder.name or int(meta.get("dim", -1)) != self.encoder.dim:
            raise EncoderMismatch(
                f"collection {self.name!r} holds {meta.get('dim', '?')}-d vectors from encoder "
                f"{meta.get('encoder', '?')!r}; refusing to mix in {self.encoder.dim}-d vectors "
                f"from {self.encoder.name!r}. Use that encoder, or another collection name."
            )
        self._vectors = found
        return found

    def texts(self, create: bool = False) -> Any:
        """The companion collection of MiniLM vectors of each image's metadata text."""
        if self._texts is not None:
            return self._texts
        name = self.name + TEXT_SUFFIX
        ef = MiniLMEmbeddingFunction()
        if not self._exists(name):
            if not create:
                raise EmptyIndex(self._missing_message())
            self._texts = self.client.create_collection(
                name,
                metadata={
                    "kind": "image-text",
                    "encoder": self.text_embedder.name,
                    "dim": self.text_embedder.dim,
                    "images": self.name,
                },
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=ef,
            )
        else:
            self._texts = self.client.get_collection(name, embedding_function=ef)
        return self._texts

    def _missing_message(self) -> str:
        message = (
            f"no image index {self.name!r} in {self.chroma_dir}; index images first with "
            "`wardround images index DIR` (or `--builtin` for the bundled examples)"
        )
        if not _local_and_missing(self.chroma_dir):
            others = [
                f"{c.name} (--encoder {(c.metadata or {}).get('encoder_kind', '?')})"
                for c in self.client.list_collections()
                if c.name.startswith(COLLECTION_PREFIX) and not c.name.endswith(TEXT_SUFFIX)
            ]
            if others:
                message += f"; indexes here: {', '.join(sorted(others))}"
        return message

    # -- writing ----------------------------------------------------------------------------

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids or not self._exists(self.name):
            return set()
        return set(self.vectors().get(ids=list(ids), include=[])["ids"])

    def add(self, records: Sequence[ImageRecord], text_vectors: np.ndarray | None = None) -> None:
        """Store records; an id already present is overwritten, never duplicated.

        `text_vectors` (MiniLM vectors of the records' documents) skips embedding them again,
        for bulk loads where many records share a description.
        """
        if not records:
            return
        vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in records])
        if vectors.shape[1] != self.encoder.dim:
            raise EncoderMismatch(
                f"vectors are {vectors.shape[1]}-d but encoder {self.encoder.name!r} is "
                f"{self.encoder.dim}-d"
            )
        self._filter_maps.clear()
        self._counts.clear()
        ids = [r.id for r in records]
        metadatas = [_clean_metadata(r.metadata) for r in records]
        documents = [r.document for r in records]
        self.vectors(create=True).upsert(
            ids=ids, embeddings=vectors, metadatas=metadatas, documents=documents
        )
        self.texts(create=True).upsert(
            ids=ids,
            embeddings=self.text_embedder.embed(documents)
            if text_vectors is None
            else text_vectors,
            metadatas=metadatas,
            documents=documents,
        )

    def count(self) -> int:
        if not self._exists(self.name):
            return 0
        return int(self.vectors().count())

    # -- reading ----------------------------------------------------------------------------

    def _count(self, collection: Any) -> int:
        """The collection's size, re-read at most once a second (a count costs ~2 ms):
        writes from this object are seen at once, another process's within a second."""
        now = time.monotonic()
        cached = self._counts.get(collection.name)
        if cached is None or now - cached[0] > COUNT_TTL_S:
            cached = (now, int(collection.count()))
            self._counts[collection.name] = cached
        return cached[1]

    def _ready(self, collection: Any) -> int:
        n = self._count(collection)
        if n == 0:
            raise EmptyIndex(
                f"image index {self.name!r} in {self.chroma_dir} is empty; "
                "index images first with `wardround images index DIR`"
            )
        return n

    def query_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        modality: str | None = None,
        patient: str | None = None,
        collection: Any = None,
    ) -> list[ImageHit]:
        """Top-k by cosine similarity, optionally only one modality and/or patient.

        Chroma's metadata filter costs several times an unfiltered query, so filters are
        resolved against an in-memory map of each image's modality and patient: a common
        filter keeps the matches of a larger unfiltered query (exact whenever at least k of
        them match), a rare one searches only the matching ids.
        """
        collection = collection if collection is not None else self.vectors()
        n = self._ready(collection)
        query = np.asarray(vector, dtype=np.float32)
        if not modality and not patient:
            return self._query(collection, query, min(k, n))
        allowed = self._filters(collection, n).matching(modality, patient)
        if not allowed:
            return []
        share = len(allowed) / n
        if share >= 0.05:
            over = min(n, max(50, int(3 * k / share)))
            found = collection.query(
                query_embeddings=[query], n_results=over, include=["distances"]
            )
            ranked = [
                (id_, dist)
                for id_, dist in zip(found["ids"][0], found["distances"][0], strict=True)
                if id_ in allowed
            ]
            if len(ranked) >= k or over == n:
                return self._fetch(collection, ranked[:k])
        return self._query(collection, query, min(k, len(allowed)), ids=sorted(allowed))

    def _query(
        self, collection: Any, query: np.ndarray, k: int, ids: list[str] | None = None
    ) -> list[ImageHit]:
        result = collection.query(
            query_embeddings=[query],
            n_results=max(1, k),
            ids=ids,
            include=["metadatas", "documents", "distances"],
        )
        return [
            ImageHit(id_, 1.0 - float(dist), dict(meta or {}), doc or "")
            for id_, meta, doc, dist in zip(
                result["ids"][0],
                result["metadatas"][0],
                result["documents"][0],
                result["distances"][0],
                strict=True,
            )
        ]

    def _fetch(self, collection: Any, ranked: list[tuple[str, float]]) -> list[ImageHit]:
        if not ranked:
            return []
        got = collection.get(ids=[id_ for id_, _ in ranked], include=["metadatas", "documents"])
        rows = {
            id_: (meta, doc)
            for id_, meta, doc in zip(got["ids"], got["metadatas"], got["documents"], strict=True)
        }
        return [
            ImageHit(id_, 1.0 - float(dist), dict(rows[id_][0] or {}), rows[id_][1] or "")
            for id_, dist in ranked
            if id_ in rows
        ]

    def _filters(self, collection: Any, count: int) -> _FilterMap:
        cached = self._filter_maps.get(collection.name)
        if cached is None or cached.count != count:
            got = collection.get(include=["metadatas"])
            cached = _FilterMap(got["ids"], got["metadatas"], count)
            self._filter_maps[collection.name] = cached
        return cached

    def search_image(
        self,
        pixels: np.ndarray,
        k: int = 10,
        *,
        modality: str | None = None,
        patient: str | None = None,
    ) -> list[ImageHit]:
        """Images most like this one (8-bit RGB array)."""
        self._ready(self.vectors())
        vector = self.encoder.embed_images([pixels])[0]
        return self.query_vector(vector, k, modality=modality, patient=patient)

    def search_similar(
        self,
        image_id: str,
        k: int = 10,
        *,
        modality: str | None = None,
        patient: str | None = None,
    ) -> list[ImageHit]:
        """Images most like one already in the index (the image itself comes first)."""
        image_id = image_id.removeprefix("image:")
        got = self.vectors().get(ids=[image_id], include=["embeddings"])
        if not got["ids"]:
            raise ImageIndexError(f"no image with id {image_id!r} in index {self.name!r}")
        vector = np.asarray(got["embeddings"][0], dtype=np.float32)
        return self.query_vector(vector, k, modality=modality, patient=patient)

    def search_text(
        self,
        text: str,
        k: int = 10,
        *,
        modality: str | None = None,
        patient: str | None = None,
        mode: TextMode = "auto",
    ) -> list[ImageHit]:
        """Images matching a description.

        "image-space" compares the encoder's text embedding with image vectors (MedSigLIP);
        "metadata" compares MiniLM embeddings of the query and of each image's metadata and
        report text; "auto" picks image-space when the encoder has a text tower.
        """
        use_image_space = mode == "image-space" or (mode == "auto" and self.encoder.supports_text)
        if use_image_space:
            if not self.encoder.supports_text:
                raise ImageIndexError(f"encoder {self.encoder.name!r} cannot embed text")
            self._ready(self.vectors())
            vector = self.encoder.embed_texts([text])[0]
            return self.query_vector(vector, k, modality=modality, patient=patient)
        texts = self.texts()
        self._ready(texts)
        vector = self.text_embedder.embed([text])[0]
        return self.query_vector(vector, k, modality=modality, patient=patient, collection=texts)


def _clean_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Chroma metadata takes str, int, float and bool values only, and no None."""
    clean: dict[str, Any] = {}
    for key, value in meta.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool | int | float | str):
            clean[key] = value
        else:
            clean[key] = str(value)
    return clean
