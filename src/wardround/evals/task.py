"""What an evaluation is made of: a dataset of samples, a solver that runs one, a scorer.

A task is data plus two functions, so any graph can be plugged in as a solver: the
runner never knows which graph or model produced a trace, only how to store and score it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from wardround.settings import Settings


class Sample(BaseModel):
    """One question or case. `target` is whatever the scorer needs (JSON-serialisable)."""

    id: str
    input: str
    target: Any = None
    category: str = "all"
    metadata: dict[str, Any] = Field(default_factory=dict)


class Trace(BaseModel):
    """What a solver did for one sample: its answer and everything needed to audit it."""

    answer: str = ""
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    tokens: dict[str, int] = Field(default_factory=lambda: {"prompt": 0, "completion": 0})
    latency_s: float = 0.0
    steps: int = 0
    citations: list[str] = Field(default_factory=list)
    # References of every record the solver read (scored against the sample's evidence).
    retrieved: list[str] = Field(default_factory=list)
    # Task-specific evidence the scorer reads (e.g. the orders an agent tried to write).
    artifacts: dict[str, Any] = Field(default_factory=dict)


class Score(BaseModel):
    """The verdict on one trace: `correct` drives accuracy, `value` allows partial credit."""

    correct: bool
    value: float = 0.0
    explanation: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, correct: bool, explanation: str = "", **metadata: Any) -> Score:
        return cls(
            correct=correct,
            value=1.0 if correct else 0.0,
            explanation=explanation,
            metadata=metadata,
        )


Solver = Callable[[Sample], Awaitable[Trace]]

# The trace the runner keeps for the sample being solved. A long solver may fill it as it
# goes, so a sample stopped by a timeout or an error still shows how far it got.
LIVE_TRACE: ContextVar[Trace | None] = ContextVar("wardround_live_trace", default=None)
Scorer = Callable[[Sample, Trace], Awaitable[Score]]


@dataclass
class EvalEnv:
    """What a task may use to build its dataset and solver; opened and closed by the caller."""

    settings: Settings
    model: Any = None  # BaseChatModel under test; None when only the dataset is needed
    fhir: Any = None  # an open FhirClient, for tasks over records
    options: dict[str, str] = field(default_factory=dict)
    # Other models a task may use by role (e.g. "judge", "actor"), built by the caller.
    roles: dict[str, Any] = field(default_factory=dict)

    def option(self, key: str, default: str) -> str:
        return self.options.get(key, default)


@dataclass
class Task:
    """A dataset bound to a solver and a scorer, ready for the runner."""

    name: str
    samples: list[Sample]
    solver: Solver
    scorer: Scorer
    # How answers are judged, in words, for the report (e.g. which moderator was used).
    scoring: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskDef:
    """A task by name: how to build its samples and how to bind its solver and scorer."""

    name: str
    description: str
    dataset: Callable[[EvalEnv], Awaitable[list[Sample]]]
    bind: Callable[[EvalEnv, list[Sample]], Task]
    needs_fhir: bool = False
    needs_model: bool = True
