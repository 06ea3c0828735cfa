"""The recipes of docs/architecture.md, each done once: a task, a preset and a tool are each a
change in one place, and everything downstream (the suite, the CLI, the model factory, every
agent's tool list) picks them up."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool, StructuredTool

from fakes import ScriptedChatModel
from wardround.agents import presets
from wardround.agents.models import make_chat_model
from wardround.agents.presets import ModelPreset
from wardround.evals import suite, tasks
from wardround.evals.task import EvalEnv, Sample, Score, Task, TaskDef, Trace
from wardround.graphs.copilot.toolset import CopilotTools
from wardround.graphs.ehr_qa.free_loop import read_tools
from wardround.settings import Settings
from wardround.tools import registry

# ------------------------------------------------------------------ a task: one module + its name


async def _dataset(env: EvalEnv) -> list[Sample]:
    return [Sample(id=f"echo-{i}", input=f"say {i}", target=str(i)) for i in range(3)]


def _bind(env: EvalEnv, samples: list[Sample]) -> Task:
    async def solve(sample: Sample) -> Trace:
        reply = await env.model.ainvoke([HumanMessage(sample.input)])
        return Trace(answer=str(reply.content))

    async def score(sample: Sample, trace: Trace) -> Score:
        return Score.of(trace.answer.strip() == sample.target)

    return Task(name="echo", samples=samples, solver=solve, scorer=score)


@pytest.fixture
def echo_task(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("wardround.evals.tasks.echo")
    module.TASK = TaskDef(name="echo", description="says the number", dataset=_dataset, bind=_bind)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(tasks, "NAMES", (*tasks.NAMES, "echo"))
    monkeypatch.setattr(suite, "NAMES", tasks.NAMES)
    yield


@pytest.mark.asyncio(loop_scope="module")
async def test_a_task_is_a_module_and_a_name(echo_task: None, tmp_path: Path) -> None:
    taskdef = suite.get_task("echo")
    model = ScriptedChatModel(respond=lambda messages: str(messages[-1].content).split()[-1])
    settings = Settings(home=tmp_path)
    async with suite.eval_env(
        taskdef, settings, preset="scripted", make_model=lambda *_: model
    ) as env:
        _, summary = await suite.run_eval(
            taskdef, env, preset="scripted", root=tmp_path / "runs", progress=False
        )
    assert summary["accuracy"] == 1.0 and summary["n"] == 3


# ------------------------------------------------------------------ a preset: one entry


def test_a_preset_is_one_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    preset = ModelPreset(name="my-medgemma", model_id="org/my-medgemma", backend="openai")
    monkeypatch.setitem(presets.PRESETS, preset.name, preset)
    settings = Settings(home=tmp_path, model="my-medgemma", model_base_url="http://127.0.0.1:9/v1")
    model = make_chat_model(settings)
    assert model.model_name == "org/my-medgemma"  # type: ignore[attr-defined]
    assert model.metadata and model.metadata["protocol"] == "json"


# ------------------------------------------------------------------ a tool: one register() call


def _bmi_tools(fhir: object, patient_id: str, settings: Settings | None) -> list[BaseTool]:
    def bmi(weight_kg: float, height_m: float) -> str:
        """Body mass index from weight and height."""
        return f"{weight_kg / height_m**2:.1f} kg/m2"

    return [StructuredTool.from_function(bmi, name="bmi")]


def test_a_tool_is_one_register_call() -> None:
    registry.register("bmi", _bmi_tools, per_patient=True)
    try:
        fhir = object()  # never called: the lists are built, not run
        assert "bmi" in {t.name for t in read_tools(fhir, "p1")}  # type: ignore[arg-type]
        assert "bmi" in CopilotTools(fhir).by_name("p1")  # type: ignore[arg-type]
        assert "bmi" in {t.name for t in registry.tool_specs()}
    finally:
        registry._builders.pop("bmi")
