"""Load on the copilot API: N concurrent conversations, each a question, an order, an approval.

The API runs in a child process (uvicorn, the default SQLite thread store, the audit log)
next to an in-process SEKMET holding small synthetic charts; its model is a fast scripted
stand-in that streams JSON replies, so the numbers measure the API, LangGraph, the thread
store and FHIR, not a language model. Reported: errors, latency per request (p50/p95/max,
time to the first event and to `done`), throughput, and the server process's memory.

    python bench/api_load.py run                      # 50 conversations
    python bench/api_load.py run --conversations 100 --json
    python bench/api_load.py soak --conversations 50 --minutes 10   # memory over time
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from rich.console import Console
from rich.table import Table

app = typer.Typer(help=__doc__, add_completion=False)
console = Console()
_REF = re.compile(r"\b(?:Observation|Condition|MedicationRequest|Encounter)/[A-Za-z0-9\-.]{1,64}")
ORDER = {"code": "4548-4", "system": "http://loinc.org", "display": "Hemoglobin A1c"}


class BenchModel(BaseChatModel):
    """Replies from the conversation itself: a clinician's question -> search, an order
    request -> create_service_request, a tool result -> a final answer citing it."""

    chunk_chars: int = 8

    @property
    def _llm_type(self) -> str:
        return "bench"

    def _reply(self, messages: list[BaseMessage]) -> str:
        last = str(messages[-1].content)
        if last.startswith("Result of create_service_request"):
            return json.dumps({"action": "final_answer", "answer": "Ordered."})
        if last.startswith("Result of "):
            refs = _REF.findall(last)[:2]
            body: dict[str, Any] = {"action": "final_answer", "answer": "Here is what I found."}
            if refs:
                body["citations"] = refs
            return json.dumps(body)
        if "order" in last.lower():
            return json.dumps({"action": "create_service_request", "args": ORDER})
        args = {"resource_type": "Observation", "limit": 5}
        return json.dumps({"action": "search_records", "args": args})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(content=self._reply(messages))
        message.usage_metadata = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        text = self._reply(messages)
        for i in range(0, len(text), self.chunk_chars):
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(content=text[i : i + self.chunk_chars])
            )
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


# ------------------------------------------------------------------ the server


@app.command(hidden=True)
def serve(port: int, home: Path, ready: Path) -> None:
    """(internal) SEKMET with charts on a loopback port, and the API on `port`."""
    import uvicorn

    from wardround.procs import free_port
    from wardround.server.app import create_app
    from wardround.settings import Settings
    from wardround.stack.loopback import LoopbackServer
    from wardround.stack.sample_charts import carebundle_charts, handmade_chart
    from wardround.stack.sekmet_inprocess import asgi_client, load_chart, sekmet_app

    fhir_port = free_port()
    fhir_app = sekmet_app(home / "sekmet", base_url=f"http://127.0.0.1:{fhir_port}/fhir")

    async def load() -> list[str]:
        client = asgi_client(fhir_app)
        charts = [*carebundle_charts().values(), handmade_chart()]
        ids = [await load_chart(client, chart) for chart in charts]
        await client.aclose()
        return ids

    patients = asyncio.run(load())
    with LoopbackServer(fhir_app, port=fhir_port) as fhir:
        settings = Settings(home=home, fhir_base_url=f"{fhir.url}/fhir")
        api = create_app(settings, model=BenchModel(), extra_tools=[])
        ready.write_text(json.dumps({"patients": patients}))
        uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used: the server's cost per request, which
    unlike latency does not depend on what else the machine is doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class MemoryWatch:
    """Samples a process's resident memory in a thread; keeps the peak."""

    def __init__(self, pid: int, every_s: float = 10.0) -> None:
        self.pid = pid
        self.peak = 0
        self.every_s = every_s
        self.series: list[tuple[float, int]] = []  # (seconds since start, RSS kB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = last = time.monotonic()
        while not self._stop.is_set():
            try:
                rss = _rss_kb(self.pid)
            except OSError:
                return
            self.peak = max(self.peak, rss)
            if not self.series or time.monotonic() - last >= self.every_s:
                last = time.monotonic()
                self.series.append((round(last - started, 1), rss))
            time.sleep(0.1)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ the clients


async def _sse(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    first: float | None = None
    events: list[dict[str, Any]] = []
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return {"ok": False, "error": f"HTTP {response.status_code}: {response.text[:200]}"}
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name:
                first = first or time.perf_counter()
                events.append({"event": name, "data": json.loads(line[5:])})
    total = time.perf_counter() - started
    kinds = [e["event"] for e in events]
    ok = bool(kinds) and kinds[-1] == "done" and "error" not in kinds
    return {
        "ok": ok,
        "error": None if ok else f"events {kinds[-3:]}",
        "latency_s": total,
        "first_event_s": (first or time.perf_counter()) - started,
        "events": events,
    }


async def conversation(client: httpx.AsyncClient, patient: str) -> list[dict[str, Any]]:
    """Create a thread, ask, order, approve; one result per request."""
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    created = await client.post("/api/threads", json={"patient_id": patient})
    ok = created.status_code == 201
    error = None if ok else created.text[:200]
    latency = time.perf_counter() - started
    results.append({"kind": "create", "ok": ok, "latency_s": latency, "error": error})
    if created.status_code != 201:
        return results
    thread = created.json()["thread_id"]
    base = f"/api/threads/{thread}"
    asked = await _sse(client, f"{base}/messages", {"content": "What are the latest results?"})
    results.append({"kind": "question", **asked})
    ordered = await _sse(client, f"{base}/messages", {"content": "Please order an HbA1c."})
    results.append({"kind": "order", **ordered})
    approvals = [e["data"] for e in ordered.get("events", []) if e["event"] == "approval_required"]
    if not approvals:
        results.append({"kind": "approve", "ok": False, "error": "no approval was asked for"})
        return results
    approved = await _sse(
        client, f"{base}/approvals/{approvals[0]['call_id']}", {"action": "approve"}
    )
    results.append({"kind": "approve", **approved})
    for item in results:
        item.pop("events", None)
    return results


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(results: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    by_kind: dict[str, Any] = {}
    for kind in ("create", "question", "order", "approve", "all"):
        rows = [r for r in results if kind == "all" or r["kind"] == kind]
        lat = [r["latency_s"] for r in rows if "latency_s" in r]
        first = [r["first_event_s"] for r in rows if "first_event_s" in r]
        by_kind[kind] = {
            "requests": len(rows),
            "errors": sum(not r["ok"] for r in rows),
            "p50_s": round(_pct(lat, 0.5), 4),
            "p95_s": round(_pct(lat, 0.95), 4),
            "max_s": round(max(lat), 4) if lat else None,
            "mean_s": round(statistics.fmean(lat), 4) if lat else None,
            "first_event_p50_s": round(_pct(first, 0.5), 4) if first else None,
        }
    return {
        "wall_s": round(wall_s, 2),
        "requests_per_s": round(len(results) / wall_s, 1),
        "by_kind": by_kind,
        "errors": [r["error"] for r in results if not r["ok"]][:10],
    }


async def _load(url: str, patients: list[str], n: int) -> tuple[list[dict[str, Any]], float]:
    limits = httpx.Limits(max_connections=n * 2, max_keepalive_connections=n * 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        batches = await asyncio.gather(
            *(conversation(client, patients[i % len(patients)]) for i in range(n))
        )
        return [r for batch in batches for r in batch], time.perf_counter() - started


async def _ready(url: str, process: subprocess.Popen[bytes], ready: Path) -> list[str]:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the API process exited ({process.returncode})")
            if ready.exists():
                try:
                    if (await client.get("/api/health")).json().get("status") == "ok":
                        return list(json.loads(ready.read_text())["patients"])
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the API did not come up in 120 s")


async def _soak(
    url: str, patients: list[str], n: int, seconds: float
) -> tuple[list[dict[str, Any]], float]:
    """N workers, each running conversations back to back until the time is up."""
    limits = httpx.Limits(max_connections=n * 2, max_keepalive_connections=n * 2)
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient, i: int) -> list[dict[str, Any]]:
        done: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            done += await conversation(client, patients[(i + len(done)) % len(patients)])
        return done

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        batches = await asyncio.gather(*(worker(client, i) for i in range(n)))
        return [r for batch in batches for r in batch], time.perf_counter() - started


@app.command()
def soak(
    conversations: Annotated[int, typer.Option(min=1, help="concurrent conversations")] = 50,
    minutes: Annotated[float, typer.Option(min=0.1, help="how long")] = 10.0,
) -> None:
    """Keep N conversations going for M minutes; print one JSON object (latency, errors,
    the server's RSS at start, peak and end, and a sample every 10 s)."""
    from wardround.procs import free_port

    home = Path(tempfile.mkdtemp(prefix="wardround-api-soak-"))
    ready, port = home / "ready.json", free_port()
    argv = [sys.executable, __file__, "serve", str(port), str(home), str(ready)]
    env = {**os.environ, "WARDROUND_HOME": str(home)}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        patients = asyncio.run(_ready(url, process, ready))
        start = _rss_kb(process.pid)
        with MemoryWatch(process.pid) as memory:
            results, wall = asyncio.run(_soak(url, patients, conversations, minutes * 60))
        end = _rss_kb(process.pid)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    report = {
        "conversations": conversations,
        "minutes": minutes,
        **summarize(results, wall),
        "rss_mb": {"start": round(start / 1024, 1), "peak": round(memory.peak / 1024, 1),
                   "end": round(end / 1024, 1)},
        "rss_series_mb": [(t, round(kb / 1024, 1)) for t, kb in memory.series],
        "server_tracebacks": stderr.decode(errors="replace").count("Traceback"),
    }  # fmt: skip
    print(json.dumps(report))


@app.command()
def run(
    conversations: Annotated[int, typer.Option(min=1, help="concurrent conversations")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Run N conversations at once against a fresh API process and report."""
    from wardround.procs import free_port, stop_child

    home = Path(tempfile.mkdtemp(prefix="wardround-api-load-"))
    ready = home / "ready.json"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, __file__, "serve", str(port), str(home), str(ready)]
    env = {**os.environ, "WARDROUND_HOME": str(home)}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        patients = asyncio.run(_ready(url, process, ready))
        baseline, cpu_before = _rss_kb(process.pid), _cpu_s(process.pid)
        with MemoryWatch(process.pid) as memory:
            results, wall = asyncio.run(_load(url, patients, conversations))
        after, cpu = _rss_kb(process.pid), _cpu_s(process.pid) - cpu_before
    finally:
        stop_child(process)
    report = {
        "conversations": conversations,
        **summarize(results, wall),
        "memory_mb": {
            "baseline": round(baseline / 1024, 1),
            "peak": round(memory.peak / 1024, 1),
            "after": round(after / 1024, 1),
        },
        "server_cpu_ms_per_request": round(1000 * cpu / max(len(results), 1), 1),
        "thread_store_mb": round((home / "copilot.sqlite").stat().st_size / 2**20, 2),
        "audit_lines": len((home / "audit.jsonl").read_text().splitlines()),
    }
    if as_json:
        print(json.dumps(report))
        return
    table = Table(title=f"{conversations} concurrent conversations ({report['wall_s']} s)")
    for column in ("request", "n", "errors", "p50 s", "p95 s", "max s", "first event p50 s"):
        table.add_column(column, justify="right")
    for kind, row in report["by_kind"].items():
        table.add_row(kind, str(row["requests"]), str(row["errors"]), str(row["p50_s"]),
                      str(row["p95_s"]), str(row["max_s"]), str(row["first_event_p50_s"]))  # fmt: skip
    console.print(table)
    mem = report["memory_mb"]
    console.print(
        f"{report['requests_per_s']} requests/s; server RSS {mem['baseline']} MB at rest, "
        f"{mem['peak']} MB peak, {mem['after']} MB after; thread store "
        f"{report['thread_store_mb']} MB; {report['audit_lines']} audit lines; server CPU "
        f"{report['server_cpu_ms_per_request']} ms per request (FHIR server included)"
    )
    for error in report["errors"]:
        console.print(f"[red]error:[/] {error}")


if __name__ == "__main__":
    app()
