"""Image retrieval: recall@k on the retrieval set built from the real images that ship on PyPI.

The set (`image_retrieval_set.build_retrieval_set`) holds the original images, which are
indexed, and queries: transformed copies of each original (crop, rotation, contrast,
recompression; the right answer is the original) and text queries with their relevant
images. A sample is correct when every relevant image is among the top k hits (k=5 unless
the option `k` says otherwise); its value is recall@k.

No chat model takes part: the search is the same for every model, so a comparison of two
models on this task shows no difference by construction. It measures the retrieval stack
(encoder, index, text search) that the agents' image tool stands on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wardround.evals.task import EvalEnv, Sample, Score, Task, TaskDef, Trace

K = 5


def _retrieval_dir(env: EvalEnv) -> Any:
    return env.settings.cache_dir / "images" / "retrieval"


async def dataset(env: EvalEnv) -> list[Sample]:
    from wardround.evals.tasks.image_retrieval_set import build_retrieval_set

    rs = await asyncio.to_thread(build_retrieval_set, _retrieval_dir(env))
    samples = [
        Sample(
            id=f"images-{q.query_id}",
            input=q.path,
            category=f"image-{q.transform}",
            target={"relevant": [q.target_id]},
            metadata={"kind": "image", "target": q.target_key},
        )
        for q in rs.queries
    ]
    samples += [
        Sample(
            id=f"images-text-{i:02d}",
            input=q.text,
            category="text",
            target={"relevant": list(q.relevant_ids)},
            metadata={"kind": "text", "targets": list(q.relevant_keys)},
        )
        for i, q in enumerate(rs.text_queries)
    ]
    return samples


def recall_at(ranked: list[str], relevant: list[str], k: int) -> float:
    if not relevant:
        return 0.0
    top = set(ranked[:k])
    return sum(r in top for r in relevant) / len(relevant)


def score_ranking(sample: Sample, ranked: list[str], k: int = K) -> Score:
    relevant = list(sample.target["relevant"])
    recall = recall_at(ranked, relevant, k)
    ranks = [ranked.index(r) + 1 for r in relevant if r in ranked]
    score = Score.of(
        recall == 1.0, f"recall@{k} {recall:.2f}", k=k, first_rank=min(ranks) if ranks else None
    )
    score.value = recall
    return score


def bind(env: EvalEnv, samples: list[Sample]) -> Task:
    from wardround.tools.images.encoders import DEFAULT_ENCODER
    from wardround.tools.images.ingest import ingest_builtin
    from wardround.tools.images.search import open_image_index, search_images

    k = int(env.option("k", str(K)))
    encoder = env.option("encoder", DEFAULT_ENCODER)
    chroma_dir = env.settings.cache_dir / "images" / f"eval-index-{encoder}"
    lock = asyncio.Lock()
    state: dict[str, Any] = {}

    async def index() -> Any:
        async with lock:
            if "index" not in state:
                built = await asyncio.to_thread(open_image_index, chroma_dir, encoder)
                await asyncio.to_thread(ingest_builtin, built)
                state["index"] = built
        return state["index"]

    async def solve(sample: Sample) -> Trace:
        idx = await index()
        query: dict[str, Any] = (
            {"image": sample.input}
            if sample.metadata["kind"] == "image"
            else {"text": sample.input}
        )
        async with lock:  # the encoder and the Chroma client are used from one thread at a time
            hits = await asyncio.to_thread(search_images, idx, k=max(k, 10), **query)
        ids = [h.id for h in hits]
        return Trace(
            answer=" ".join(ids[:k]),
            citations=[h.ref for h in hits[:k]],
            artifacts={"ranked": ids, "scores": [round(h.score, 4) for h in hits]},
        )

    async def score(sample: Sample, trace: Trace) -> Score:
        return score_ranking(sample, list(trace.artifacts.get("ranked", [])), k)

    return Task(
        name="images",
        samples=samples,
        solver=solve,
        scorer=score,
        scoring=f"recall@{k} (correct when every relevant image is in the top {k}); "
        f"encoder {encoder}; no chat model involved",
        info={"k": k, "encoder": encoder},
    )


TASK = TaskDef(
    name="images",
    description="image retrieval recall@k on the PyPI medical images (model-independent)",
    dataset=dataset,
    bind=bind,
    needs_model=False,
)
