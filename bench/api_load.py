"""Load on the copilot API: N concurrent conversations, each a question, an order, an approval.

The servers run as they would in a hospital: SEKMET holding small synthetic charts as its own
process, the API under uvicorn (one process with the default SQLite thread store, or several
workers sharing a private Postgres cluster), the audit log. The model is a fast scripted
stand-in that streams JSON replies, so the numbers measure the API, LangGraph, the thread
store and FHIR, not a language model. Reported: errors, latency per request (p50/p95/max,
time to the first event and to `done`), throughput, the API's memory, and the CPU each
process spent per request (unlike latency, that does not depend on what else runs).

    python -m bench.api_load run                      # 50 conversations, one API process
    python -m bench.api_load run --workers 2 --store postgres
    python -m bench.api_load run --conversations 100 --json
    python -m bench.api_load soak --conversations 50 --minutes 10   # memory over time
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from langchain_core.messages import BaseMessage
from rich.console import Console
from rich.table import Table

from wardround.testing.api_process import WORKER_HEADER, ApiProcess, running_api
from wardround.testing.scripted_chat import ScriptedChatModel

app = typer.Typer(help=__doc__, add_completion=False)
console = Console()
_REF = re.compile(r"\b(?:Observation|Condition|MedicationRequest|Encounter)/[A-Za-z0-9\-.]{1,64}")
FACTORY = "bench.api_load:bench_app"
ORDER = {"code": "4548-4", "system": "http://loinc.org", "display": "Hemoglobin A1c"}


def bench_reply(messages: Sequence[BaseMessage]) -> str:
    """The reply that follows from the conversation: a clinician's question -> search, an
    order request -> create_service_request, a tool result -> a final answer citing it."""
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


def bench_model() -> ScriptedChatModel:
    """The API's model in the bench: `bench_reply`, streamed 8 characters at a time."""
    return ScriptedChatModel(respond=bench_reply, chunk_chars=8)


# ------------------------------------------------------------------ the servers


def bench_app() -> Any:
    """The API for `uvicorn --factory`: settings from the environment (WARDROUND_HOME, the FHIR
    URL, the thread store), the scripted model; any worker can take any request, and names
    itself in a response header."""
    from wardround.server.app import create_app
    from wardround.settings import Settings

    # The scripted model calls the raw FHIR reads: the copilot's free-loop mode.
    app = create_app(Settings(copilot_chart="tools"), model=bench_model(), extra_tools=[])

    @app.middleware("http")
    async def name_worker(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers[WORKER_HEADER] = str(os.getpid())
        return response

    return app


@dataclass
class Servers:
    """The processes under load: the API (one uvicorn process, or a master and its workers),
    SEKMET as its own process (as a hospital's FHIR server is), Postgres when asked for."""

    api: ApiProcess
    fhir_pid: int
    postgres_pid: int | None
    patients: list[str]
    home: Path

    def cpu_s(self) -> dict[str, float]:
        out = {"api": _tree_cpu_s(self.api.process.pid), "fhir": _tree_cpu_s(self.fhir_pid)}
        if self.postgres_pid is not None:
            out["postgres"] = _tree_cpu_s(self.postgres_pid)
        return out


async def _load_charts(fhir_url: str) -> list[str]:
    from wardround.fhir.client import FhirClient
    from wardround.testing.sample_charts import carebundle_charts, handmade_chart
    from wardround.testing.sekmet_inprocess import load_chart

    client = FhirClient(fhir_url)
    try:
        charts = [*carebundle_charts().values(), handmade_chart()]
        return [await load_chart(client, chart) for chart in charts]
    finally:
        await client.aclose()


@contextmanager
def servers(workers: int = 1, store: str = "sqlite") -> Iterator[Servers]:
    """SEKMET with small charts, the thread store, and the API, all stopped at the end."""
    from wardround.runtime.procs import free_port, stop_service
    from wardround.settings import Settings
    from wardround.stack.fhir_server import ensure_fhir_server
    from wardround.testing.postgres import postgres_cluster

    home = Path(tempfile.mkdtemp(prefix="wardround-api-load-"))
    settings = Settings(home=home, fhir_port=free_port())
    try:
        fhir = ensure_fhir_server(settings)
        patients = asyncio.run(_load_charts(fhir.base_url))
        with ExitStack() as stack:
            env = {"WARDROUND_FHIR_BASE_URL": fhir.base_url}
            postgres_pid = None
            if store == "postgres":
                cluster = stack.enter_context(postgres_cluster())
                env["WARDROUND_CHECKPOINT_URL"] = cluster.url
                postgres_pid = cluster.pid()
            api = stack.enter_context(running_api(FACTORY, home, env, workers=workers))
            yield Servers(api, fhir.pid, postgres_pid, patients, home)
    finally:
        stop_service(settings.run_dir, "fhir")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn's workers, Postgres's backends)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += _children(current)
    return found


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used: the server's cost per request, which
    unlike latency does not depend on what else the machine is doing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    return sum(_cpu_s(p) for p in _tree(pid))


def _rss_kb(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total


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


WORKERS = Annotated[int, typer.Option(min=1, help="API worker processes (uvicorn --workers)")]
STORE = Annotated[
    str,
    typer.Option(
        help="thread store: sqlite, postgres (a private cluster), auto (postgres for 2+ workers)"
    ),
]


def _store(workers: int, store: str) -> str:
    if store == "auto":
        return "postgres" if workers > 1 else "sqlite"
    if store not in ("sqlite", "postgres"):
        raise typer.BadParameter("--store is sqlite, postgres or auto")
    if workers > 1 and store != "postgres":
        raise typer.BadParameter("several workers share threads through Postgres: --store postgres")
    return store


@app.command()
def soak(
    conversations: Annotated[int, typer.Option(min=1, help="concurrent conversations")] = 50,
    minutes: Annotated[float, typer.Option(min=0.1, help="how long")] = 10.0,
    workers: WORKERS = 1,
    store: STORE = "auto",
) -> None:
    """Keep N conversations going for M minutes; print one JSON object (latency, errors,
    the API's RSS at start, peak and end, and a sample every 10 s)."""
    store = _store(workers, store)
    with servers(workers, store) as up:
        start = _rss_kb(up.api.process.pid)
        with MemoryWatch(up.api.process.pid) as memory:
            results, wall = asyncio.run(_soak(up.api.url, up.patients, conversations, minutes * 60))
        end = _rss_kb(up.api.process.pid)
        log = up.api.log
    report = {
        "conversations": conversations,
        "minutes": minutes,
        "workers": workers,
        **summarize(results, wall),
        "rss_mb": {"start": round(start / 1024, 1), "peak": round(memory.peak / 1024, 1),
                   "end": round(end / 1024, 1)},
        "rss_series_mb": [(t, round(kb / 1024, 1)) for t, kb in memory.series],
        "server_tracebacks": log.read_text(errors="replace").count("Traceback"),
    }  # fmt: skip
    print(json.dumps(report))


@app.command()
def run(
    conversations: Annotated[int, typer.Option(min=1, help="concurrent conversations")] = 50,
    workers: WORKERS = 1,
    store: STORE = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Run N conversations at once against fresh servers and report."""
    store = _store(workers, store)
    with servers(workers, store) as up:
        baseline, cpu_before = (
            _rss_kb(up.api.process.pid),
            {**up.cpu_s(), "client": _cpu_s(os.getpid())},
        )
        with MemoryWatch(up.api.process.pid) as memory:
            results, wall = asyncio.run(_load(up.api.url, up.patients, conversations))
        after, cpu_after = (
            _rss_kb(up.api.process.pid),
            {**up.cpu_s(), "client": _cpu_s(os.getpid())},
        )
        audit = (up.home / "audit.jsonl").read_text().splitlines()
        store_file = up.home / "copilot.sqlite"
        store_mb = store_file.stat().st_size / 2**20 if store_file.exists() else None
    per_request = {
        name: round(1000 * (cpu_after[name] - cpu_before[name]) / max(len(results), 1), 1)
        for name in cpu_before
    }
    report = {
        "conversations": conversations,
        "workers": workers,
        "store": store,
        **summarize(results, wall),
        "memory_mb": {
            "baseline": round(baseline / 1024, 1),
            "peak": round(memory.peak / 1024, 1),
            "after": round(after / 1024, 1),
        },
        "server_cpu_ms_per_request": per_request["api"],
        "cpu_ms_per_request": per_request,
        "thread_store_mb": round(store_mb, 2) if store_mb is not None else None,
        "audit_lines": len(audit),
    }
    if as_json:
        print(json.dumps(report))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    title = (f"{report['conversations']} concurrent conversations, {report['workers']} API "
             f"worker(s), {report['store']} threads ({report['wall_s']} s)")  # fmt: skip
    table = Table(title=title)
    for column in ("request", "n", "errors", "p50 s", "p95 s", "max s", "first event p50 s"):
        table.add_column(column, justify="right")
    for kind, row in report["by_kind"].items():
        table.add_row(kind, str(row["requests"]), str(row["errors"]), str(row["p50_s"]),
                      str(row["p95_s"]), str(row["max_s"]), str(row["first_event_p50_s"]))  # fmt: skip
    console.print(table)
    mem, cpu = report["memory_mb"], report["cpu_ms_per_request"]
    console.print(
        f"{report['requests_per_s']} requests/s; API RSS {mem['baseline']} MB at rest, "
        f"{mem['peak']} MB peak, {mem['after']} MB after; {report['audit_lines']} audit "
        "lines; CPU ms per request: " + ", ".join(f"{k} {v}" for k, v in cpu.items())
    )
    for error in report["errors"]:
        console.print(f"[red]error:[/] {error}")


if __name__ == "__main__":
    app()
