"""Which embedded model picks the right tool? Tool selection under the json protocol.

For each embedded preset, every prompt (a clinician's question) goes through
`json_tool_caller` with the server's schema-constrained decoding, over the same tool list
the EHR agent sees. Scored per prompt: a valid reply (a tool call or final answer, no
`ModelOutputError`), the right tool, the right tool with its key argument. Also recorded:
latency, tokens, and how often the protocol needed its repair turn (model calls counted by
a callback). A second section measures the embedded server's raw throughput (prompt and
generation tokens/s). Tools are never executed: only the model's choice is scored.

    .venv/bin/python -m bench.tool_selection [--presets smollm2-135m,gemma3-270m] [--repeat 1]

Writes bench/out/tool_selection.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.outputs import LLMResult
from langchain_core.tools import BaseTool
from pydantic import Field, create_model
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from wardround.agents.embedded import ensure_model_server, gguf_path
from wardround.agents.models import make_chat_model
from wardround.agents.presets import get_preset
from wardround.agents.protocol import (
    ModelOutputError,
    clean_reply,
    describe_tools,
    json_tool_caller,
    model_dialect,
    structured,
    tool_args_model,
)
from wardround.runtime.procs import running, stop_service
from wardround.settings import Settings
from wardround.tools.registry import SPEC_PATIENT, tool_specs

HOME = Path("/tmp/wr_toolsel_home")
OUT = Path(__file__).resolve().parent / "out" / "tool_selection.json"
PRESETS = ("smollm2-135m", "gemma3-270m")
PATIENT = SPEC_PATIENT
SYSTEM = (
    f"You are a clinical assistant working on the chart of Patient/{PATIENT}, the patient "
    "in context. Today is 2026-11-20. Pick the one tool that answers the clinician's request."
)

# ------------------------------------------------------------------ the tool list
# The agents' own tools from the registry, bound to one patient as the agent binds them
# (built over no backend: only the model's choice is measured, nothing is run).


def bench_tools() -> list[BaseTool]:
    return tool_specs()


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def real_tools_grammar(model_file: Path) -> dict[str, str]:
    """Whether llama.cpp's grammar parser accepts each real FHIR tool's argument schema
    ("ok" or its error): a rejected grammar crashes the embedded server mid-request."""
    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    llm = llama_cpp.Llama(model_path=str(model_file), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    verdicts = {}
    for tool in bench_tools():
        gbnf = json_schema_to_gbnf(json.dumps(tool_args_model(tool).model_json_schema()))
        with _native_stderr_silenced():  # the parser prints the whole grammar on failure
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
            verdicts[tool.name] = "ok"
        else:
            escapes = sorted(
                set(re.findall(r"\\[a-zA-Z]", gbnf)) - {"\\t", "\\n", "\\r", "\\u", "\\x", "\\U"}
            )
            verdicts[tool.name] = "rejected" + (
                f" (unsupported escape {', '.join(escapes)})" if escapes else ""
            )
    return verdicts


# ------------------------------------------------------------------- the prompts


def has(key: str, *words: str) -> Callable[[dict[str, Any]], bool]:
    """The argument `key` contains one of `words` (case-insensitive)."""

    def check(args: dict[str, Any]) -> bool:
        value = str(args.get(key) or "").lower()
        return any(w.lower() in value for w in words)

    return check


def equals(key: str, *values: Any) -> Callable[[dict[str, Any]], bool]:
    def check(args: dict[str, Any]) -> bool:
        value = args.get(key)
        if isinstance(value, str):
            return value.strip().lower() in {str(v).lower() for v in values}
        return value in values

    return check


def either(*checks: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda args: any(c(args) for c in checks)


def anything(_: dict[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class Case:
    question: str
    tool: str
    check: Callable[[dict[str, Any]], bool]
    key: str  # what the check looks at, for the report


CASES: list[Case] = [
    # find_patient
    Case("Find the patient named Maria Lopez born 1961-03-02.", "find_patient",
         has("name", "lopez"), "name ~ lopez"),
    Case("Look up the patient with MRN 884213.", "find_patient",
         has("identifier", "884213"), "identifier ~ 884213"),
    Case("Which patient record belongs to Rubin McDermott?", "find_patient",
         has("name", "mcdermott"), "name ~ mcdermott"),
    # patient_manifest
    Case("What kinds of records does this patient's chart contain?", "patient_manifest",
         anything, "-"),
    Case("Give me an overview of the data in this chart: record types, codes and date ranges.",
         "patient_manifest", anything, "-"),
    # search_records
    Case("What was her last potassium?", "search_records",
         equals("resource_type", "Observation"), "resource_type=Observation"),
    Case("Show his hemoglobin A1c results since 2020.", "search_records",
         equals("resource_type", "Observation"), "resource_type=Observation"),
    Case("What was the most recent blood pressure reading?", "search_records",
         equals("resource_type", "Observation"), "resource_type=Observation"),
    Case("Which medications has the patient been prescribed?", "search_records",
         equals("resource_type", "MedicationRequest", "MedicationStatement"),
         "resource_type=Medication*"),
    Case("Does she have any drug allergies?", "search_records",
         equals("resource_type", "AllergyIntolerance"), "resource_type=AllergyIntolerance"),
    Case("List the patient's active problems and diagnoses.", "search_records",
         equals("resource_type", "Condition"), "resource_type=Condition"),
    Case("Which vaccines has he received?", "search_records",
         equals("resource_type", "Immunization"), "resource_type=Immunization"),
    Case("What procedures were done on the patient in 2019?", "search_records",
         equals("resource_type", "Procedure"), "resource_type=Procedure"),
    Case("When was the patient's most recent hospital encounter?", "search_records",
         equals("resource_type", "Encounter"), "resource_type=Encounter"),
    Case("Find the clinical notes and discharge summaries in the chart.", "search_records",
         equals("resource_type", "DocumentReference"), "resource_type=DocumentReference"),
    # read_record
    Case("Open Observation/obs-k-1 and show me the full record.", "read_record",
         equals("reference", "Observation/obs-k-1"), "reference=Observation/obs-k-1"),
    Case("Read DiagnosticReport/cbc-2023 with its results.", "read_record",
         equals("reference", "DiagnosticReport/cbc-2023"), "reference=DiagnosticReport/cbc-2023"),
    # lookup_guideline
    Case("What does the guideline say about potassium repletion?", "lookup_guideline",
         has("query", "potassium"), "query ~ potassium"),
    Case("According to clinical guidelines, what is the HbA1c target for an adult with type 2 "
         "diabetes?", "lookup_guideline", has("query", "a1c", "diabet"), "query ~ a1c|diabet"),
    Case("What do the hypertension guidelines recommend as first-line treatment?",
         "lookup_guideline", has("query", "hypertension"), "query ~ hypertension"),
    # search_images
    Case("Show chest X-rays similar to a right lower lobe pneumonia.", "search_images",
         either(equals("modality", "CR", "DX"), has("text", "chest")), "modality CR|DX or text ~ chest"),
    Case("Find CT images of the head.", "search_images",
         either(equals("modality", "CT"), has("text", "head")), "modality CT or text ~ head"),
    Case("Find ultrasound images of the abdomen.", "search_images",
         either(equals("modality", "US"), has("text", "ultrasound", "abdom")),
         "modality US or text ~ ultrasound|abdom"),
    # create_medication_request
    Case("Order 40 mmol oral potassium chloride now.", "create_medication_request",
         has("display", "potassium"), "display ~ potassium"),
    Case("Start metformin 500 mg by mouth twice daily.", "create_medication_request",
         has("display", "metformin"), "display ~ metformin"),
    # create_service_request
    Case("Order an urgent chest X-ray.", "create_service_request",
         has("display", "chest", "x-ray", "xray", "radiograph"), "display ~ chest|x-ray"),
    Case("Refer the patient to cardiology.", "create_service_request",
         has("display", "cardio"), "display ~ cardio"),
    # create_observation
    Case("Record a heart rate of 88 beats per minute.", "create_observation",
         equals("value", 88, 88.0), "value=88"),
    Case("Document the patient's weight today: 72.5 kg.", "create_observation",
         equals("value", 72.5), "value=72.5"),
]  # fmt: skip


# -------------------------------------------------------------- measuring calls


class CallCounter(BaseCallbackHandler):
    """Counts model calls and their tokens, so repair turns and failed replies are seen too."""

    run_inline = True

    def __init__(self) -> None:
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def on_chat_model_start(self, *_: Any, **__: Any) -> None:
        self.calls += 1

    def on_llm_end(self, response: LLMResult, **_: Any) -> None:
        for generations in response.generations:
            for gen in generations:
                usage = getattr(getattr(gen, "message", None), "usage_metadata", None) or {}
                self.input_tokens += int(usage.get("input_tokens", 0))
                self.output_tokens += int(usage.get("output_tokens", 0))


def parses_leniently(raw: str, tools: dict[str, BaseTool]) -> bool:
    """Would the reply pass if raw control characters inside strings were allowed?

    llama-cpp-python's JSON grammar admits a raw newline inside a string; `json.loads`
    rejects it, so a grammar-valid reply can still fail the protocol's parse."""
    try:
        obj = json.loads(clean_reply(raw), strict=False)
        if obj.get("action") == "final_answer":
            return isinstance(obj.get("answer"), str)
        tool_args_model(tools[obj["action"]]).model_validate(obj.get("args") or {})
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


async def run_case(caller: Any, case: Case, tools: dict[str, BaseTool]) -> dict[str, Any]:
    counter = CallCounter()
    messages = [SystemMessage(content=SYSTEM), HumanMessage(content=case.question)]
    row: dict[str, Any] = {"question": case.question, "expected": case.tool, "key": case.key}
    start = time.perf_counter()
    try:
        reply = await caller.ainvoke(messages, config={"callbacks": [counter]})
    except ModelOutputError as err:
        reply, row["error"], row["raw"] = None, err.error, err.raw
        row["lenient_parse_ok"] = parses_leniently(err.raw, tools)
    except Exception as err:  # a server failure is an invalid reply too, recorded by type
        reply, row["error"] = None, f"{type(err).__name__}: {err}"
    row["latency_s"] = time.perf_counter() - start
    row.update(
        model_calls=counter.calls,
        input_tokens=counter.input_tokens,
        output_tokens=counter.output_tokens,
        valid=reply is not None,
    )
    call = reply.tool_calls[0] if reply is not None and reply.tool_calls else None
    row["tool"] = call["name"] if call else ("final_answer" if reply is not None else None)
    row["args"] = call["args"] if call else None
    if reply is not None and call is None:
        row["answer"] = str(reply.content)
    if reply is not None:
        row["raw"] = reply.response_metadata.get("raw")
    row["correct_tool"] = row["tool"] == case.tool
    row["correct_arg"] = bool(row["correct_tool"] and call and case.check(call["args"]))
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)

    def share(key: str) -> float:
        return 100.0 * sum(bool(r[key]) for r in rows) / n

    repaired = sum(r["model_calls"] > 1 for r in rows)
    return {
        "n": n,
        "valid_pct": share("valid"),
        "correct_tool_pct": share("correct_tool"),
        "correct_tool_arg_pct": share("correct_arg"),
        "repair_pct": 100.0 * repaired / n,
        # valid if the parse allowed raw control characters in strings (see parses_leniently)
        "lenient_valid_pct": 100.0
        * sum(r["valid"] or r.get("lenient_parse_ok", False) for r in rows)
        / n,
        "mean_latency_s": statistics.fmean(r["latency_s"] for r in rows),
        "mean_input_tokens": statistics.fmean(r["input_tokens"] for r in rows),
        "mean_output_tokens": statistics.fmean(r["output_tokens"] for r in rows),
        "per_tool_correct_arg": {
            tool: f"{sum(r['correct_arg'] for r in rows if r['expected'] == tool)}"
            f"/{sum(r['expected'] == tool for r in rows)}"
            for tool in dict.fromkeys(r["expected"] for r in rows)
        },
    }


# ------------------------------------------------------- tool choice on its own
# The agent's own remedy for small models is to narrow each decision (design notes): here the
# model only names the tool, from an enum, and nothing else. Same prompts, same tools.


async def choice_only(model: Any, tools: list[BaseTool], repeat: int) -> dict[str, Any]:
    names = tuple(tool.name for tool in tools)
    choice = create_model(
        "ToolChoice",
        tool=(Literal[names], Field(description="The one tool to use")),  # type: ignore[valid-type]
    )
    decide = structured(model, choice, model_dialect(model))
    system = (
        f"{SYSTEM}\n\nTools:\n{describe_tools(tools)}\n\n"
        'Reply with one JSON object {"tool": NAME}, NAME being the one tool above to use.'
    )
    rows = []
    for _ in range(repeat):
        for case in CASES:
            start = time.perf_counter()
            try:
                picked = (await decide.ainvoke([SystemMessage(content=system),
                                                HumanMessage(content=case.question)])).tool  # fmt: skip
            except Exception as err:  # invalid after repair, or a server error
                picked = f"error: {type(err).__name__}"
            rows.append({"question": case.question, "expected": case.tool, "tool": picked,
                         "latency_s": time.perf_counter() - start})  # fmt: skip
    n = len(rows)
    return {
        "n": n,
        "valid_pct": 100.0 * sum(not r["tool"].startswith("error") for r in rows) / n,
        "correct_tool_pct": 100.0 * sum(r["tool"] == r["expected"] for r in rows) / n,
        "mean_latency_s": statistics.fmean(r["latency_s"] for r in rows),
        "picked": dict(Counter(r["tool"] for r in rows).most_common()),
        "rows": rows,
    }


# ------------------------------------------------------------------ throughput

_FILLER = (
    "The patient is a 67-year-old woman with type 2 diabetes, hypertension and chronic "
    "kidney disease stage 3, admitted with weakness; potassium was 3.1 mmol/L, creatinine "
    "1.4 mg/dL, hemoglobin A1c 7.9 percent, blood pressure 148/86 mmHg. "
)


def measure_throughput(base_url: str, model: str, repeat: int = 5) -> dict[str, Any]:
    """Prompt tok/s from a ~1000-token prompt with max_tokens=1 (a fresh prefix each time,
    so llama.cpp's prefix reuse cannot help); generation tok/s from a 128-token completion,
    its short prompt's share of the time subtracted at the measured prompt speed (runs that
    stop early, under 64 tokens, are retried). The median of `repeat` runs is reported, the
    best and every run are kept in the JSON."""
    url = base_url.rstrip("/") + "/completions"
    prompt_speeds, gen_speeds, gen_tokens, prompt_len = [], [], [], 0
    with httpx.Client(timeout=300) as http:

        def complete(prompt: str, max_tokens: int) -> tuple[dict[str, Any], float]:
            start = time.perf_counter()
            resp = http.post(
                url,
                json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                      "temperature": 0.8, "seed": 7},
            )  # fmt: skip
            resp.raise_for_status()
            return resp.json()["usage"], time.perf_counter() - start

        complete("warm up", 4)
        for _ in range(repeat):
            nonce = uuid.uuid4().hex
            usage, wall = complete(f"Case {nonce}. " + _FILLER * 13, 1)
            prompt_len = usage["prompt_tokens"]
            prompt_speeds.append(prompt_len / wall)
        prompt_rate = statistics.median(prompt_speeds)
        for _ in range(3 * repeat):
            if len(gen_speeds) == repeat:
                break
            story = f"Note {uuid.uuid4().hex[:8]}. History of present illness: the patient"
            usage, wall = complete(story, 128)
            if usage["completion_tokens"] < 64:
                continue
            gen_wall = wall - usage["prompt_tokens"] / prompt_rate
            gen_tokens.append(usage["completion_tokens"])
            gen_speeds.append(usage["completion_tokens"] / gen_wall)
    return {
        "prompt_test_tokens": prompt_len,
        "prompt_tok_s": prompt_rate,
        "generation_tok_s": statistics.median(gen_speeds),
        "prompt_tok_s_best": max(prompt_speeds),
        "generation_tok_s_best": max(gen_speeds),
        "generation_tokens": gen_tokens,
        "prompt_tok_s_runs": prompt_speeds,
        "generation_tok_s_runs": gen_speeds,
    }


# ----------------------------------------------------------------------- main


async def bench_preset(
    preset: str, repeat: int, max_tokens: int, progress: Progress, console: Console
) -> dict[str, Any]:
    settings = Settings(home=HOME, model=preset, max_tokens=max_tokens)
    start = time.perf_counter()
    ensure_model_server(settings)
    model = make_chat_model(settings)
    ready_s = time.perf_counter() - start
    tools = bench_tools()
    by_name = {tool.name: tool for tool in tools}
    caller = json_tool_caller(model, tools, model_dialect(model))
    task = progress.add_task(f"{preset} tool selection", total=len(CASES) * repeat)
    rows = []
    for round_ in range(repeat):
        for case in CASES:
            row = await run_case(caller, case, by_name)
            row["round"] = round_
            rows.append(row)
            progress.advance(task)
    progress.update(task, description=f"{preset} tool choice alone")
    choice = await choice_only(model, tools, repeat)
    record = running(settings.run_dir, "model")
    assert record is not None, "the embedded model server is not running"
    progress.update(task, description=f"{preset} throughput")
    throughput = measure_throughput(record.base_url, preset)
    progress.update(task, description=f"{preset} done")
    console.log(f"{preset}: server ready in {ready_s:.1f} s, dialect {model_dialect(model)}")
    return {
        "preset": preset,
        "dialect": model_dialect(model),
        "max_tokens": max_tokens,
        "server_ready_s": ready_s,
        "summary": summarize(rows),
        "choice_only": choice,
        "throughput": throughput,
        "rows": rows,
    }


def table(results: list[dict[str, Any]]) -> Table:
    t = Table(title="Embedded models: tool selection (json protocol, constrained decoding)")
    for col in ("preset", "n", "valid %", "valid if lenient %", "correct tool %",
                "correct tool+arg %", "repair %", "mean latency s", "mean in tok", "mean out tok",
                "prompt tok/s*", "gen tok/s*"):  # fmt: skip
        t.add_column(col, justify="left" if col == "preset" else "right")
    for r in results:
        s, tp = r["summary"], r["throughput"]
        t.add_row(
            r["preset"], str(s["n"]), f"{s['valid_pct']:.1f}", f"{s['lenient_valid_pct']:.1f}",
            f"{s['correct_tool_pct']:.1f}", f"{s['correct_tool_arg_pct']:.1f}", f"{s['repair_pct']:.1f}",
            f"{s['mean_latency_s']:.2f}", f"{s['mean_input_tokens']:.0f}",
            f"{s['mean_output_tokens']:.0f}", f"{tp['prompt_tok_s']:.0f}",
            f"{tp['generation_tok_s']:.1f}",
        )  # fmt: skip
    return t


def choice_table(results: list[dict[str, Any]]) -> Table:
    majority = max(Counter(c.tool for c in CASES).values()) / len(CASES)
    t = Table(
        title=f"Tool choice alone (enum of {len(bench_tools())} tools); chance "
        f"{100 / len(bench_tools()):.1f} %, always the commonest tool {100 * majority:.1f} %"
    )
    for col in ("preset", "n", "valid %", "correct tool %", "mean latency s", "most picked"):
        t.add_column(col, justify="left" if col in ("preset", "most picked") else "right")
    for r in results:
        c = r["choice_only"]
        top = ", ".join(f"{k} {v}" for k, v in list(c["picked"].items())[:3])
        t.add_row(r["preset"], str(c["n"]), f"{c['valid_pct']:.1f}",
                  f"{c['correct_tool_pct']:.1f}", f"{c['mean_latency_s']:.2f}", top)  # fmt: skip
    return t


def per_tool_table(results: list[dict[str, Any]]) -> Table:
    t = Table(title="Correct tool + argument, per expected tool")
    t.add_column("tool")
    for r in results:
        t.add_column(r["preset"], justify="right")
    tools = list(results[0]["summary"]["per_tool_correct_arg"])
    for tool in tools:
        t.add_row(tool, *(r["summary"]["per_tool_correct_arg"][tool] for r in results))
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all prompts")
    parser.add_argument("--max-tokens", type=int, default=256, help="cap per model reply")
    args = parser.parse_args()
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    console = Console(width=max(Console().width, 150))
    results = []
    settings = Settings(home=HOME, model=presets[0])
    grammar = real_tools_grammar(gguf_path(get_preset(presets[0]), settings.cache_dir))
    try:
        with Progress(console=console) as progress:
            for preset in presets:
                results.append(
                    asyncio.run(
                        bench_preset(preset, args.repeat, args.max_tokens, progress, console)
                    )
                )
    finally:
        stop_service(settings.run_dir, "model")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"cases": len(CASES), "repeat": args.repeat,
                               "load_average": os.getloadavg(), "cpus": os.cpu_count(),
                               "real_tools_grammar": grammar, "results": results},
                              indent=2, default=str))  # fmt: skip
    console.print(table(results))
    console.print("* raw server speed, median of 5 (no grammar): a ~1,000-token prompt; 128 tokens")
    console.print(per_tool_table(results))
    console.print(choice_table(results))
    best = max(results, key=lambda r: (r["summary"]["correct_tool_arg_pct"],
                                       r["summary"]["valid_pct"]))  # fmt: skip
    rejected = {name: v for name, v in grammar.items() if v != "ok"}
    if rejected:
        console.print(f"[yellow]llama.cpp rejects the grammar of real tools: {rejected}")
    console.print(f"best: {best['preset']}  (json: {OUT})")


if __name__ == "__main__":
    main()
