"""No other patient's record comes out of any entry point over a hostile FHIR server.

The hostile server (`wardround.testing.hostile_fhir`) is served over HTTP in front of SEKMET
(both on loopback ports, in threads of this process), so each entry point builds its own
client from a base URL as it does in use: `wardround ask --json` and `wardround eval run
ehrqa` through typer's runner, the graphs `langgraph dev` serves (`graphs.studio`), and
`wardround serve mcp` as its own process over stdio. The copilot API is
tests/unit/test_api_hostile_fhir.py; the client, tools and chart panel are
test_hostile_fhir_server.py.

The model is the scripted one, answering from the prompt it is sent (`brain`). A reference
is foreign when the hostile server injected it during the test (each test asks about one
patient) and, independently, when the record read straight from SEKMET is another patient's
(`names_another`). Each test also checks that the attack happened and that the drops were
counted or audited.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from langchain_core.messages import BaseMessage, SystemMessage
from mcp import Client, StdioServerParameters
from typer.testing import CliRunner

from fakes import ScriptedChatModel
from wardround.chart.options import NOT_IN_CHART
from wardround.fhir.client import FhirClient
from wardround.fhir.records import fetch_records
from wardround.graphs.copilot.audit import DROPPED
from wardround.runtime.procs import free_port
from wardround.testing.hostile_fhir import HostileServer, hostile_server, names_another
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sample_charts import carebundle_charts, handmade_chart
from wardround.testing.sekmet_inprocess import load_chart, sekmet_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WARDROUND = str(Path(sys.executable).parent / "wardround")
A1C = "Hemoglobin A1c/Hemoglobin.total in Blood"
LINE_REF = re.compile(r"^([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}) ", re.M)  # a record line's


# ------------------------------------------------------------------ the servers


@dataclass
class Front:
    """SEKMET (`upstream`) with the charts loaded, and the hostile server in front of it."""

    upstream: str
    hostile: HostileServer
    patients: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.hostile.url

    def mark(self) -> int:
        return len(self.hostile.injected)

    def since(self, mark: int) -> set[str]:
        """What the hostile server slipped in after `mark`."""
        return set(self.hostile.injected[mark:])

    def foreign(self, refs: Sequence[str], pid: str) -> list[str]:
        """The references whose record, read straight from SEKMET, is not `pid`'s."""
        with httpx.Client(base_url=self.upstream, timeout=60) as http:
            return [r for r in dict.fromkeys(refs) if names_another(http.get(r).json(), pid)]


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    port = free_port()
    app = sekmet_app(tmp_path_factory.mktemp("sekmet"), base_url=f"http://127.0.0.1:{port}/fhir")
    with LoopbackServer(app, port=port) as sekmet:
        upstream = f"{sekmet.url}/fhir"
        charts = {**carebundle_charts(), "handmade": handmade_chart()}

        async def load() -> dict[str, str]:
            async with FhirClient(upstream, timeout=300) as loader:
                return {label: await load_chart(loader, c) for label, c in charts.items()}

        patients = asyncio.run(load())
        with hostile_server(upstream) as hostile:
            yield Front(upstream, hostile, patients)


@pytest.fixture
def env(front: Front, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings from the environment, as the entry points read them: the hostile server's
    base URL, a fresh home (returned), no index; the scripted model's seams patched in."""
    home = tmp_path / "home"
    monkeypatch.setenv("WARDROUND_HOME", str(home))
    monkeypatch.setenv("WARDROUND_FHIR_BASE_URL", front.url)
    monkeypatch.setenv("WARDROUND_CHROMA_PATH", str(tmp_path / "no-index"))
    monkeypatch.setenv("WARDROUND_COPILOT_CHART", "planner")
    monkeypatch.chdir(tmp_path)  # no .env from elsewhere
    from wardround.agents import embedded
    from wardround.tools import text_embeddings

    monkeypatch.setattr(embedded, "ensure_model_server", lambda settings: None)
    monkeypatch.setattr(text_embeddings, "minilm_similarity", lambda: word_overlap)
    return home


# ------------------------------------------------------------------ the model


def word_overlap(question: str, labels: Sequence[str]) -> np.ndarray:
    """A stand-in for MiniLM: shared lower-case words."""
    words = _words(question)
    return np.array([len(words & _words(label)) / 10 for label in labels])


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


KINDS = [
    ("how many", "how_many"), ("up or down", "trend"), ("comparing", "trend"),
    ("allerg", "list_current"), ("medications", "list_current"), ("since", "list_since_date"),
    ("old", "age"), ("encounter", "last_visit"), ("most recent", "latest_value"),
    ("latest", "latest_value"),
]  # fmt: skip


def brain(messages: list[BaseMessage]) -> str:
    """The scripted model's reply to each prompt the copilot and the planner send."""
    system = " ".join(str(m.content) for m in messages if isinstance(m, SystemMessage))
    last = str(messages[-1].content)
    question = last.rsplit("Question: ", 1)[-1].strip()
    options = [line[2:] for line in last.splitlines() if line.startswith("- ")]
    if "- answer_from_chart:" in system:
        return json.dumps({"action": "answer_from_chart"})
    if last.startswith("Options:"):
        kind = next((k for words, k in KINDS if words in question.lower()), "other")
        return json.dumps({"kind": kind, "about": nearest(question, options)})
    if last.startswith("Recorded in the chart:"):
        return json.dumps({"about": nearest(question, options)})
    if last.startswith("Records ("):
        return json.dumps({"citations": LINE_REF.findall(last)[:2]})
    if last.startswith("Patient:"):
        return json.dumps({"answer": "As the cited records say."})
    raise AssertionError(f"a prompt the scripted model does not know: {last[:300]}")


def nearest(question: str, options: list[str]) -> str:
    named = [o for o in options if o != NOT_IN_CHART]
    best = max(named, key=lambda o: len(_words(question) & _words(o)), default=NOT_IN_CHART)
    return best


def scripted() -> ScriptedChatModel:
    model = ScriptedChatModel(replies=[brain] * 200)
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    return model


def sent(model: ScriptedChatModel, calls: list[dict[str, Any]] | None = None) -> str:
    """Everything sent to the model (in `calls`, default all): messages and each call's
    arguments (schemas, whose enums list references)."""
    chosen = model.calls if calls is None else calls
    return json.dumps(
        [[str(m.content) for m in call["messages"]] + [call.get("kwargs")] for call in chosen],
        default=str,
    )


# ------------------------------------------------------------------ checks


def leaked(injected: set[str], *values: Any) -> set[str]:
    """The injected references written anywhere in `values` (as JSON text)."""
    text = json.dumps(values, default=str)
    return {ref for ref in injected if re.search(re.escape(ref) + r"(?![A-Za-z0-9\-.])", text)}


def audit_lines(home: Path) -> list[dict[str, Any]]:
    path = home / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def check_dropped(lines: list[dict[str, Any]], patients: set[str], injected: set[str]) -> None:
    """Drops were audited, for these patients only, and each was something injected."""
    dropped = [x for x in lines if x["action"] == DROPPED]
    assert dropped and {x["patient"] for x in dropped} == patients
    assert {f"{x['resource_type']}/{x['resource_id']}" for x in dropped} <= injected


class Clients:
    """The FHIR clients an entry point builds from settings (to read their drop counts)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[FhirClient] = []
        build = FhirClient.from_settings

        def from_settings(cls: type[FhirClient], *args: Any, **kwargs: Any) -> FhirClient:
            self.made.append(build(*args, **kwargs))
            return self.made[-1]

        monkeypatch.setattr(FhirClient, "from_settings", classmethod(from_settings))

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.made)


# ------------------------------------------------------------------ the server itself


def test_the_hostile_server_serves_from_its_command_line(front: Front, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "hostile.log"
    argv = [sys.executable, "-m", "wardround.testing.hostile_fhir", "serve"]
    argv += ["--upstream", front.upstream, "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=out)
    url, pid = f"http://127.0.0.1:{port}/fhir", front.patients["handmade"]
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the hostile server did not start in 30 s"
            try:
                httpx.get(f"{url}/metadata", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        raw = httpx.get(f"{url}/Observation", params={"patient": pid}, timeout=60).json()
        mixed = [e["resource"] for e in raw["entry"] if names_another(e["resource"], pid)]

        async def through_the_client() -> tuple[list[dict[str, Any]], int]:
            async with FhirClient(url, backoff_s=0) as client:
                return await fetch_records(client, pid, "Observation"), client.dropped

        own, dropped = asyncio.run(through_the_client())
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert mixed, "the served server mixes other patients' records into a patient search"
    assert own and not [r for r in own if names_another(r, pid)] and dropped > 0


# ------------------------------------------------------------------ ask


def test_ask(front: Front, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wardround.agents import models
    from wardround.cli import app
    from wardround.graphs import ehr_qa

    model, clients, results = scripted(), Clients(monkeypatch), []
    monkeypatch.setattr(models, "make_chat_model", lambda settings: model)
    answer_question = ehr_qa.answer_question

    async def keeping(*args: Any, **kwargs: Any) -> Any:
        results.append(await answer_question(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(ehr_qa, "answer_question", keeping)
    pid, mark = front.patients["handmade"], front.mark()
    outs = []
    for question in ("latest hemoglobin a1c?", "What do the clinical notes say?"):
        ran = CliRunner().invoke(app, ["ask", question, "--patient", pid, "--json"])
        assert ran.exit_code == 0, ran.output
        outs.append(json.loads(ran.stdout))
    injected = front.since(mark)
    assert injected, "the hostile server slipped other patients' records in"
    assert outs[0]["answer"] == "6.1 % on 2023-11-12." and outs[0]["citations"]
    assert [r.plan for r in results] == [
        "latest_value: Hemoglobin A1c/Hemoglobin.total in Blood [Observation]",
        "other: all clinical notes and documents [DocumentReference]",
    ]
    assert results[1].retrieved and results[1].citations  # records shown to the model
    assert len(model.calls) == 4  # two plans; the notes' citations and answer (a1c: computed)
    seen = [(r.answer, r.citations, r.retrieved, r.messages) for r in results]
    assert not leaked(injected, outs, seen, sent(model))
    refs = [ref for r in results for ref in (*r.citations, *r.retrieved)]
    assert front.foreign(refs, pid) == []
    assert clients.dropped > 0  # no audit log for `ask`: the client's own count


# ------------------------------------------------------------------ eval run


def test_eval_run(front: Front, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wardround.cli import app
    from wardround.evals import suite

    model, clients = scripted(), Clients(monkeypatch)
    monkeypatch.setattr(suite, "default_model", lambda settings, preset: model)
    mark, out = front.mark(), env.parent / "runs"
    argv = ["eval", "run", "ehrqa", "--model", "scripted", "--limit", "4", "--concurrency", "1"]
    argv += ["--out", str(out), "--option", "patients=1", "--option", f"fhir_url={front.url}"]
    ran = CliRunner().invoke(app, argv)
    assert ran.exit_code == 0, ran.output
    injected = front.since(mark)
    assert injected, "the hostile server slipped other patients' records in"
    samples_file = next((out / "ehrqa").glob("samples*.jsonl")).read_text()
    samples = [json.loads(x) for x in samples_file.splitlines()]
    results_file = (out / "ehrqa" / "scripted" / "results.jsonl").read_text()
    records = [json.loads(x) for x in results_file.splitlines()]
    (pid,) = {s["metadata"]["patient_id"] for s in samples}
    assert len(records) == 4 and not [r for r in records if r.get("error")], records
    assert [r for r in records if r["trace"]["retrieved"]]
    saved = [p.read_text() for p in (out / "ehrqa" / "scripted").iterdir() if p.is_file()]
    assert not leaked(injected, samples_file, saved, sent(model))
    refs = [ref for s in samples for ref in s["target"].get("evidence", [])]
    refs += [ref for r in records for ref in (*r["trace"]["citations"], *r["trace"]["retrieved"])]
    assert refs and front.foreign(refs, pid) == []
    assert clients.dropped > 0  # no audit log for an eval run: the client's own count


# ------------------------------------------------------------------ langgraph dev


async def test_the_studio_graphs(front: Front, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wardround.agents import models
    from wardround.graphs import studio
    from wardround.graphs.copilot import graph as copilot_graph

    model = scripted()
    monkeypatch.setattr(models, "make_chat_model", lambda settings: model)
    monkeypatch.setattr(studio, "_BUILT", {})
    monkeypatch.setattr(copilot_graph, "_served", [])  # the context the factory serves with
    qa_graph, copilot = await studio.make_ehr_qa(), await studio.make_copilot()  # as served
    fhir = studio._BUILT["parts"][2].fhir
    asked, chatted = front.patients["diabetes"], front.patients["hypertension"]
    try:
        mark = front.mark()
        qa = await qa_graph.ainvoke({"question": "What do the diagnostic reports say?",
                                     "patient_id": asked})  # fmt: skip
        qa_injected, qa_calls = front.since(mark), len(model.calls)
        mark = front.mark()
        turn = {
            "patient_id": chatted,
            "messages": [{"role": "user", "content": "Which conditions are recorded?"}],
        }
        config = {"configurable": {"thread_id": "studio-1", "user": "dr.studio"}}
        state = await copilot.ainvoke(turn, config)
        chat_injected = front.since(mark)
    finally:
        await fhir.aclose()
    assert qa_injected and chat_injected, "the hostile server slipped other patients' in"
    assert qa.get("error") is None and qa["retrieved"] and qa["citations"], qa
    assert not leaked(qa_injected, qa) and front.foreign(qa["retrieved"], asked) == []
    messages = [m.model_dump() for m in state["messages"]]
    cited = [r for m in state["messages"] for r in (getattr(m, "artifact", None) or [])]
    assert cited and not leaked(chat_injected, messages) and front.foreign(cited, chatted) == []
    assert not leaked(qa_injected, sent(model, model.calls[:qa_calls]))
    assert not leaked(chat_injected, sent(model, model.calls[qa_calls:]))
    lines = audit_lines(env)
    reads = [ref for x in lines if x.get("kind") == "read" for ref in x["resources"]]
    assert reads and not leaked(chat_injected, reads)
    check_dropped(lines, {asked, chatted}, qa_injected | chat_injected)


# ------------------------------------------------------------------ MCP


SEARCHED = ("Observation", "Condition", "MedicationRequest", "MedicationStatement",
            "AllergyIntolerance", "Procedure", "Encounter", "DiagnosticReport", "Immunization",
            "DocumentReference")  # fmt: skip
MCP_READS: dict[str, list[dict[str, Any]]] = {
    "patient_manifest": [{}, {"resource_type": "Observation"}],
    "search_records": [{"resource_type": t, "limit": 50} for t in SEARCHED],
    "read_record": [],  # the records search_records cited, below
    "latest_value": [{"test": A1C}, {"test": "Tobacco smoking status"}],
    "value_on_date": [{"test": A1C, "date": "2022-05-01"}],
    "values_in_window": [{"test": A1C}],
    "current_list": [{"items": i} for i in ("medications", "conditions", "allergies")],
    "items_since": [{"items": "conditions", "date": "2000-01-01"}],
    "ever_had": [
        {"item": "Diabetes mellitus type 2 [Condition]"},
        {"item": "Colonoscopy [Procedure]"},
    ],
    "age": [{}],
    "last_visit": [{}],
    "count_records": [{"record_type": "Observation"}],
}


async def test_mcp(front: Front, env: Path) -> None:
    pid, mark = front.patients["handmade"], front.mark()
    variables = {
        **os.environ, "WARDROUND_HOME": str(env), "WARDROUND_FHIR_BASE_URL": front.url,
        "WARDROUND_CHROMA_PATH": os.environ["WARDROUND_CHROMA_PATH"],
    }  # fmt: skip
    argv = ["serve", "mcp", "--patient", pid, "--user", "dr.hostile"]
    env.mkdir(parents=True, exist_ok=True)
    params = StdioServerParameters(command=WARDROUND, args=argv, env=variables, cwd=env)
    results: list[Any] = []
    async with Client(params, read_timeout_seconds=120) as client:
        tools = (await client.list_tools()).tools
        reads = {t.name for t in tools if t.annotations and t.annotations.read_only_hint}
        assert reads == set(MCP_READS), "a read tool this test does not call"
        for name, calls in MCP_READS.items():
            for args in calls:
                results.append(await client.call_tool(name, args))
        searched = [
            r.structured_content["citations"]
            for r in results[2 : 2 + len(SEARCHED)]
            if not r.is_error
        ]
        for ref in [refs[0] for refs in searched if refs] + [f"Patient/{pid}"]:
            results.append(await client.call_tool("read_record", {"reference": ref}))
    injected = front.since(mark)
    assert injected, "the hostile server slipped other patients' records in"
    shown = [(r.structured_content, [getattr(c, "text", "") for c in r.content]) for r in results]
    assert not leaked(injected, shown)
    ok = [r for r in results if not r.is_error]
    assert len(ok) == len(results), [c.text for r in results if r.is_error for c in r.content]
    cited = [ref for r in ok for ref in r.structured_content["citations"]]
    assert len(cited) > 10 and front.foreign(cited, pid) == []
    lines = audit_lines(env)
    mine = [x for x in lines if x.get("via") == "mcp" and x["action"] in MCP_READS]
    assert len(mine) == len(results)
    assert not leaked(injected, [x.get("resources") for x in mine])
    check_dropped(lines, {pid}, injected)
