"""`wardround eval export`: a run's traces as OpenAI fine-tuning JSONL and Hugging Face
messages, checked with each format's own library (openai's types, a transformers tokenizer's
`apply_chat_template`) and the fine-tuning format's documented rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from typer.testing import CliRunner

from eval_fixtures import BENCHMARK_DATA, EvalFhir
from fakes import ScriptedChatModel
from wardround.cli.eval import app
from wardround.evals import export
from wardround.evals.results import ResultsLog, SampleRecord
from wardround.evals.suite import Layout
from wardround.evals.task import EvalEnv, Trace
from wardround.evals.tasks import medagentbench as mab
from wardround.settings import Settings
from wardround.testing.sample_charts import ANN_MRN

pytestmark = pytest.mark.asyncio(loop_scope="session")
PRESET = "scripted"


async def solved_records(eval_fhir: EvalFhir) -> list[SampleRecord]:
    """Three finished samples: a right tool-protocol trace, a wrong one, and a text-protocol
    trace (plain turns, no tools)."""
    env = EvalEnv(
        settings=Settings(benchmark_data_dir=BENCHMARK_DATA),
        fhir=eval_fhir.client,
        options={"choice": "one_call"},
    )
    samples = [s for s in await mab.dataset(env) if s.category == "task4" and s.target["evidence"]]
    sample = samples[0]
    read = {"action": "get_lab_observations", "args": {"patient": ANN_MRN, "code": "19123-9"}}
    records = []
    for answer in (sample.target["value"], 99):
        env.model = ScriptedChatModel(
            replies=[
                json.dumps(read),
                json.dumps({"action": "final_answer", "answer": f"FINISH([{answer}])"}),
            ]
        )
        task = mab.bind(env, [sample])
        trace = await task.solver(sample)
        score = await task.scorer(sample, trace)
        named = sample.model_copy(update={"id": f"{sample.id}-{answer}"})
        records.append(SampleRecord.scored(named, "medagentbench", PRESET, trace, score))
    text = Trace(
        answer="FINISH([54])",
        messages=[
            {"role": "human", "content": "What's the age of the patient with MRN of S1?"},
            {"role": "ai", "content": "GET http://h/fhir/Patient?identifier=S1"},
            {"role": "human", "content": "The GET request returned: {}"},
            {"role": "ai", "content": "FINISH([54])"},
        ],
    )
    records.append(
        SampleRecord.of(
            sample.model_copy(update={"id": "text"}), "medagentbench", PRESET, text, correct=True
        )
    )
    return records


# ---------------------------------------------------------------- OpenAI's fine-tuning format


def _validate(kind, value) -> None:
    """openai's TypedDict: the value validates, and holds no key the type does not name."""
    TypeAdapter(kind).validate_python(value)
    assert set(value) <= kind.__required_keys__ | kind.__optional_keys__, (set(value), kind)


def _kinds() -> dict[str, type]:
    from openai.types.chat import (
        ChatCompletionAssistantMessageParam,
        ChatCompletionSystemMessageParam,
        ChatCompletionToolMessageParam,
        ChatCompletionUserMessageParam,
    )

    kinds = {
        "system": ChatCompletionSystemMessageParam,
        "user": ChatCompletionUserMessageParam,
        "assistant": ChatCompletionAssistantMessageParam,
        "tool": ChatCompletionToolMessageParam,
    }
    return kinds


def check_openai_line(line: dict) -> None:
    """The fine-tuning format's documented rules for chat examples with tools: the roles
    system/user/assistant/tool, at least one assistant turn, calls of type "function" with an
    id and arguments as a JSON string holding an object, every tool message answering an
    earlier call, every called function among `tools`; each message an openai message type."""
    from openai.types.chat import ChatCompletionFunctionToolParam

    assert set(line) <= {"messages", "tools", "parallel_tool_calls"}
    tools = line["tools"]
    for tool in tools:
        _validate(ChatCompletionFunctionToolParam, tool)
    names = {t["function"]["name"] for t in tools}
    assert all(
        t["type"] == "function" and isinstance(t["function"].get("parameters", {}), dict)
        for t in tools
    )
    kinds, calls = _kinds(), set()
    assert any(m["role"] == "assistant" for m in line["messages"])
    assert line["messages"][-1]["role"] == "assistant"
    for message in line["messages"]:
        _validate(kinds[message["role"]], message)
        for call in message.get("tool_calls", []):
            assert call["type"] == "function" and call["id"] and call["function"]["name"] in names
            assert isinstance(json.loads(call["function"]["arguments"]), dict)
            calls.add(call["id"])
        if message["role"] == "tool":
            assert message["tool_call_id"] in calls and isinstance(message["content"], str)


async def test_openai_lines_follow_the_fine_tuning_format(eval_fhir: EvalFhir, tmp_path: Path):
    records = await solved_records(eval_fhir)
    assert [r.correct for r in records] == [True, False, True]
    out = tmp_path / "train.jsonl"
    assert export.export_records(records, out, "openai") == 2  # the wrong trace stays out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for line in lines:
        check_openai_line(line)
    tool_line, text_line = lines
    roles = [m["role"] for m in tool_line["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call = tool_line["messages"][1]["tool_calls"][0]
    assert call["function"]["name"] == "get_lab_observations"
    assert json.loads(call["function"]["arguments"]) == {"patient": ANN_MRN, "code": "19123-9"}
    assert tool_line["messages"][2]["tool_call_id"] == call["id"]
    assert isinstance(json.loads(tool_line["messages"][-1]["content"]), list)  # FINISH's list
    offered = {t["function"]["name"] for t in tool_line["tools"]}  # a lookup: no write tools
    assert "get_lab_observations" in offered and not any(n.startswith("post_") for n in offered)
    assert text_line["tools"] == [] and [m["role"] for m in text_line["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert export.export_records(records, out, "openai", include_all=True) == 3


async def test_a_trace_cut_short_ends_on_its_last_assistant_turn():
    stored = [
        {"role": "human", "content": "q"},
        {
            "role": "ai",
            "content": "",
            "tool_calls": [{"name": "get_patients", "args": {"name": "Ann"}, "id": None}],
        },
        {"role": "tool", "content": "1 Patient", "name": "get_patients"},
    ]
    messages = export.chat_messages(stored, "openai")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["tool_calls"][0]["id"]  # an id is made where the trace had none
    record = SampleRecord(
        id="x", task="t", model="m", category="c", input="q", trace=Trace(messages=stored[:1])
    )
    assert export.example(record, "openai") is None  # nothing the model said: no example
    # tools come from the names called when the trace did not keep the offered ones
    called = Trace(messages=stored, tool_calls=[{"name": "get_patients", "args": {}}])
    record = record.model_copy(update={"trace": called})
    assert [t["function"]["name"] for t in export.tools_of(record)] == ["get_patients"]


# ---------------------------------------------------------------- Hugging Face messages


def tokenizer():
    """A word-level tokenizer built here (nothing downloaded) with the chat template we ship
    for Gemma 3 / MedGemma tool calls."""
    from importlib.resources import files

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        models.WordLevel(vocab={"<unk>": 0, "<bos>": 1, "<eos>": 2}, unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    template = files("wardround.agents").joinpath("templates/gemma3_pythonic.jinja").read_text()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        chat_template=template,
    )


async def test_hf_lines_render_with_apply_chat_template(eval_fhir: EvalFhir, tmp_path: Path):
    records = await solved_records(eval_fhir)
    out = tmp_path / "train-hf.jsonl"
    assert export.export_records(records, out, "hf", include_all=True) == 3
    tok = tokenizer()
    rendered = []
    for line in map(json.loads, out.read_text().splitlines()):
        text = tok.apply_chat_template(
            line["messages"], tools=line["tools"] or None, tokenize=False
        )
        ids = tok.apply_chat_template(line["messages"], tools=line["tools"] or None, tokenize=True)
        assert isinstance(text, str) and len(ids) > 0
        rendered.append(text)
    first = rendered[0]
    assert (
        f'[get_lab_observations(patient="{ANN_MRN}", code="19123-9")]' in first
    )  # arguments as an object
    assert (
        "Function result of get_lab_observations:" in first
        and '"name": "get_lab_observations"' in first
    )
    assert "GET http://h/fhir/Patient?identifier=S1" in rendered[2]


# ---------------------------------------------------------------- the command


async def test_the_export_command_writes_a_runs_traces(eval_fhir: EvalFhir, tmp_path: Path, home):
    records = await solved_records(eval_fhir)
    layout = Layout(tmp_path / "runs", "medagentbench", {})
    log = ResultsLog(layout.results(PRESET))
    log.open()
    for record in records:
        await log.append(record)
    log.close()
    runner = CliRunner()
    done = runner.invoke(
        app, ["export", "medagentbench", "-m", PRESET, "--out", str(tmp_path / "runs"), "-f", "hf"]
    )
    assert done.exit_code == 0, done.output
    written = layout.run_dir(PRESET) / "export-hf.jsonl"
    assert "2 correct traces of 3" in done.output and len(written.read_text().splitlines()) == 2
    to = tmp_path / "all.jsonl"
    args = [
        "export",
        "medagentbench",
        "-m",
        PRESET,
        "--out",
        str(tmp_path / "runs"),
        "--all",
        "--to",
        str(to),
    ]
    assert runner.invoke(app, args).exit_code == 0 and len(to.read_text().splitlines()) == 3
    missing = runner.invoke(
        app, ["export", "medagentbench", "-m", "nobody", "--out", str(tmp_path / "runs")]
    )
    assert missing.exit_code != 0 and "no run of nobody" in missing.output
    bad = runner.invoke(app, ["export", "medagentbench", "-m", PRESET, "-f", "csv"])
    assert bad.exit_code != 0
