"""`langgraph dev` with our langgraph.json: an EHR QA run, and a copilot thread whose order
waits as an interrupt and is written once after the resume.

The real LangGraph server (langgraph-cli[inmem], blocking calls on its event loop refused as
in development), reached with `langgraph_sdk` on a free port; SEKMET on loopback; the model
an OpenAI-compatible stand-in on loopback whose replies follow from the conversation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra import ORDER_TEXT, LoopbackFhir, scripted_reply, sekmet_on_loopback
from wardround.runtime.procs import free_port
from wardround.testing.chat_simulator import SimulatorServer

REPO = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not LANGGRAPH.exists(), reason="langgraph-cli is not installed"),
]


@pytest.fixture(scope="module")
async def fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LoopbackFhir]:
    async with sekmet_on_loopback(tmp_path_factory.mktemp("sekmet")) as server:
        yield server


def _config(folder: Path) -> Path:
    """Our langgraph.json with its paths made absolute, in a folder of its own (the dev
    server keeps its state beside the config file, not in the checkout)."""
    config = json.loads((REPO / "langgraph.json").read_text())
    config["graphs"] = {
        name: str((REPO / spec.split(":")[0]).resolve()) + ":" + spec.split(":")[1]
        for name, spec in config["graphs"].items()
    }
    config["dependencies"] = [str(REPO)]
    config.pop("env", None)
    path = folder / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def server(fhir: LoopbackFhir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("langgraph-dev")
    port = free_port()
    with SimulatorServer(scripted_reply, latency_s=0.01) as model:
        env = {
            **os.environ,
            "WARDROUND_HOME": str(folder / "home"),
            "WARDROUND_FHIR_BASE_URL": fhir.url,
            "WARDROUND_MODEL_BASE_URL": model.base_url,
            "WARDROUND_MODEL_NAME": "sim",
            "LANGSMITH_TRACING": "false",
            "LANGCHAIN_TRACING_V2": "false",
        }
        argv = [str(LANGGRAPH), "dev", "--no-browser"]
        argv += ["--no-reload", "--port", str(port), "--config", str(_config(folder))]
        log = folder / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, cwd=folder, env=env, stdout=out, stderr=out, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, log)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # its own group: the server and its reloader
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            print(log.read_text()[-3000:])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"langgraph dev exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"langgraph dev did not answer in 120 s: {log.read_text()[-2000:]}")


async def test_lists_both_graphs(server: str) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=server)
    found = await client.assistants.search(limit=20)
    assert {a["graph_id"] for a in found} >= {"copilot", "ehr_qa"}


async def test_ehr_qa_run_answers_with_citations(server: str, fhir: LoopbackFhir) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=server)
    question = {"question": "How old is the patient?", "patient_id": fhir.patients[0]}
    out = await client.runs.wait(None, "ehr_qa", input=question)
    assert isinstance(out, dict) and "__error__" not in out, out
    assert "year" in out.get("answer", ""), out
    assert out["citations"] == [f"Patient/{fhir.patients[0]}"], out


async def test_copilot_order_interrupt_and_resume(server: str, fhir: LoopbackFhir) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=server)
    patient = fhir.patients[1]
    thread = await client.threads.create()
    message = {"role": "user", "content": ORDER_TEXT}
    await client.runs.wait(
        thread["thread_id"], "copilot", input={"patient_id": patient, "messages": [message]}
    )
    state = await client.threads.get_state(thread["thread_id"])
    interrupts = _interrupts(state)
    assert [i["value"]["tool"] for i in interrupts] == ["create_service_request"], state
    assert await fhir.orders(patient) == []  # nothing written while the order waits

    out = await client.runs.wait(
        thread["thread_id"], "copilot", command={"resume": {"action": "approve"}}
    )
    assert "__error__" not in out, out
    state = await client.threads.get_state(thread["thread_id"])
    assert not _interrupts(state) and not state["next"], state
    orders = await fhir.orders(patient)
    assert len(orders) == 1
    assert orders[0]["code"]["coding"][0]["code"] == "4548-4"


def _interrupts(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for task in state.get("tasks", []) for i in task.get("interrupts", [])]
