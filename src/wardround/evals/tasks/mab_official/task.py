"""The official mode as a task: the original samples, a solver per protocol, and a scorer
that computes each reference from the server before grading."""

from __future__ import annotations

from typing import Any

from wardround.evals.data import load_json
from wardround.evals.task import EvalEnv, Sample, Score, Scorer, Task, Trace
from wardround.evals.tasks import medagentbench
from wardround.evals.tasks.mab_official.dataset import FUNCS_FILE, dataset
from wardround.evals.tasks.mab_official.references import reference
from wardround.evals.tasks.mab_official.text_protocol import (
    MAX_ROUNDS,
    prompt_for,
    run_text_protocol,
)

__all__ = ["bind", "dataset"]
PROTOCOLS = ("original", "tools")


def api_base(env: EvalEnv) -> str:
    """The base URL the prompt names (the original's ends with a slash)."""
    return env.fhir.base_url.rstrip("/") + "/"


def _urls_match(trace: Trace) -> list[str]:
    """The original requires each POST to go to its resource type's URL."""
    wrong = []
    for post in trace.artifacts.get("posts") or []:
        url = str(post.get("url", ""))
        kind = str((post.get("body") or {}).get("resourceType", ""))
        if url and not url.rstrip("/").endswith(f"/{kind}"):
            wrong.append(f"POST to {url} for a {kind or 'resource'}")
    return wrong


def scorer(env: EvalEnv) -> Scorer:
    async def score(sample: Sample, trace: Trace) -> Score:
        target = await reference(env.fhir, sample)
        graded = sample.model_copy(update={"target": {**sample.target, **target}})
        result = await medagentbench.score(graded, trace)
        wrong = _urls_match(trace)
        if wrong and result.correct:
            result = result.model_copy(
                update={"correct": False, "value": 0.0, "explanation": "; ".join(wrong)}
            )
        result.metadata["reference"] = target
        return result

    return score


def bind(env: EvalEnv, samples: list[Sample]) -> Task:
    protocol = env.option("protocol", "original")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    max_steps = int(env.option("max_steps", str(MAX_ROUNDS)))
    funcs: list[dict[str, Any]] = load_json(FUNCS_FILE, env.settings)

    async def solve_text(sample: Sample) -> Trace:
        prompt = prompt_for(
            api_base=api_base(env),
            functions=funcs,
            context=sample.metadata["context"],
            question=sample.input,
        )
        return await run_text_protocol(env.model, prompt, env.fhir, max_rounds=max_steps)

    solver = solve_text if protocol == "original" else medagentbench.tool_solver(env, max_steps)
    return Task(
        name="medagentbench",
        samples=samples,
        solver=solver,
        scorer=scorer(env),
        scoring="the original tasks, each reference computed from the FHIR server at grading "
        "time; MedAgentBench's per-category graders, numbers within tolerance, order times to "
        "the day",
        info={"mode": "official", "protocol": protocol, "max_steps": max_steps},
    )
