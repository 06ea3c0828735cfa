"""Fault drills: start the real components, inject a fault, count what was lost or done twice.

Every drill runs in a temporary home with SEKMET as a real process and small charts loaded.
Where a language model is not the point, the model is a deterministic stand-in: an
OpenAI-compatible HTTP process (`model-sim`, answering the planner's schemas from the prompt)
for eval runs, and the API's scripted model (bench/api_load.py) inside the API process. The
busy-model drill uses the real embedded llama.cpp server with the smallest preset.

    python -m bench.drills run                   # every drill, one table
    python -m bench.drills run --only fhir-killed --only api-killed --json
    python -m bench.drills run --only eval-sigkill --save eval-sigkill.json

Columns: trials; lost (a sample or order that never completed); repeated (a sample recorded
as finished twice, an order written twice, a second server started); errors (failures the
user saw as a clear message: recorded sample errors, error events, one-line CLI errors);
tracebacks (in any process's output); score != clean (eval drills: samples whose final
score, after the rerun, differs from a clean run's).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from wardround.runtime import procs
from wardround.settings import Settings

app = typer.Typer(help=__doc__, add_completion=False)
console = Console()
HERE = Path(__file__).resolve()
WARDROUND = str(Path(sys.executable).with_name("wardround"))
TRACEBACK = "Traceback (most recent call last)"
SIM_MODEL = "sim"


@dataclass
class Outcome:
    drill: str
    trials: int = 0
    lost: int = 0
    repeated: int = 0
    errors: int = 0
    tracebacks: int = 0
    differ: int = 0  # samples whose final score differs from a clean run's
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)


def progress(text: str) -> None:
    """A line on stderr while a long drill runs (stdout may be the JSON answer)."""
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def count_tracebacks(*texts: str) -> int:
    return sum(text.count(TRACEBACK) for text in texts)


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# ------------------------------------------------------------------ the stand-in model


def _schema(body: dict[str, Any]) -> dict[str, Any]:
    fmt = body.get("response_format") or {}
    return fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}


def _options(prop: dict[str, Any]) -> list[str]:
    if "enum" in prop:
        return [str(v) for v in prop["enum"]]
    return [str(prop["const"])] if "const" in prop else []


def _fill(schema: dict[str, Any], defs: dict[str, Any], answer: str) -> Any:
    """The first value a JSON schema allows (first enum option, one array item, ...)."""
    if "$ref" in schema:
        return _fill(defs.get(schema["$ref"].split("/")[-1], {}), defs, answer)
    if _options(schema):
        return _options(schema)[0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _fill(schema[key][0], defs, answer)
    kind = schema.get("type")
    if kind == "object":
        required = schema.get("required", list(schema.get("properties", {})))
        props = schema.get("properties", {})
        return {k: answer if k == "answer" else _fill(props.get(k, {}), defs, answer)
                for k in required}  # fmt: skip
    if kind == "array":
        return [_fill(schema.get("items", {}), defs, answer)] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    return False if kind == "boolean" else answer


def sim_reply(body: dict[str, Any]) -> str:
    """A deterministic reply to any schema-constrained request, read from the request itself:
    the first option offered for every choice; as the answer, the value on the line of the
    first record the answer may cite."""
    schema = _schema(body)
    refs = _options(schema.get("properties", {}).get("citations", {}).get("items", {}))
    prompt = str((body.get("messages") or [{}])[-1].get("content", ""))
    line = next((x for x in prompt.splitlines() if refs and x.startswith(refs[0])), "")
    answer = line.removeprefix(refs[0]).strip() if refs and line else "Nothing is recorded."
    if not schema:
        return json.dumps({"answer": answer, "citations": refs[:1]})
    return json.dumps(_fill(schema, schema.get("$defs", {}), answer))


@app.command("model-sim", hidden=True)
def model_sim(port: int, latency: float = 0.2) -> None:
    """(internal) An OpenAI-compatible chat server answering with `sim_reply`."""
    import asyncio

    import uvicorn
    from fastapi import FastAPI

    sim = FastAPI()

    @sim.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": SIM_MODEL, "object": "model"}]}

    @sim.post("/v1/chat/completions")
    async def complete(body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(latency)
        reply = sim_reply(body)
        return {
            "id": "sim", "object": "chat.completion", "created": int(time.time()),
            "model": SIM_MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }  # fmt: skip

    uvicorn.run(sim, host="127.0.0.1", port=port, log_level="warning")


@app.command("api-serve", hidden=True)
def api_serve(port: int) -> None:
    """(internal) The copilot API with the scripted bench model; FHIR and home from the env."""
    import uvicorn

    from bench.api_load import bench_model
    from wardround.server.app import create_app

    api = create_app(Settings(), model=bench_model(), extra_tools=[])
    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning")


# ------------------------------------------------------------------ the stack


class Stack:
    """A temporary home: SEKMET as a process with small charts, and helper processes, all
    started with `procs.start_service` (recorded, stopped by process group)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = Settings(home=root / "home", fhir_port=procs.free_port(), model_port=0)  # type: ignore[call-arg]
        self.fhir_url = self.settings.fhir_base_url
        self.ports: dict[str, int] = {}
        self.latency = 0.2  # of the stand-in model, per reply

    @property
    def run_dir(self) -> Path:
        return self.settings.run_dir

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "WARDROUND_HOME": str(self.settings.home),
                "WARDROUND_FHIR_BASE_URL": self.fhir_url, "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": str(HERE.parents[1]), **extra}  # fmt: skip

    def fhir_up(self) -> None:
        from wardround.stack.fhir_server import ensure_fhir_server

        ensure_fhir_server(self.settings)

    def load_charts(self) -> list[str]:
        """Two charts with known answers, three carebundle charts, the hand-made one."""
        from wardround.stack.fhir_server import analyze, db_path
        from wardround.stack.patients import _server_patient_id
        from wardround.testing.sample_charts import ann, bob, carebundle_charts, handmade_chart

        bundles = [ann().bundle(), bob().bundle(), *carebundle_charts().values(), handmade_chart()]
        ids = []
        with httpx.Client(timeout=120) as client:
            for bundle in bundles:
                response = client.post(self.fhir_url, json=bundle)
                response.raise_for_status()
                ids.append(str(_server_patient_id(response)))
        analyze(db_path(self.settings))
        return ids

    def helper(self, name: str, argv: list[str], ready: str, **env: str) -> None:
        """Start (or restart on the same port) one of this file's helper servers."""
        port = self.ports.setdefault(name, procs.free_port())
        url = f"http://127.0.0.1:{port}"
        procs.start_service(
            name, [sys.executable, "-m", "bench.drills", *argv, str(port)], run_dir=self.run_dir,
            base_url=url, ready_url=url + ready, log=self.settings.home / "logs" / f"{name}.log",
            timeout_s=120, env=self.env(**env), info={"port": port},
        )  # fmt: skip

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def crash(self, name: str) -> None:
        """SIGKILL a service's whole process group (a crash, not a shutdown); drop its record."""
        record = procs.read_record(self.run_dir, name)
        assert record is not None, f"{name} is not running"
        os.killpg(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while procs.group_members(record.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        procs.running(self.run_dir, name)  # removes the dead record

    def down(self) -> int:
        """Stop everything; returns how many of our processes were left after (should be 0)."""
        for path in self.run_dir.glob("*.json") if self.run_dir.exists() else []:
            procs.stop_service(self.run_dir, path.stem)
        procs.stop_orphans(self.run_dir)
        return len(procs.tagged(self.run_dir))


def new_stack(prefix: str) -> Stack:
    return Stack(Path(tempfile.mkdtemp(prefix=f"wardround-drill-{prefix}-")))


# ------------------------------------------------------------------ eval runs


@dataclass
class EvalRun:
    """`wardround eval run ehrqa` against the stack's FHIR server and the stand-in model."""

    stack: Stack
    out: Path
    limit: int = 24
    concurrency: int = 4
    timeout_s: float = 300  # generous: on a loaded machine a slow sample is not the fault

    @property
    def results(self) -> Path:
        return self.out / "ehrqa" / SIM_MODEL / "results.jsonl"

    def argv(self, retry_errors: bool = False) -> list[str]:
        argv = [WARDROUND, "eval", "run", "ehrqa", "--model", SIM_MODEL, "--base-url",
                f"{self.stack.url('model-sim')}/v1", "--out", str(self.out), "--limit",
                str(self.limit), "--concurrency", str(self.concurrency), "--timeout", str(self.timeout_s)]  # fmt: skip
        return argv + (["--retry-errors"] if retry_errors else [])

    def start(self, retry_errors: bool = False) -> subprocess.Popen[str]:
        env = self.stack.env(WARDROUND_MODEL_NAME=SIM_MODEL, WARDROUND_REQUEST_TIMEOUT_S="30")
        return subprocess.Popen(
            self.argv(retry_errors), env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def run(self, retry_errors: bool = False) -> tuple[int, str]:
        proc = self.start(retry_errors)
        out, err = proc.communicate(timeout=900)
        return proc.returncode, out + err

    def lines(self) -> int:
        return len(self.results.read_bytes().splitlines()) if self.results.exists() else 0

    def sample_ids(self) -> list[str]:
        from wardround.evals.results import read_samples
        from wardround.evals.runner import stratified

        return [
            s.id for s in stratified(read_samples(self.out / "ehrqa" / "samples.jsonl"), self.limit)
        ]


@dataclass
class FileAudit:
    corrupt: int  # complete lines that do not parse
    ok: Counter[str]  # finished (no error) lines per sample id
    errors: list[str]  # error texts, in file order
    final: dict[str, Any]  # the last record of each id


def audit_results(path: Path) -> FileAudit:
    """Read a results file as a rerun would, but count every line (not only the last)."""
    from pydantic import ValidationError

    from wardround.evals.results import SampleRecord

    data = path.read_bytes() if path.exists() else b""
    complete = data[: data.rfind(b"\n") + 1]  # a partial tail is what a kill may leave
    audit = FileAudit(corrupt=0, ok=Counter(), errors=[], final={})
    for line in complete.splitlines():
        try:
            record = SampleRecord.model_validate_json(line)
        except ValidationError:
            audit.corrupt += 1
            continue
        audit.final[record.id] = record
        if record.error is None:
            audit.ok[record.id] += 1
        else:
            audit.errors.append(record.error.splitlines()[0])
    return audit


def wait_for_lines(run: EvalRun, proc: subprocess.Popen[str], n: int, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if run.lines() >= n:
            return True
        time.sleep(0.05)
    return False


def eval_stack(prefix: str, latency: float = 0.2) -> Stack:
    stack = new_stack(prefix)
    stack.fhir_up()
    stack.load_charts()
    stack.latency = latency
    restart(stack, "model-sim")
    return stack


Score = tuple[bool, float, str, tuple[str, ...], tuple[str, ...]]
Scores = dict[str, Score]


def scores(audit: FileAudit) -> Scores:
    """Each sample's final verdict, value, answer, and the records it read and cited (the
    stand-in model is deterministic, so a clean rerun gives all of them again; an outage
    swallowed into "nothing is recorded" would show as fewer records read)."""
    return {
        i: (r.correct, r.value, r.answer, tuple(r.trace.retrieved), tuple(r.trace.citations))
        for i, r in audit.final.items()
    }


def reference_scores(stack: Stack, limit: int) -> Scores:
    """A clean run's scores, to compare every faulted run with. A reference with failed
    samples would let a faulted run's failures pass as "the same": refused."""
    clean = EvalRun(stack, stack.root / "clean", limit=limit)
    code, output = clean.run()
    if code != 0:
        raise RuntimeError(f"the clean eval run failed (exit {code}): {output[-2000:]}")
    audit = audit_results(clean.results)
    failed = [i for i, r in audit.final.items() if r.error is not None]
    graph_errors = [i for i, r in audit.final.items() if r.trace.artifacts.get("solver_error")]
    missing = set(clean.sample_ids()) - set(audit.final)
    if failed or graph_errors or missing:  # the stand-in must answer every schema asked
        raise RuntimeError(f"clean run not clean: {len(failed)} samples recorded as errors "
                           f"(e.g. {audit.errors[:1]}), {len(graph_errors)} graph errors, "
                           f"{len(missing)} missing")  # fmt: skip
    return scores(audit)


# ------------------------------------------------------------------ drills: eval runs


def drill_service_killed(
    service: str,
    trials: int = 3,
    limit: int = 24,
    seed: int = 1,
    outage_s: float = 8.0,
    compare: bool = True,
) -> Outcome:
    """Kill `service` ("fhir" or "model-sim") while an eval runs, restart it, rerun with
    --retry-errors: every sample finishes once, with the clean run's verdict."""
    rng = random.Random(seed)
    outcome = Outcome(f"{'FHIR' if service == 'fhir' else 'model'} server killed mid eval")
    stack = eval_stack(service)
    try:
        reference = reference_scores(stack, limit) if compare else None
        if reference is not None:
            right = sum(score[0] for score in reference.values())
            outcome.note(f"clean run: {right}/{len(reference)} correct, 0 errors")
        for trial in range(trials):
            run = EvalRun(stack, stack.root / f"trial{trial}", limit=limit)
            proc = run.start()
            wait_for_lines(run, proc, rng.randint(2, limit // 3))
            at_kill = run.lines()
            stack.crash(service)
            time.sleep(outage_s)  # longer than the clients' retries: in-flight samples fail
            restart(stack, service)
            out, err = proc.communicate(timeout=900)
            first = audit_results(run.results)
            code, again = run.run(retry_errors=True)
            final = audit_results(run.results)
            lost, repeated, differ = outcome.lost, outcome.repeated, outcome.differ
            tally_run(outcome, run, first, final, reference, proc.returncode, code)
            outcome.tracebacks += count_tracebacks(out, err, again)
            outcome.trials += 1
            outcome.note(f"trial {trial}: killed after {at_kill}/{limit} samples; "
                         f"{len(first.errors)} recorded as errors; after --retry-errors "
                         f"{outcome.lost - lost} lost, {outcome.repeated - repeated} repeated, "
                         f"{outcome.differ - differ} scores != clean")  # fmt: skip
    finally:
        left = stack.down()
    if left:
        outcome.note(f"{left} processes left after down")
    return outcome


def restart(stack: Stack, service: str) -> None:
    if service == "fhir":
        stack.fhir_up()
    else:
        stack.helper("model-sim", ["model-sim", "--latency", str(stack.latency)], "/v1/models")


def tally_run(
    outcome: Outcome,
    run: EvalRun,
    first: FileAudit,
    final: FileAudit,
    reference: Scores | None,
    code_first: int,
    code_retry: int,
) -> None:
    """Count one faulted run: errors of the first pass; after the --retry-errors pass,
    samples never finished (lost), finished more than once (repeated), and finished with a
    score other than the clean run's (differ)."""
    ids = run.sample_ids()
    outcome.errors += len(first.errors)
    outcome.lost += sum(1 for i in ids if final.ok[i] == 0)
    outcome.repeated += sum(max(0, c - 1) for c in final.ok.values())
    unnamed = [e for e in first.errors if not re.search(r"FHIR server|model server", e)]
    if unnamed:
        outcome.note(f"errors not naming the cause: {unnamed[:2]}")
    if reference is not None:
        compare_scores(outcome, ids, final, reference)
    if code_first != 0 or code_retry != 0:
        outcome.note(f"exit codes {code_first}/{code_retry}")
    if first.corrupt or final.corrupt:
        outcome.note(f"{first.corrupt + final.corrupt} corrupt lines")
    if first.errors:
        outcome.note(f"e.g. {first.errors[0][:90]}")


def compare_scores(outcome: Outcome, ids: list[str], final: FileAudit, reference: Scores) -> None:
    """Every finished sample's score against the clean run's (lost ones are counted apart)."""
    odd = sorted(set(ids) ^ set(reference))
    if odd:
        outcome.note(f"sample sets differ from the clean run: {odd[:4]}")
    got = scores(final)
    changed = [i for i in ids if final.ok[i] and got[i] != reference.get(i)]
    outcome.differ += len(changed)
    for i in changed[:2]:
        outcome.note(
            f"score of {i} differs from the clean run: {got[i]} vs {reference.get(i)}"[:300]
        )


@dataclass
class KillTally:
    kills: int = 0
    early: int = 0  # kills before the run had written a line
    finished_first: int = 0  # runs that ended before their kill came: not counted as kills
    corrupt_files: int = 0  # reads after a kill that found a complete line not parsing
    partial_tails: int = 0  # reads after a kill that found a partial last line


def kill_once(run: EvalRun, rng: random.Random, tally: KillTally) -> str:
    """Start the run and SIGKILL it at a random point: a quarter of the time in its first
    4 s (start-up, freezing the dataset, first samples), otherwise 0-1.5 s after its next
    result line. Returns its stderr."""
    proc = run.start()
    before = run.lines()
    if rng.random() < 0.25:
        time.sleep(rng.uniform(0.0, 4.0))
    else:
        wait_for_lines(run, proc, before + 1)  # past its start-up and writing
        time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is not None:  # it finished before the kill
        tally.finished_first += 1
        return proc.communicate()[1]
    proc.kill()
    _, err = proc.communicate(timeout=60)
    tally.kills += 1
    tally.early += run.lines() == before
    data = run.results.read_bytes() if run.results.exists() else b""
    tally.partial_tails += bool(data) and not data.endswith(b"\n")
    tally.corrupt_files += audit_results(run.results).corrupt > 0
    return err


def remaining(run: EvalRun) -> int:
    """Samples this results file still lacks (all of them before the dataset is frozen)."""
    if not (run.out / "ehrqa" / "samples.jsonl").exists():
        return run.limit
    return len(set(run.sample_ids()) - set(audit_results(run.results).ok))


def finish_round(outcome: Outcome, run: EvalRun) -> None:
    """Run to the end; every sample must be in the file exactly once, finished."""
    code, output = run.run()
    outcome.tracebacks += count_tracebacks(output)
    final = audit_results(run.results)
    ids = run.sample_ids()
    outcome.lost += sum(1 for i in ids if final.ok[i] == 0)
    outcome.repeated += sum(max(0, c - 1) for c in final.ok.values())
    outcome.errors += len(final.errors)
    outcome.note(f"{run.out.name}: {len(ids)} samples; final run exit {code}, "
                 f"{len(final.errors)} sample errors, {final.corrupt} corrupt lines")  # fmt: skip
    if code != 0:
        outcome.errors += 1


def drill_eval_sigkill(trials: int = 20, limit: int = 60, seed: int = 2) -> Outcome:
    """SIGKILL the eval process at random points until `trials` kills have landed; after each
    kill the results file must read back whole. A results file close to complete is run to
    the end (every sample exactly once) and a fresh one started, so no kill is wasted on a
    run with nothing left to do."""
    rng = random.Random(seed)
    outcome = Outcome("eval process SIGKILLed")
    tally = KillTally()
    stack = eval_stack("sigkill", latency=1.0)  # slow replies: kills land mid-run
    rounds = 0
    run = EvalRun(stack, stack.root / "round0", limit=limit)
    try:
        while tally.kills < trials:
            if remaining(run) < 2 * run.concurrency:
                finish_round(outcome, run)
                rounds += 1
                run = EvalRun(stack, stack.root / f"round{rounds}", limit=limit)
            outcome.tracebacks += count_tracebacks(kill_once(run, rng, tally))
            progress(f"{run.out.name}: {tally}, {run.lines()} lines")
        finish_round(outcome, run)
    finally:
        stack.down()
    outcome.trials = tally.kills
    outcome.note(f"{tally.kills} kills ({tally.early} before a line was written) over "
                 f"{rounds + 1} results files; {tally.finished_first} runs ended before "
                 f"their kill; corrupt results files after a kill: {tally.corrupt_files}; "
                 f"partial last lines: {tally.partial_tails}")  # fmt: skip
    return outcome


# ------------------------------------------------------------------ drill: the API


def order_count(fhir_url: str, thread: str, call_id: str) -> int:
    """How many ServiceRequests the FHIR server holds for this proposed order."""
    from wardround.graphs.copilot import ORDER_SYSTEM, order_key

    bundle = httpx.get(
        f"{fhir_url}/ServiceRequest",
        params={"identifier": f"{ORDER_SYSTEM}|{order_key(thread, call_id)}"},
        timeout=30,
    ).json()
    return len(bundle.get("entry") or [])


def propose(api: httpx.Client, patient: str) -> tuple[str, str]:
    """A thread whose order waits for approval: (thread id, call id)."""
    thread = api.post("/api/threads", json={"patient_id": patient}).json()["thread_id"]
    reply = api.post(
        f"/api/threads/{thread}/messages", params={"stream": "false"},
        json={"content": "Please order an HbA1c."},
    ).json()  # fmt: skip
    approval = next(e["data"] for e in reply["events"] if e["event"] == "approval_required")
    return thread, str(approval["call_id"])


def settle(api: httpx.Client, thread: str, call_id: str, seen: Counter[str]) -> int:
    """Drive the thread to idle after a crash (approve again if it still waits, resume if a
    run stopped part-way); counts the state found in `seen`; returns the error events."""
    errors = 0
    for step in range(4):
        status = api.get(f"/api/threads/{thread}").json()["status"]
        if step == 0:
            seen[status] += 1
        if status == "idle":
            break
        path = f"approvals/{call_id}" if status == "awaiting_approval" else "resume"
        body = {"action": "approve"} if status == "awaiting_approval" else None
        reply = api.post(f"/api/threads/{thread}/{path}", params={"stream": "false"}, json=body)
        errors += sum(e["event"] == "error" for e in reply.json().get("events", []))
    return errors


def approve_while_crashing(stack: Stack, thread: str, call_id: str, delay: float) -> None:
    """Send the approval, SIGKILL the API `delay` s later (mid-write or after), restart it."""
    import threading

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it: the drill
            httpx.post(f"{stack.url('api')}/api/threads/{thread}/approvals/{call_id}",
                       params={"stream": "false"}, json={"action": "approve"}, timeout=60)  # fmt: skip

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(delay)
    stack.crash("api")
    sender.join(60)
    stack.helper("api", ["api-serve"], "/api/health")


def drill_api_killed(trials: int = 10, seed: int = 3, max_delay: float = 2.5) -> Outcome:
    """Kill the API while an order waits for approval (and, every other trial, again in the
    middle of the approval): the order is still pending after a restart and is written once."""
    rng = random.Random(seed)
    outcome = Outcome("API killed with an order pending")
    after_crash: Counter[str] = Counter()
    stack = new_stack("api")
    try:
        stack.fhir_up()
        patients = stack.load_charts()
        stack.helper("api", ["api-serve"], "/api/health")
        for trial in range(trials):
            with httpx.Client(base_url=stack.url("api"), timeout=60) as api:
                thread, call_id = propose(api, patients[trial % len(patients)])
            stack.crash("api")
            stack.helper("api", ["api-serve"], "/api/health")
            pending = httpx.get(f"{stack.url('api')}/api/threads/{thread}/approvals").json()
            if call_id not in [a["call_id"] for a in pending]:
                outcome.lost += 1
                continue
            if trial % 2:
                approve_while_crashing(stack, thread, call_id, rng.uniform(0.0, max_delay))
            with httpx.Client(base_url=stack.url("api"), timeout=60) as api:
                outcome.errors += settle(
                    api, thread, call_id, after_crash if trial % 2 else Counter()
                )
            written = order_count(stack.fhir_url, thread, call_id)
            outcome.lost += written == 0
            outcome.repeated += max(0, written - 1)
            outcome.trials += 1
        outcome.tracebacks = count_tracebacks(log_text(stack.settings.home / "logs" / "api.log"))
        outcome.note(
            f"odd trials also killed 0-{max_delay} s after the approval was sent; the thread was "
            f"then found {dict(after_crash)} and driven to idle"
        )
    finally:
        stack.down()
    return outcome


# ------------------------------------------------------------------ drill: a busy model server

SECOND_CLIENT = """
from wardround.runtime import procs
from wardround.agents.embedded import ensure_model_server
from wardround.settings import Settings
settings = Settings()
ensure_model_server(settings)
print(procs.read_record(settings.run_dir, "model").pid)
"""


def long_request(base_url: str, words: int = 2500) -> None:
    """A long prompt: llama.cpp's server answers nothing else (not /v1/models) meanwhile."""
    text = " ".join(f"reading{i % 97} potassium sodium creatinine" for i in range(words // 4))
    body = {"model": "smollm2-135m", "max_tokens": 64,
            "messages": [{"role": "user", "content": f"Summarise: {text}"}]}  # fmt: skip
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{base_url}/chat/completions", json=body, timeout=600)


def wait_busy(base_url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.url_ok(f"{base_url}/models", timeout=1.0):
            return True
        time.sleep(0.1)
    return False


def drill_busy_model(trials: int = 2, preset: str = "smollm2-135m", words: int = 2500) -> Outcome:
    """A second client arrives while the embedded model server holds a long prompt: it must
    reuse that server (no twin); `stack down` must leave no model or FHIR process."""
    import threading

    from wardround.agents.embedded import ensure_server
    from wardround.agents.presets import get_preset

    outcome = Outcome("busy model server + second client")
    stack = new_stack("busy")
    env = stack.env(WARDROUND_MODEL=preset, WARDROUND_FHIR_PORT=str(stack.settings.fhir_port))
    try:
        stack.fhir_up()
        first = ensure_server(
            get_preset(preset), stack.settings.model_copy(update={"model": preset})
        )
        for _ in range(trials):
            worker = threading.Thread(target=long_request, args=(first.base_url, words))
            worker.start()
            if not wait_busy(first.base_url):
                outcome.note("the server never looked busy (prompt too short for this machine)")
            second = subprocess.run([sys.executable, "-c", SECOND_CLIENT], env=env,
                                    capture_output=True, text=True, timeout=600)  # fmt: skip
            status = subprocess.run([WARDROUND, "stack", "status", "--json"], env=env,
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            worker.join(600)
            outcome.tracebacks += count_tracebacks(second.stderr, status.stderr)
            outcome.errors += second.returncode != 0
            pids = second.stdout.split()
            outcome.repeated += bool(pids) and pids[-1] != str(first.pid)
            models = [g for g in procs.tagged(stack.run_dir) if g.service == "model"]
            outcome.repeated += max(0, len(models) - 1)
            busy = json.loads(status.stdout or "{}").get("busy", [])
            outcome.note(f"status while busy: {busy or 'not busy'}")
            outcome.trials += 1
        down = subprocess.run([WARDROUND, "stack", "down"], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        outcome.tracebacks += count_tracebacks(down.stderr)
    finally:
        left = len(procs.tagged(stack.run_dir))
        stack.down()
    outcome.lost = left
    outcome.note(f"processes left after `stack down`: {left} (counted as lost)")
    return outcome


# ------------------------------------------------------------------ drill: 429 and 503 bursts


class FaultyProxy:
    """A proxy in front of the real FHIR server that answers without forwarding (as a rate
    limiter or a restarting gateway does): every 4th request a 429 with Retry-After: 1, the
    next a 503, and an outage of `outage_s` (503 to everything) every `outage_every` requests."""

    def __init__(self, upstream: str, outage_every: int = 60, outage_s: float = 6.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.outage_every, self.outage_s = outage_every, outage_s
        self.n = 0
        self.outage_until = 0.0
        self.limited_at: float | None = None
        self.early_retries = 0  # a request sooner than the Retry-After we gave
        self.faults = Counter[int]()

    def fault(self) -> tuple[int, dict[str, str]] | None:
        self.n += 1
        now = time.monotonic()
        if self.limited_at is not None and now - self.limited_at < 0.95:
            self.early_retries += 1
        self.limited_at = None
        if self.n % self.outage_every == 0:
            self.outage_until = now + self.outage_s
        if now < self.outage_until or self.n % 4 == 2:
            return 503, {}
        if self.n % 4 == 1:
            self.limited_at = now
            return 429, {"Retry-After": "1"}
        return None

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        client = httpx.AsyncClient(timeout=60)

        async def forward(request: Request) -> Response:
            fault = self.fault()
            if fault is not None:
                self.faults[fault[0]] += 1
                return Response(b'{"resourceType":"OperationOutcome","issue":[{"severity":"error",'
                                b'"code":"transient","diagnostics":"drill"}]}', status_code=fault[0],
                                headers=fault[1], media_type="application/fhir+json")  # fmt: skip
            path = request.url.path.removeprefix("/fhir")
            upstream = await client.request(
                request.method, f"{self.upstream}{path}", params=request.query_params,
                content=await request.body(),
                headers={k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept", "prefer")},
            )  # fmt: skip
            keep = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() in ("content-type", "location")
            }
            return Response(upstream.content, status_code=upstream.status_code, headers=keep)

        return Starlette(
            routes=[Route("/fhir{path:path}", forward, methods=["GET", "POST", "PUT"])]
        )


async def _client_phase(base_url: str, patient: str, n: int, outcome: Outcome) -> None:
    """Sequential reads through the proxy with the FHIR client: each one is an answer or a
    FhirError with a message; anything else would reach the user as a traceback."""
    from wardround.fhir.client import FhirClient, FhirError

    async with FhirClient(base_url, backoff_s=0.25) as fhir:
        for i in range(n):
            try:
                if i % 2:
                    await fhir.search("Observation", {"patient": patient, "_count": 5}, limit=5)
                else:
                    await fhir.read(f"Patient/{patient}")
            except FhirError as err:
                outcome.errors += 1
                if outcome.errors == 1:
                    outcome.note(f"client error: {str(err)[:100]}")
            except Exception as err:  # counted: what the drill looks for
                outcome.tracebacks += 1
                outcome.note(f"unexpected {type(err).__name__}: {err}")


def _cli_phase(stack: Stack, proxy: str, patient: str, n: int, outcome: Outcome) -> None:
    env = stack.env(WARDROUND_FHIR_BASE_URL=proxy, WARDROUND_MODEL_NAME=SIM_MODEL,
                    WARDROUND_MODEL_BASE_URL=f"{stack.url('model-sim')}/v1")  # fmt: skip
    for _ in range(n):
        done = subprocess.run([WARDROUND, "ask", "latest hemoglobin a1c", "--patient", patient],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        outcome.tracebacks += count_tracebacks(done.stdout, done.stderr)
        if done.returncode != 0:
            outcome.errors += 1
            lines = done.stderr.strip().splitlines()
            if len(lines) != 1 or not lines[0].startswith("error:"):
                outcome.note(f"ask failed without a one-line error: {done.stderr[-200:]}")


def _api_phase(stack: Stack, patients: list[str], n: int, outcome: Outcome) -> None:
    with httpx.Client(base_url=stack.url("api"), timeout=120) as api:
        for i in range(n):
            created = api.post("/api/threads", json={"patient_id": patients[i % len(patients)]})
            if created.status_code != 201:
                outcome.errors += 1
                if created.status_code >= 500 and created.status_code != 503:
                    outcome.note(f"API {created.status_code}: {created.text[:100]}")
                continue
            thread = created.json()["thread_id"]
            reply = api.post(f"/api/threads/{thread}/messages", params={"stream": "false"},
                             json={"content": "What are the latest results?"})  # fmt: skip
            kinds = [e["event"] for e in reply.json().get("events", [])]
            outcome.errors += "error" in kinds
            if not kinds or kinds[-1] != "done":
                outcome.note(f"a conversation ended without done: {kinds[-3:]}")


def drill_bursts(reads: int = 60, asks: int = 4, conversations: int = 20) -> Outcome:
    """429/503 bursts and outages from a proxy in front of SEKMET, seen by the FHIR client,
    by `wardround ask`, and by the API: an answer or a clear error, never a traceback."""
    import asyncio

    from wardround.testing.loopback import LoopbackServer

    outcome = Outcome("FHIR 429/503 bursts (proxy)")
    stack = new_stack("burst")
    try:
        stack.fhir_up()
        patients = stack.load_charts()
        proxy = FaultyProxy(stack.fhir_url)
        with LoopbackServer(proxy.app()) as server:
            base = f"{server.url}/fhir"
            asyncio.run(_client_phase(base, patients[0], reads, outcome))
            outcome.note(f"FHIR client: {outcome.errors} clear errors in {reads} reads; "
                         f"requests sooner than Retry-After: {proxy.early_retries}")  # fmt: skip
            restart(stack, "model-sim")
            before = outcome.errors
            _cli_phase(stack, base, patients[0], asks, outcome)
            outcome.note(f"ask: {outcome.errors - before} one-line errors in {asks} runs")
            stack.helper("api", ["api-serve"], "/api/health", WARDROUND_FHIR_BASE_URL=base)
            before = outcome.errors
            _api_phase(stack, patients, conversations, outcome)
            outcome.note(f"API: {outcome.errors - before} error answers in {conversations} chats")
            outcome.note(f"faults injected: {dict(proxy.faults)} over {proxy.n} requests")
        outcome.trials = reads + asks + conversations
        outcome.tracebacks += count_tracebacks(log_text(stack.settings.home / "logs" / "api.log"))
    finally:
        stack.down()
    return outcome


# ------------------------------------------------------------------ the table

DRILLS = {
    "fhir-killed": lambda: drill_service_killed("fhir", trials=2),
    "model-killed": lambda: drill_service_killed("model-sim", trials=2),
    "eval-sigkill": drill_eval_sigkill,
    "api-killed": lambda: drill_api_killed(trials=6),
    "busy-model": lambda: drill_busy_model(trials=1),
    "bursts": drill_bursts,
}


def print_table(outcomes: list[Outcome]) -> None:
    table = Table(title="fault drills")
    columns = ("drill", "trials", "lost", "repeated", "errors", "tracebacks", "score != clean")
    for column in columns:
        table.add_column(column, justify="left" if column == "drill" else "right")
    for o in outcomes:
        figures = (o.trials, o.lost, o.repeated, o.errors, o.tracebacks, o.differ)
        table.add_row(o.drill, *(str(v) for v in figures))
    console.print(table)
    for o in outcomes:
        for text in o.notes:
            console.print(f"[dim]{o.drill}:[/] {text}", highlight=False)


@app.command()
def run(
    only: Annotated[
        list[str] | None, typer.Option(help=f"drills to run: {', '.join(DRILLS)}")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    save: Annotated[Path | None, typer.Option(help="also write the outcomes as JSON here")] = None,
) -> None:
    """Run the drills (all by default) and print one table."""
    chosen = only or list(DRILLS)
    unknown = [d for d in chosen if d not in DRILLS]
    if unknown:
        raise typer.BadParameter(f"unknown drills {unknown}; known: {', '.join(DRILLS)}")
    outcomes = []
    for name in chosen:
        started = time.monotonic()
        try:
            outcome = DRILLS[name]()
        except Exception as err:  # a broken drill must not hide the others' figures
            outcome = Outcome(name, errors=-1, notes=[f"the drill itself failed: {err!r}"[:500]])
        outcome.note(f"{time.monotonic() - started:.0f} s")
        outcomes.append(outcome)
        if save is not None:
            save.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
        if not as_json:
            console.print(f"[dim]{name} done[/]")
    if as_json:
        print(json.dumps([asdict(o) for o in outcomes]))
    else:
        print_table(outcomes)


if __name__ == "__main__":
    app()
