"""`wardround serve mcp` through the official SDK's own client, over stdio and streamable
HTTP: patient-bound reads with citation ids, a refused cross-patient read, bearer auth, and an
order that is written only after a clinician approves it through the API.

SEKMET on loopback; the MCP server in its own process; the API in this process over the same
thread store (SQLite in a shared home), with the load bench's scripted model.
"""

from __future__ import annotations

import asyncio
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
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from bench.api_load import bench_model
from copilot_fakes import HBA1C_ORDER
from infra import LoopbackFhir, sekmet_on_loopback
from wardround.fhir.client import FhirClient
from wardround.runtime.procs import free_port
from wardround.testing.api_inprocess import ApiHarness, api_harness

TOKEN = "mcp-test-token"
WARDROUND = str(Path(sys.executable).parent / "wardround")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
async def fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LoopbackFhir]:
    async with sekmet_on_loopback(tmp_path_factory.mktemp("sekmet")) as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


def _env(home: Path, fhir: LoopbackFhir, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "WARDROUND_HOME": str(home),
        "WARDROUND_FHIR_BASE_URL": fhir.url,
        "WARDROUND_CHROMA_PATH": str(home / "no-index"),
        **extra,
    }


@pytest.fixture(scope="module")
async def api(home: Path, fhir: LoopbackFhir) -> AsyncIterator[ApiHarness]:
    """The clinician's side: the HTTP API over the thread store the MCP server writes to."""
    client = FhirClient(fhir.url)
    async with api_harness(home, client, bench_model()) as harness:
        yield harness
    await client.aclose()


@pytest.fixture(scope="module")
def http_server(home: Path, fhir: LoopbackFhir) -> Iterator[str]:
    port = free_port()
    argv = [WARDROUND, "serve", "mcp", "--transport", "http", "--port", str(port)]
    argv += ["--patient", fhir.patients[0]]
    env = _env(home, fhir, WARDROUND_API_TOKEN=TOKEN)
    log = home / "mcp-http.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=home, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the MCP server did not start in 60 s"
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stdio_client(home: Path, fhir: LoopbackFhir) -> Client:
    argv = ["serve", "mcp", "--patient", fhir.patients[0], "--user", "dr.mcp"]
    params = StdioServerParameters(command=WARDROUND, args=argv, env=_env(home, fhir), cwd=home)
    return Client(params, read_timeout_seconds=120)


def http_client(url: str, token: str = TOKEN) -> Client:
    headers = {"Authorization": f"Bearer {token}", "X-Wardround-User": "dr.http"}
    transport = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    return Client(transport, read_timeout_seconds=120)


async def _other_patients_record(fhir: LoopbackFhir) -> str:
    client = FhirClient(fhir.url)
    try:
        found = await client.search("Observation", [("patient", fhir.patients[1])], limit=1)
    finally:
        await client.aclose()
    return f"Observation/{found[0]['id']}"


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def _reads(client: Client, fhir: LoopbackFhir) -> None:
    names = {t.name for t in (await client.list_tools()).tools}
    assert {"search_records", "read_record", "create_service_request", "order_status"} <= names
    found = await client.call_tool("search_records", {"resource_type": "Observation", "limit": 3})
    assert not found.is_error, _text(found)
    cited = found.structured_content["citations"]
    assert cited and all(ref.startswith("Observation/") for ref in cited)
    assert all(ref in found.structured_content["text"] for ref in cited)

    own = await client.call_tool("read_record", {"reference": cited[0]})
    assert not own.is_error and own.structured_content["citations"] == [cited[0]]
    other = await _other_patients_record(fhir)
    refused = await client.call_tool("read_record", {"reference": other})
    assert refused.is_error
    assert f"not a record of Patient/{fhir.patients[0]}" in _text(refused)


async def _pending_thread(home: Path, user: str) -> str:
    """The thread of the order the MCP server just proposed (from the audit log)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        audit = home / "audit.jsonl"
        lines = audit.read_text().splitlines() if audit.exists() else []
        for line in reversed(lines):
            entry = json.loads(line)
            if entry["action"] == "propose_order" and entry["user"] == user:
                return str(entry["thread"])
        await asyncio.sleep(0.2)
    raise AssertionError("no order was proposed")


async def _order_waits_for_approval(
    client: Client, api: ApiHarness, fhir: LoopbackFhir, home: Path, user: str
) -> None:
    patient = fhir.patients[0]
    before = len(await fhir.orders(patient))
    waiting = asyncio.create_task(
        client.call_tool("create_service_request", {**HBA1C_ORDER, "wait_s": 90})
    )
    thread = await _pending_thread(home, user)
    pending = (await api.client.get(f"/api/threads/{thread}/approvals")).json()
    assert [p["tool"] for p in pending] == ["create_service_request"]
    await asyncio.sleep(1.0)
    assert not waiting.done(), "the write returned before anyone approved it"
    assert len(await fhir.orders(patient)) == before  # nothing written from MCP alone

    approved = await api.decide(thread, pending[0]["call_id"], action="approve")
    assert approved.status_code == 200, approved.text
    result = await asyncio.wait_for(waiting, 30)
    out = result.structured_content
    assert out["status"] == "written", out
    assert out["thread_id"] == thread and out["citations"][0].startswith("ServiceRequest/")
    orders = await fhir.orders(patient)
    assert len(orders) == before + 1
    assert out["citations"][0] in {f"ServiceRequest/{o['id']}" for o in orders}


async def test_stdio(home: Path, fhir: LoopbackFhir, api: ApiHarness) -> None:
    async with stdio_client(home, fhir) as client:
        await _reads(client, fhir)
        await _order_waits_for_approval(client, api, fhir, home, "dr.mcp")
    lines = [json.loads(x) for x in (home / "audit.jsonl").read_text().splitlines()]
    mine = [e for e in lines if e.get("via") == "mcp" and e["user"] == "dr.mcp"]
    assert {"search_records", "read_record", "propose_order"} <= {e["action"] for e in mine}
    assert any(e.get("refused") for e in mine if e["action"] == "read_record")


async def test_http_needs_the_token(http_server: str) -> None:
    async with httpx.AsyncClient() as plain:
        refused = await plain.post(http_server, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert refused.status_code == 401


async def test_http(home: Path, fhir: LoopbackFhir, api: ApiHarness, http_server: str) -> None:
    async with http_client(http_server) as client:
        await _reads(client, fhir)
        await _order_waits_for_approval(client, api, fhir, home, "dr.http")
