"""Split guideline documents (Markdown, HTML, PDF) into section-aware chunks.

Each chunk keeps the document it came from (`source`, a stable key from the file name), the
document title, the heading path of its section and the document's citation line (a
paragraph starting "Source:"), so an answer can cite "guideline:<source>#<section>".
Chunks never cross a section boundary and stay under the MiniLM input length.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wardround.tools.files import files_under

if TYPE_CHECKING:  # bs4 is imported when HTML is parsed
    from bs4 import Tag

SUFFIXES = {".md", ".markdown", ".html", ".htm", ".pdf", ".txt"}
# About 200 word pieces: under MiniLM's 256 with the title and section prepended.
MAX_CHARS = 900
SOURCE_LINE = re.compile(r"^\s*(sources?|reference|based on)\s*:\s*", re.IGNORECASE)


class DocumentError(Exception):
    """A file that cannot be read as a guideline; the message is the reason."""


@dataclass
class Section:
    headings: list[str]
    blocks: list[str] = field(default_factory=list)


@dataclass
class Document:
    source: str
    title: str
    path: str
    citation: str = ""
    sections: list[Section] = field(default_factory=list)


@dataclass
class Passage:
    """Text from one section of a guideline, with what an answer needs to cite it."""

    id: str
    source: str
    title: str
    section: str
    text: str
    citation: str

    @property
    def ref(self) -> str:
        return guideline_ref(self.source, self.section)


@dataclass
class Chunk(Passage):
    """A passage as indexed: from the file at `path`, at `position` in its document."""

    path: str
    position: int

    def embedding_text(self) -> str:
        """What is embedded and indexed: title and section give short passages context."""
        return f"{self.title}. {self.section}. {self.text}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "overview"


def guideline_ref(source: str, section: str) -> str:
    return f"guideline:{source}#{slug(section)}"


def corpus_dir() -> Path:
    """The starter corpus that ships with wardround."""
    return Path(__file__).resolve().parent / "corpus"


def discover(paths: Iterable[Path]) -> list[Path]:
    return files_under(paths)


def load_document(path: Path) -> Document:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DocumentError(f"not a guideline document ({suffix or 'no suffix'})")
    try:
        if suffix == ".pdf":
            doc = parse_pdf(path)
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
            doc = (
                parse_html(text, path)
                if suffix in {".html", ".htm"}
                else parse_markdown(text, path)
            )
    except DocumentError:
        raise
    except Exception as exc:
        raise DocumentError(f"unreadable {suffix.lstrip('.')} file: {str(exc)[:120]}") from exc
    if not any(section.blocks for section in doc.sections):
        raise DocumentError("no text found")
    return doc


def chunk_document(doc: Document, max_chars: int = MAX_CHARS) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in doc.sections:
        name = " > ".join(section.headings) or "Overview"
        for text in _pack(section.blocks, max_chars):
            position = len(chunks)
            digest = hashlib.sha256(
                f"{doc.source}\n{name}\n{position}\n{text}".encode()
            ).hexdigest()
            chunks.append(
                Chunk(
                    id=f"{doc.source}:{digest[:16]}",
                    source=doc.source,
                    title=doc.title,
                    section=name,
                    text=text,
                    citation=doc.citation,
                    path=doc.path,
                    position=position,
                )
            )
    return chunks


def load_chunks(path: Path, max_chars: int = MAX_CHARS) -> list[Chunk]:
    return chunk_document(load_document(path), max_chars)


# --- packing -----------------------------------------------------------------------------


def _pack(blocks: list[str], max_chars: int) -> list[str]:
    """Join whole blocks up to max_chars; split an oversized block at sentence ends."""
    pieces: list[str] = []
    for block in blocks:
        if len(block) <= max_chars:
            pieces.append(block)
        else:
            pieces.extend(_split_long(block, max_chars))
    out: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 1 + len(piece) > max_chars:
            out.append(current)
            current = piece
        else:
            current = f"{current}\n{piece}" if current else piece
    if current:
        out.append(current)
    return out


def _split_long(text: str, max_chars: int) -> list[str]:
    sentences = re.split(r"(?<=[.!?;])\s+", text)
    out: list[str] = []
    current = ""
    for sentence in sentences:
        while len(sentence) > max_chars:  # a run-on without stops: cut at a space
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            out.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        out.append(current)
    return out


# --- formats -----------------------------------------------------------------------------


class _Builder:
    """Accumulates sections while a parser walks headings and blocks in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.title = ""
        self.citation = ""
        self.stack: list[tuple[int, str]] = []
        self.sections: list[Section] = []

    def heading(self, level: int, text: str) -> None:
        text = _clean(text)
        if not text:
            return
        if level == 1 and not self.title:
            self.title = text
            self.stack = []
            return
        self.stack = [(lvl, t) for lvl, t in self.stack if lvl < level]
        self.stack.append((level, text))

    def block(self, text: str) -> None:
        text = _clean(text)
        if not text:
            return
        if not self.citation and SOURCE_LINE.match(text):
            self.citation = SOURCE_LINE.sub("", text).strip()
            return
        headings = [t for _, t in self.stack]
        if not self.sections or self.sections[-1].headings != headings:
            self.sections.append(Section(headings))
        self.sections[-1].blocks.append(text)

    def document(self) -> Document:
        title = self.title or self.path.stem.replace("-", " ").replace("_", " ").strip()
        return Document(
            source=slug(self.path.stem),
            title=title,
            path=str(self.path),
            citation=self.citation,
            sections=self.sections,
        )


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_markdown(text: str, path: Path) -> Document:
    from markdown_it import MarkdownIt

    builder = _Builder(path)
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    in_heading: int | None = None
    list_depth = 0
    row: list[str] | None = None
    for token in tokens:
        if token.type == "heading_open":
            in_heading = int(token.tag[1])
        elif token.type == "heading_close":
            in_heading = None
        elif token.type in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            builder.block(" | ".join(row))
            row = None
        elif token.type in ("fence", "code_block"):
            builder.block(token.content)
        elif token.type == "inline":
            content = _inline_text(token)
            if in_heading is not None:
                builder.heading(in_heading, content)
            elif row is not None:
                row.append(content)
            else:
                builder.block(f"- {content}" if list_depth else content)
    return builder.document()


def _inline_text(token: object) -> str:
    children = getattr(token, "children", None) or []
    if not children:
        return str(getattr(token, "content", ""))
    parts = []
    for child in children:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts)


def _element_text(element: Tag) -> str:
    # get_text(" ") keeps words of adjacent tags apart but also spaces out punctuation.
    text = element.get_text(" ")
    return re.sub(r"\s+([.,;:!?)])", r"\1", re.sub(r"\(\s+", "(", text))


def parse_html(text: str, path: Path) -> Document:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "header", "aside", "noscript"]):
        tag.decompose()
    builder = _Builder(path)
    headings = {f"h{i}" for i in range(1, 7)}
    blocks = {"p", "li", "pre", "blockquote", "tr", "dd", "dt", "figcaption"}
    for element in soup.find_all([*headings, *blocks]):
        # A block inside another block (a <p> inside an <li>) is read with its parent.
        if element.name in blocks and element.find_parent(list(blocks)):
            continue
        if element.name in headings:
            builder.heading(int(element.name[1]), _element_text(element))
        elif element.name == "tr":
            cells = [_element_text(c).strip() for c in element.find_all(["td", "th"])]
            builder.block(" | ".join(c for c in cells if c))
        else:
            prefix = "- " if element.name == "li" else ""
            builder.block(prefix + _element_text(element))
    if not builder.title and soup.title and soup.title.string:
        builder.title = _clean(soup.title.string)
    return builder.document()


# Numbered ("2.1 Targets") or short all-capitals lines are taken as PDF headings.
_PDF_HEADING = re.compile(r"^(\d+(\.\d+)*\.?\s+[A-Z][^.]{2,80}|[A-Z][A-Z0-9 ,&/()-]{3,80})$")


def parse_pdf(path: Path) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except PdfReadError as exc:
        raise DocumentError(f"unreadable pdf: {exc}") from exc
    builder = _Builder(path)
    meta_title = getattr(reader.metadata, "title", None) if reader.metadata else None
    if meta_title:
        builder.title = _clean(str(meta_title))
    for number, page in enumerate(pages, start=1):
        # Until the document shows headings of its own, sections are pages.
        if not builder.stack or builder.stack[-1][1].startswith("Page "):
            builder.heading(2, f"Page {number}")
        paragraph: list[str] = []
        for raw in page.splitlines():
            line = raw.strip()
            if not line:
                if paragraph:
                    builder.block(" ".join(paragraph))
                    paragraph = []
                continue
            if _PDF_HEADING.match(line) and len(line) < 90:
                if paragraph:
                    builder.block(" ".join(paragraph))
                    paragraph = []
                level = line.split()[0].rstrip(".").count(".") + 2 if line[0].isdigit() else 2
                builder.heading(level, line)
                continue
            paragraph.append(line)
        if paragraph:
            builder.block(" ".join(paragraph))
    return builder.document()
