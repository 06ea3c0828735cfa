"""Finding the files an ingest reads."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def files_under(paths: Iterable[Path]) -> list[Path]:
    """Every file given, and every file under the folders given, sorted per folder; hidden
    files and files in hidden folders are left out."""
    files: list[Path] = []
    for root in paths:
        root = Path(root).expanduser()
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(
                p
                for p in sorted(root.rglob("*"))
                if p.is_file() and not any(x.startswith(".") for x in p.relative_to(root).parts)
            )
    return files
