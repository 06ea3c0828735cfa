"""Hybrid guideline search: MiniLM vectors in Chroma plus BM25, fused by reciprocal rank.

Dense retrieval finds paraphrases ("low potassium" for "hypokalaemia"); BM25 finds exact
terms the embedding blurs (drug names, "CHA2DS2-VASc", numbers). Reciprocal-rank fusion
(score = sum of 1 / (60 + rank)) needs no score calibration between the two.

BM25 statistics come from rank-bm25; its per-query scoring loops over documents in Python,
so the same Okapi weights are laid out once as a sparse term-document matrix and a query
is a sum of a few columns, which keeps 10,000 chunks well under a millisecond.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from wardround.tools.guidelines.ingest import Chunk, Passage
from wardround.tools.text_embeddings import MiniLMEmbeddingFunction, TextEmbedder

DEFAULT_COLLECTION = "guidelines"
RRF_K = 60
COUNT_TTL_S = 1.0
_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "which",
        "who",
        "with",
        "should",
        "does",
        "do",
        "i",
        "my",
        "me",
        "we",
        "our",
        "you",
        "your",
        "than",
        "then",
    ]
)


class GuidelineIndexError(Exception):
    """A problem with the guideline index the user can fix; the message says how."""


# A light suffix stripper, so "reduce", "reduced" and "reduction" (or "dose" and "dosing")
# meet in BM25; the dense side covers real paraphrase.
_SUFFIXES = (
    ("ications", "ic"),
    ("ication", "ic"),
    ("ations", "ate"),
    ("ation", "ate"),
    ("uctions", "uc"),
    ("uction", "uc"),
    ("ments", ""),
    ("ment", ""),
    ("ings", ""),
    ("ing", ""),
    ("ies", "y"),
    ("ied", "y"),
    ("ed", ""),
    ("es", ""),
    ("s", ""),
)


def stem(token: str) -> str:
    if len(token) <= 3 or not token.isalpha():
        return token
    for suffix, replacement in _SUFFIXES:
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            if suffix == "s" and token.endswith(("ss", "is", "us")):
                break
            token = token[: -len(suffix)] + replacement
            break
    return token[:-1] if token.endswith("e") and len(token) > 3 else token


def tokenize(text: str) -> list[str]:
    return [stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


@dataclass
class GuidelineHit(Passage):
    score: float  # fused reciprocal-rank score
    dense_rank: int | None  # 1-based rank in each retriever, None when outside its candidates
    lexical_rank: int | None


class _Lexical:
    """BM25 (Okapi, rank-bm25's parameters and idf) over every chunk, as a sparse matrix."""

    def __init__(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        from rank_bm25 import BM25Okapi
        from scipy import sparse

        self.ids = ids
        self.texts = texts
        self.metadatas = metadatas
        self.row = {id_: i for i, id_ in enumerate(ids)}
        self.by_source: dict[str, list[str]] = {}
        for id_, meta in zip(ids, metadatas, strict=True):
            self.by_source.setdefault(str(meta.get("source", "")), []).append(id_)
        tokens = [tokenize(_index_text(t, m)) for t, m in zip(texts, metadatas, strict=True)]
        self.vocab: dict[str, int] = {}
        for doc in tokens:
            for term in doc:
                self.vocab.setdefault(term, len(self.vocab))
        if not ids or not self.vocab:
            self.matrix = sparse.csc_matrix((len(ids), max(1, len(self.vocab))), dtype=np.float32)
            return
        bm25 = BM25Okapi(tokens)
        rows, cols, vals = [], [], []
        for i, freqs in enumerate(bm25.doc_freqs):
            norm = bm25.k1 * (1 - bm25.b + bm25.b * bm25.doc_len[i] / bm25.avgdl)
            for term, tf in freqs.items():
                rows.append(i)
                cols.append(self.vocab[term])
                vals.append(bm25.idf[term] * tf * (bm25.k1 + 1) / (tf + norm))
        self.matrix = sparse.csc_matrix(
            (np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(ids), len(self.vocab))
        )

    def scores(self, query: str) -> np.ndarray:
        cols = [self.vocab[t] for t in tokenize(query) if t in self.vocab]
        if not cols:
            return np.zeros(len(self.ids), dtype=np.float32)
        # Repeated query terms count repeatedly, as in rank-bm25's get_scores.
        return np.asarray(self.matrix[:, cols].sum(axis=1)).ravel()

    def top(self, query: str, n: int, source: str | None = None) -> list[str]:
        scores = self.scores(query)
        if source is not None:
            mask = np.array([m.get("source") == source for m in self.metadatas], dtype=bool)
            scores = np.where(mask, scores, 0.0)
        n = min(n, int((scores > 0).sum()))
        if n == 0:
            return []
        best = np.argpartition(-scores, n - 1)[:n]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [self.ids[i] for i in best]


def _index_text(text: str, meta: dict[str, Any]) -> str:
    return f"{meta.get('title', '')}. {meta.get('section', '')}. {text}"


def _is_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(("http://", "https://"))


class GuidelineIndex:
    """Guideline chunks in one Chroma collection, searched densely and lexically."""

    def __init__(
        self,
        chroma_dir: Path | str,
        *,
        collection: str = DEFAULT_COLLECTION,
        embedder: TextEmbedder | None = None,
    ) -> None:
        # A directory, or the URL of a Chroma server (`chroma run`).
        self.chroma_dir = chroma_dir if _is_url(chroma_dir) else Path(chroma_dir).expanduser()
        self.name = collection
        self.embedder = embedder or TextEmbedder()
        self._client: Any = None
        self._collection: Any = None
        self._lexical: _Lexical | None = None
        self._lexical_count = -1
        self._count: tuple[float, int] | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings as ChromaSettings

            settings = ChromaSettings(anonymized_telemetry=False)
            if isinstance(self.chroma_dir, str):
                url = urlsplit(self.chroma_dir)
                ssl = url.scheme == "https"
                self._client = chromadb.HttpClient(
                    host=url.hostname or "localhost",
                    port=url.port or (443 if ssl else 8000),
                    ssl=ssl,
                    settings=settings,
                )
            else:
                self.chroma_dir.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(
                    path=str(self.chroma_dir), settings=settings
                )
        return self._client

    def _exists(self) -> bool:
        if self._collection is not None:
            return True
        local = self.chroma_dir  # a directory, or a Chroma server's URL
        if self._client is None and isinstance(local, Path) and not local.exists():
            return False  # a read must not leave an empty Chroma directory behind
        return self.name in {c.name for c in self.client.list_collections()}

    def collection(self, create: bool = False) -> Any:
        if self._collection is not None:
            return self._collection
        ef = MiniLMEmbeddingFunction()
        if self._exists():
            self._collection = self.client.get_collection(self.name, embedding_function=ef)
        elif create:
            self._collection = self.client.create_collection(
                self.name,
                metadata={
                    "kind": "guideline-chunks",
                    "encoder": self.embedder.name,
                    "dim": self.embedder.dim,
                },
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=ef,
            )
        else:
            raise GuidelineIndexError(
                f"no guideline index {self.name!r} in {self.chroma_dir}; build it with "
                "`wardround guidelines index` (starter corpus) or `wardround guidelines index DIR`"
            )
        return self._collection

    def count(self) -> int:
        """Number of chunks, re-read at most once a second (a count costs ~2 ms): writes
        from this object are seen at once, another process's within a second."""
        if not self._exists():
            return 0
        now = time.monotonic()
        if self._count is None or now - self._count[0] > COUNT_TTL_S:
            self._count = (now, int(self.collection().count()))
        return self._count[1]

    # -- writing ----------------------------------------------------------------------------

    def replace_source(self, source: str, chunks: Sequence[Chunk], batch_size: int = 256) -> int:
        """Make `chunks` the only chunks of `source`: re-indexing a file never duplicates it."""
        collection = self.collection(create=True)
        collection.delete(where={"source": source})
        self._count = None
        self.add(chunks, batch_size=batch_size)
        return len(chunks)

    def add(
        self, chunks: Sequence[Chunk], batch_size: int = 256, vectors: np.ndarray | None = None
    ) -> None:
        """Store chunks (upsert by id); `vectors` skips embedding when they are known."""
        collection = self.collection(create=True)
        for start in range(0, len(chunks), batch_size):
            batch = list(chunks[start : start + batch_size])
            batch_vectors = (
                self.embedder.embed([c.embedding_text() for c in batch])
                if vectors is None
                else vectors[start : start + len(batch)]
            )
            collection.upsert(
                ids=[c.id for c in batch],
                embeddings=batch_vectors,
                documents=[c.text for c in batch],
                metadatas=[_chunk_metadata(c) for c in batch],
            )
        self._lexical = None
        self._count = None

    # -- reading ----------------------------------------------------------------------------

    def lexical(self) -> _Lexical:
        """The BM25 side, rebuilt when the collection's size changed since it was built."""
        count = self.count()
        if self._lexical is None or count != self._lexical_count:
            got = (
                self.collection().get(include=["documents", "metadatas"])
                if count
                else {"ids": [], "documents": [], "metadatas": []}
            )
            self._lexical = _Lexical(
                list(got["ids"]),
                list(got["documents"] or []),
                [dict(m or {}) for m in got["metadatas"] or []],
            )
            self._lexical_count = count
        return self._lexical

    def sources(self) -> list[tuple[str, str]]:
        """(source, title) of every indexed document."""
        seen: dict[str, str] = {}
        for meta in self.lexical().metadatas:
            seen.setdefault(str(meta.get("source")), str(meta.get("title", "")))
        return sorted(seen.items())

    def search(
        self, query: str, k: int = 5, *, source: str | None = None, candidates: int = 50
    ) -> list[GuidelineHit]:
        query = query.strip()
        if not query:
            raise GuidelineIndexError("empty query")
        if not self._exists():
            self.collection()  # raises the "no index, build it with ..." message
        lexical = self.lexical()
        if not lexical.ids:
            raise GuidelineIndexError(
                f"guideline index {self.name!r} in {self.chroma_dir} is empty; build it with "
                "`wardround guidelines index`"
            )
        pool = lexical.by_source.get(source, []) if source else lexical.ids
        if not pool:
            return []
        n = min(candidates, len(pool))
        vector = self.embedder.embed([query])[0]
        # One document's chunks are few: searching their ids beats a metadata filter.
        result = self.collection().query(
            query_embeddings=[vector], n_results=n, ids=pool if source else None, include=[]
        )
        dense = list(result["ids"][0])
        sparse_ids = lexical.top(query, n, source)
        return self._fuse(lexical, dense, sparse_ids, k)

    def _fuse(
        self, lexical: _Lexical, dense: list[str], sparse_ids: list[str], k: int
    ) -> list[GuidelineHit]:
        scores: dict[str, float] = {}
        dense_rank = {id_: r for r, id_ in enumerate(dense, start=1)}
        sparse_rank = {id_: r for r, id_ in enumerate(sparse_ids, start=1)}
        for ranks in (dense_rank, sparse_rank):
            for id_, rank in ranks.items():
                scores[id_] = scores.get(id_, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(scores, key=lambda i: (-scores[i], dense_rank.get(i, 10**9)))[:k]
        hits = []
        for id_ in best:
            row = lexical.row.get(id_)
            if row is None:  # written by another process after our BM25 snapshot
                continue
            meta = lexical.metadatas[row]
            hits.append(
                GuidelineHit(
                    id=id_,
                    source=str(meta.get("source", "")),
                    title=str(meta.get("title", "")),
                    section=str(meta.get("section", "")),
                    text=lexical.texts[row],
                    citation=str(meta.get("citation", "")),
                    score=scores[id_],
                    dense_rank=dense_rank.get(id_),
                    lexical_rank=sparse_rank.get(id_),
                )
            )
        return hits


def _chunk_metadata(chunk: Chunk) -> dict[str, Any]:
    meta = {
        "source": chunk.source,
        "title": chunk.title,
        "section": chunk.section,
        "citation": chunk.citation,
        "path": chunk.path,
        "position": chunk.position,
    }
    return {k: v for k, v in meta.items() if v not in (None, "")}


def index_files(
    index: GuidelineIndex, files: Iterable[Path], on_file: Any = None
) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """Index each file as one source; returns (indexed with chunk counts, skipped with reasons)."""
    from wardround.tools.guidelines.ingest import DocumentError, chunk_document, load_document

    indexed: list[tuple[Path, int]] = []
    skipped: list[tuple[Path, str]] = []
    for path in files:
        try:
            doc = load_document(path)
            n = index.replace_source(doc.source, chunk_document(doc))
            indexed.append((path, n))
            reason = None
        except DocumentError as exc:
            reason = str(exc)
            skipped.append((path, reason))
        if on_file is not None:
            on_file(path, reason)
    return indexed, skipped
