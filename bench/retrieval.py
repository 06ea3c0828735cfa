"""Retrieval at 10,000 items: image search and guideline search on this machine.

Images: the bundled real images, transformed (crops, rotations, contrast, JPEG) into
`--encode` query-like variants that go through the full ingest (decode, EfficientNet-Lite0,
MiniLM metadata text, Chroma); the rest up to `--images` are near-duplicates of those real
vectors (small noise, renormalised) added in bulk, so the index holds 10,000 vectors without
encoding 10,000 images. Guidelines: the starter corpus plus rewritten variants of its
passages up to `--chunks`; `--embed` of them go through MiniLM, the others reuse their
parent's vector with noise (their text, which BM25 sees, is genuinely different).

Measured: ingest throughput, p50/p95 latency of top-10 queries (search only and end to end,
with and without filters), retrieval sanity (a transformed copy finds its original), BM25
build time, resident memory, disk size. The goal is a p50 under 20 ms for top-10 over 10,000.

    .venv/bin/python -m bench.retrieval [--images 10000] [--chunks 10000] [--encode 1000]
        [--chroma embedded|server|both]     # both: the same bench on `chroma run` as well

Prints a table and writes bench/out/retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from wardround.evals.tasks.image_retrieval_set import TRANSFORMS, transform_image
from wardround.tools.guidelines.index import GuidelineIndex
from wardround.tools.guidelines.ingest import Chunk, corpus_dir, discover, load_chunks
from wardround.tools.images.corpus import builtin_images, builtin_metadata
from wardround.tools.images.dicom import load_image
from wardround.tools.images.encoders import load_encoder
from wardround.tools.images.index import ImageIndex, ImageRecord, build_where
from wardround.tools.images.ingest import ingest

OUT = Path(__file__).resolve().parent / "out" / "retrieval.json"
console = Console()

GUIDELINE_QUERIES = [
    "maximum rate of IV potassium through a peripheral line",
    "HbA1c goal for older adults with multiple chronic illnesses",
    "how often should HbA1c be measured",
    "stage 2 hypertension threshold",
    "CHA2DS2-VASc threshold for anticoagulation",
    "qSOFA criteria",
    "CKD stage for eGFR 35",
    "statin for diabetes age 40 to 75",
    "shingles vaccine age",
    "magnesium for torsades de pointes",
    "chronic hyponatraemia correction limit",
    "transfusion haemoglobin threshold",
    "apixaban dose reduction",
    "sepsis antibiotics within one hour",
    "INR target mechanical mitral valve",
    "colorectal cancer screening age",
    "DKA potassium before insulin",
    "warfarin reversal major bleeding",
    "COPD exacerbation prednisone",
    "gout urate target",
]
IMAGE_TEXT_QUERIES = [
    "chest x-ray",
    "head CT",
    "echocardiogram",
    "renal ultrasound",
    "retinal fundus photograph",
    "immunohistochemistry slide",
    "shoulder MRI",
    "bone scan",
    "liver lesion MRI",
    "leg radiograph",
]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def rss_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def noisy(vectors: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    out = vectors + rng.normal(0.0, scale, vectors.shape).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# --- images ------------------------------------------------------------------------------


def _bases() -> list[tuple[Any, np.ndarray]]:
    bases = []
    for image, path in builtin_images():
        pixels = Image.fromarray(load_image(path).pixels)
        pixels.thumbnail((512, 512))
        bases.append((image, np.asarray(pixels)))
    return bases


def _ingest_variants(
    index: ImageIndex, bases: list, root: Path, encode: int, rng: np.random.Generator
) -> tuple[list[Path], int, float]:
    """Real variants as files, then the real ingest pipeline over them."""
    variant_dir = root / "variants"
    variant_dir.mkdir(parents=True)
    metadata: dict[Path, dict[str, Any]] = {}
    files = []
    for n in range(encode):
        image, pixels = bases[n % len(bases)]
        kind = TRANSFORMS[n % len(TRANSFORMS)]
        path = variant_dir / f"{n:05d}_{image.key}_{kind}.png"
        Image.fromarray(transform_image(pixels, kind, rng)).save(path, compress_level=1)
        files.append(path)
        metadata[path] = {**builtin_metadata(image), "patient_id": f"P{n % 50:03d}"}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ingest (real pipeline)", total=len(files))
        start = time.perf_counter()
        summary = ingest(index, files, metadata=metadata, on_file=lambda *_: progress.advance(task))
        ingest_s = time.perf_counter() - start
    # Two random JPEG re-encodings can come out byte-identical: deduplicated, as they should.
    assert len(summary.indexed) + summary.duplicates == encode, summary.skipped[:3]
    return files, len(summary.indexed), ingest_s


def _bulk_fill(
    index: ImageIndex, total: int, encoded: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Near-duplicates of the real vectors, up to `total`; returns the real vectors."""
    stored = index.vectors().get(include=["embeddings", "metadatas", "documents"])
    real_vectors = np.asarray(stored["embeddings"], dtype=np.float32)
    texts = index.texts().get(include=["embeddings", "documents"])
    text_cache = dict(zip(texts["documents"], texts["embeddings"], strict=True))
    start = time.perf_counter()
    added, batch = encoded, 1000
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("bulk add", total=total - encoded)
        while added < total:
            n = min(batch, total - added)
            pick = rng.integers(0, len(real_vectors), n)
            vectors = noisy(real_vectors[pick], rng, 0.01)
            records, text_vectors = [], []
            for i, j in enumerate(pick):
                meta = {**stored["metadatas"][j], "patient_id": f"P{(added + i) % 50:03d}"}
                doc = stored["documents"][j]
                records.append(ImageRecord(f"bulk-{added + i:06d}", vectors[i], meta, doc))
                text_vectors.append(text_cache[doc])
            index.add(records, text_vectors=np.asarray(text_vectors, dtype=np.float32))
            added += n
            progress.advance(task, n)
    return real_vectors, time.perf_counter() - start


def _image_latencies(
    index: ImageIndex, real_vectors: np.ndarray, files: list[Path], repeat: int,
    rng: np.random.Generator,
) -> dict[str, Any]:  # fmt: skip
    """Search only (a query vector is given) and end to end (decode + encode + search)."""
    queries = noisy(real_vectors[rng.integers(0, len(real_vectors), repeat)], rng, 0.05)
    cycle = iter(range(10**9))

    def vector_query(**filters: str) -> Callable[[], Any]:
        return lambda: index.query_vector(queries[next(cycle) % repeat], 10, **filters)

    def chroma_where(where: dict[str, Any]) -> Callable[[], Any]:
        return lambda: index.vectors().query(
            query_embeddings=[queries[next(cycle) % repeat]], n_results=10, where=where,
            include=["metadatas", "documents", "distances"],
        )  # fmt: skip

    probe_files = files[: max(10, repeat // 5)]
    probe, text_cycle = iter(range(10**9)), iter(range(10**9))

    def image_query() -> Any:
        return index.search_image(
            load_image(probe_files[next(probe) % len(probe_files)]).pixels, 10
        )

    def text_query(**filters: str) -> Callable[[], Any]:
        return lambda: index.search_text(IMAGE_TEXT_QUERIES[next(text_cycle) % 10], 10, **filters)

    return {
        "image search only": timed(vector_query(), repeat),
        "image search only, modality=CT": timed(vector_query(modality="CT"), repeat),
        "image search only, patient=P007": timed(vector_query(patient="P007"), repeat),
        "(Chroma where filter, modality=CT)": timed(chroma_where(build_where("CT")), repeat),
        "(Chroma where filter, patient=P007)": timed(
            chroma_where(build_where(patient="P007")), repeat
        ),
        "image query end to end (PNG)": timed(image_query, len(probe_files)),
        "text query end to end (metadata)": timed(text_query(), repeat),
        "text query end to end, modality=US": timed(text_query(modality="US"), repeat),
    }


def _same_source_rate(
    index: ImageIndex, bases: list, rng: np.random.Generator, trials: int = 48
) -> float:
    """Fresh transformed copies that find an image of the right source in the top 10."""
    hits = 0
    for n in range(trials):
        image, pixels = bases[n % len(bases)]
        query = transform_image(pixels, TRANSFORMS[n % len(TRANSFORMS)], rng)
        hits += any(h.metadata.get("builtin") == image.key for h in index.search_image(query, 10))
    return hits / trials


def bench_images(
    root: Path, total: int, encode: int, repeat: int, seed: int, store: Store
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    index = ImageIndex(store.location, load_encoder("efficientnet-lite0"))
    index.text_embedder.embed(["warm up"])
    bases = _bases()
    files, encode, ingest_s = _ingest_variants(index, bases, root, encode, rng)
    real_vectors, bulk_s = _bulk_fill(index, total, encode, rng)
    count = index.count()
    results = _image_latencies(index, real_vectors, files, repeat, rng)
    return {
        "count": count,
        "encoded": encode,
        "bulk_added": total - encode,
        "ingest_images_per_s": encode / ingest_s,
        "bulk_add_vectors_per_s": (total - encode) / bulk_s if total > encode else None,
        "latency_ms": {
            k: {"p50": pct(v, 50), "p95": pct(v, 95), "n": len(v)} for k, v in results.items()
        },
        "same_source_in_top10": _same_source_rate(index, bases, rng),
        "disk_mb": dir_mb(store.disk),
    }


# --- guidelines --------------------------------------------------------------------------

_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")


def variant_chunk(chunk: Chunk, n: int, rng: np.random.Generator) -> Chunk:
    """A rewritten copy: sentences reordered, numbers nudged, a local-protocol source."""
    sentences = re.split(r"(?<=[.;])\s+", chunk.text)
    rng.shuffle(sentences)
    text = _NUMBER.sub(
        lambda m: str(round(float(m.group()) * rng.uniform(0.8, 1.2), 1)), " ".join(sentences)
    )
    source = f"local-{chunk.source}-{n // 200}"
    return replace(
        chunk,
        id=f"{source}:{n:06d}",
        source=source,
        text=text,
        title=f"{chunk.title} (local protocol {n // 200})",
        position=n,
    )


def _guideline_latencies(index: GuidelineIndex, repeat: int) -> dict[str, Any]:
    """End to end (MiniLM + Chroma + BM25 + RRF), and each part alone."""
    cycle = iter(range(10**9))
    queries = GUIDELINE_QUERIES
    results = {
        "guideline search end to end (MiniLM + Chroma + BM25 + RRF)": timed(
            lambda: index.search(queries[next(cycle) % len(queries)], 10), repeat
        ),
        "guideline search end to end, source filter": timed(
            lambda: index.search(
                queries[next(cycle) % len(queries)], 10, source="potassium-repletion"
            ),
            repeat,
        ),
    }
    vectors = index.embedder.embed(queries)
    results["guideline dense only (query vector given)"] = timed(
        lambda: index.collection().query(
            query_embeddings=[vectors[next(cycle) % len(queries)]], n_results=50, include=[]
        ),
        repeat,
    )
    lexical = index.lexical()
    results["guideline BM25 only"] = timed(
        lambda: lexical.top(queries[next(cycle) % len(queries)], 50), repeat
    )
    results["MiniLM query embedding"] = timed(
        lambda: index.embedder.embed([queries[next(cycle) % len(queries)]]), repeat
    )

    return results


def bench_guidelines(
    root: Path, total: int, embed: int, repeat: int, seed: int, store: Store
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    index = GuidelineIndex(store.location)
    base = [c for path in discover([corpus_dir()]) for c in load_chunks(path)]
    index.embedder.embed(["warm up"])

    start = time.perf_counter()
    base_vectors = index.embedder.embed([c.embedding_text() for c in base])
    index.add(base, vectors=base_vectors)
    variants = [variant_chunk(base[n % len(base)], n, rng) for n in range(total - len(base))]
    embedded = variants[: max(0, embed - len(base))]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("embed + add chunks", total=len(variants))
        for i in range(0, len(embedded), 256):
            batch = embedded[i : i + 256]
            index.add(batch)
            progress.advance(task, len(batch))
        embed_s = time.perf_counter() - start
        rest = variants[len(embedded) :]
        start = time.perf_counter()
        parents = np.array([(len(embedded) + i) % len(base) for i in range(len(rest))], dtype=int)
        rest_vectors = noisy(base_vectors[parents], rng, 0.02) if rest else base_vectors[:0]
        for i in range(0, len(rest), 1000):
            index.add(rest[i : i + 1000], vectors=rest_vectors[i : i + 1000])
            progress.advance(task, len(rest[i : i + 1000]))
        bulk_s = time.perf_counter() - start
    count = index.count()

    start = time.perf_counter()
    index.lexical()
    bm25_build_s = time.perf_counter() - start
    results = _guideline_latencies(index, repeat)

    correct = sum(
        any(h.source.endswith(expected) for h in index.search(q, 5))
        for q, expected in (
            ("qSOFA criteria", "sepsis-criteria"),
            ("INR target mechanical mitral valve", "warfarin-inr"),
            ("HbA1c goal for older adults", "hba1c-targets"),
        )
    )
    return {
        "count": count,
        "embedded": len(base) + len(embedded),
        "bulk_added": len(rest),
        "embed_and_add_chunks_per_s": (len(base) + len(embedded)) / embed_s,
        "bulk_add_chunks_per_s": len(rest) / bulk_s if rest else None,
        "bm25_build_s": bm25_build_s,
        "latency_ms": {
            k: {"p50": pct(v, 50), "p95": pct(v, 95), "n": len(v)} for k, v in results.items()
        },
        "sanity_queries_right_source_top5": f"{correct}/3",
        "disk_mb": dir_mb(store.disk),
    }


@dataclass
class Store:
    """Where a bench index lives: a directory, or a Chroma server's URL and its data folder."""

    location: Path | str
    disk: Path


@contextmanager
def open_store(kind: str, folder: Path) -> Iterator[Store]:
    if kind == "embedded":
        yield Store(folder / "chroma", folder / "chroma")
        return
    from wardround.testing.chroma_server import chroma_server

    with chroma_server(folder / "server") as url:  # `chroma run` on a free port
        yield Store(url, folder / "server" / "data")


def run_store(kind: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    console.print(f"[bold]{kind} Chroma, images[/]: {args.images} vectors ({args.encode} encoded)")
    with open_store(kind, root / kind / "images") as store:
        out["images"] = bench_images(
            root / kind / "images", args.images, args.encode, args.repeat, args.seed, store
        )
    console.print(f"[bold]{kind} Chroma, guidelines[/]: {args.chunks} ({args.embed} embedded)")
    with open_store(kind, root / kind / "guidelines") as store:
        out["guidelines"] = bench_guidelines(
            root / kind / "guidelines", args.chunks, args.embed, args.repeat, args.seed, store
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--encode", type=int, default=1000, help="images through the encoder")
    parser.add_argument("--embed", type=int, default=1000, help="chunks through MiniLM")
    parser.add_argument("--repeat", type=int, default=200, help="queries per latency row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the indexes here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for bulk work")
    parser.add_argument(
        "--chroma",
        choices=["embedded", "server", "both"],
        default="embedded",
        help="the embedded store, a Chroma server (`chroma run`, started here), or both",
    )
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = args.keep or Path(tempfile.mkdtemp(prefix="wr_retrieval_"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = load_average()
    kinds = ["embedded", "server"] if args.chroma == "both" else [args.chroma]
    try:
        stores = {kind: run_store(kind, root, args) for kind in kinds}
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before_after": [load_before, load_average()],
        "runtime_s": time.perf_counter() - started,
        "memory_mb": rss_mb(),
        **stores[kinds[0]],  # "images" and "guidelines" of the first store, as before
        "stores": stores,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    print_report(report)
    console.print(f"wrote {OUT}")


def print_report(report: dict[str, Any]) -> None:
    stores: dict[str, Any] = report["stores"]
    table = Table(title="top-10 query latency (ms): p50 / p95")
    table.add_column("query")
    for kind in stores:
        table.add_column(kind, justify="right")
    first = next(iter(stores.values()))
    for section in ("images", "guidelines"):
        for name in first[section]["latency_ms"]:
            cells = [stores[k][section]["latency_ms"][name] for k in stores]
            table.add_row(name, *(f"{c['p50']:.1f} / {c['p95']:.1f}" for c in cells))
    console.print(table)
    summary = Table(title="ingest, size, memory")
    summary.add_column("measure")
    for kind in stores:
        summary.add_column(kind, justify="right")
    rows = [
        ("image vectors", "images", "count", "{}"),
        ("image ingest, real pipeline (images/s)", "images", "ingest_images_per_s", "{:.1f}"),
        ("image bulk add (vectors/s)", "images", "bulk_add_vectors_per_s", "{:.0f}"),
        ("image index on disk (MB)", "images", "disk_mb", "{:.1f}"),
        ("same source in top 10 (transformed copy)", "images", "same_source_in_top10", "{:.2f}"),
        ("guideline chunks", "guidelines", "count", "{}"),
        ("guideline embed + add (chunks/s)", "guidelines", "embed_and_add_chunks_per_s", "{:.1f}"),
        ("guideline bulk add (chunks/s)", "guidelines", "bulk_add_chunks_per_s", "{:.0f}"),
        ("BM25 build over all chunks (s)", "guidelines", "bm25_build_s", "{:.2f}"),
        ("guideline index on disk (MB)", "guidelines", "disk_mb", "{:.1f}"),
    ]
    for label, section, key, fmt in rows:
        values = [stores[k][section][key] for k in stores]
        summary.add_row(label, *("-" if v is None else fmt.format(v) for v in values))
    memory = report["memory_mb"]
    summary.add_row(
        "resident memory now / peak (MB)", f"{memory['VmRSS']:.0f} / {memory['VmHWM']:.0f}"
    )
    before, after = report["load_average_before_after"]
    summary.add_row("load average before / after", f"{before} / {after}")
    summary.add_row("bench runtime (s)", f"{report['runtime_s']:.0f}")
    console.print(summary)


if __name__ == "__main__":
    main()
