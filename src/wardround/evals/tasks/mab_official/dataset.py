"""The 300 original tasks as samples: instruction, context and MRN exactly as the file has them."""

from __future__ import annotations

from typing import Any

from wardround.evals.data import load_json
from wardround.evals.task import EvalEnv, Sample

TASK_FILE = "medagentbench/test_data_v2.json"
FUNCS_FILE = "medagentbench/funcs_v1.json"
# The fixed "now" of every original task's context.
ORIGINAL_NOW = "2023-11-13T10:15:00+00:00"


def category_of(task_id: str) -> str:
    return task_id.split("_")[0]


def official_samples(items: list[dict[str, Any]], per_category: int | None = None) -> list[Sample]:
    """One sample per task, in file order; `per_category` keeps the first N of each."""
    taken: dict[str, int] = {}
    samples: list[Sample] = []
    for item in items:
        category = category_of(item["id"])
        taken[category] = taken.get(category, 0) + 1
        if per_category is not None and taken[category] > per_category:
            continue
        target = {"mrn": item.get("eval_MRN"), "now": ORIGINAL_NOW, "sol": item.get("sol")}
        samples.append(
            Sample(
                id=item["id"],
                input=item["instruction"].strip(),
                category=category,
                target=target,
                metadata={
                    "context": item["context"].strip(),
                    "now": ORIGINAL_NOW,
                    "template": item["id"],
                    "mode": "official",
                },
            )
        )
    return samples


async def dataset(env: EvalEnv) -> list[Sample]:
    per_category = env.options.get("per_category")
    items = load_json(TASK_FILE, env.settings)
    return official_samples(items, int(per_category) if per_category else None)
