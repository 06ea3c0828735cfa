"""The guideline passage a card cites, found once per (query, source) and kept.

Each rule names its guideline (the starter corpus file) and a question; the guideline index
answers it (MiniLM + BM25, restricted to that source). Searching embeds the question, which
costs a model load on first use, so the answers are cached and `warm()` finds every rule's
passage before the first hook; the hot path is then a dictionary read. Without an index
(a fresh install before `wardround guidelines index`) the starter corpus file itself is read
and its best section by term overlap is cited.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from wardround.tools.guidelines.index import GuidelineIndex, tokenize
from wardround.tools.guidelines.ingest import Chunk, Passage, corpus_dir, load_chunks

__all__ = ["CorpusPassages", "IndexPassages", "PassageFinder", "open_passages"]

log = logging.getLogger(__name__)


class PassageFinder(Protocol):
    def find(self, query: str, source: str | None = None) -> Passage | None: ...


class _Cached:
    """A finder's answers kept by (query, source); lookups are thread-safe."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str | None], Passage | None] = {}
        self._lock = threading.Lock()

    def find(self, query: str, source: str | None = None) -> Passage | None:
        key = (query, source)
        if key in self._found:
            return self._found[key]
        with self._lock:
            if key not in self._found:
                self._found[key] = self._search(query, source)
        return self._found[key]

    def warm(self, queries: Iterable[tuple[str, str | None]]) -> None:
        for query, source in queries:
            self.find(query, source)

    def _search(self, query: str, source: str | None) -> Passage | None:
        raise NotImplementedError


class IndexPassages(_Cached):
    """Passages from a guideline index (the same one the copilot's lookup tool searches)."""

    def __init__(self, index: GuidelineIndex) -> None:
        super().__init__()
        self.index = index

    def _search(self, query: str, source: str | None) -> Passage | None:
        hits = self.index.search(query, k=1, source=source)
        return hits[0] if hits else None


class CorpusPassages(_Cached):
    """Passages read from the starter corpus files (no index, no model)."""

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        self.folder = folder or corpus_dir()

    def _search(self, query: str, source: str | None) -> Passage | None:
        if source is None:
            return None
        chunks = _chunks(self.folder / f"{source}.md")
        terms = set(tokenize(query))
        scored = [(len(terms & set(tokenize(f"{c.section} {c.text}"))), c) for c in chunks]
        best = max(scored, key=lambda pair: pair[0], default=(0, None))
        return best[1] if best[0] else None


@lru_cache(maxsize=64)
def _chunks(path: Path) -> list[Chunk]:
    return load_chunks(path) if path.exists() else []


def _open(settings: Any) -> PassageFinder:
    try:
        index = GuidelineIndex(settings.chroma_url or settings.chroma_dir)
        if index.count():
            return IndexPassages(index)
    except Exception as exc:  # a broken index must not stop decision support
        log.warning("guideline index unavailable, citing the starter corpus: %s", exc)
    return CorpusPassages()


class _Deferred:
    """Opens the index on first use, not when the app is built (tests build many apps)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._finder: PassageFinder | None = None
        self._lock = threading.Lock()

    def find(self, query: str, source: str | None = None) -> Passage | None:
        if self._finder is None:
            with self._lock:
                if self._finder is None:
                    self._finder = _open(self.settings)
        return self._finder.find(query, source)


def open_passages(settings: Any) -> PassageFinder:
    """The guideline index of these settings when it holds passages, else the corpus files
    (decided on the first lookup)."""
    return _Deferred(settings)
