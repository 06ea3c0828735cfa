"""Copilot threads in Postgres: a pending order survives an API restart (and connections the
server killed), and several uvicorn workers share threads with each order written once.

A private PostgreSQL cluster (initdb/pg_ctl on a free port), SEKMET on loopback and the API
in real uvicorn processes; the model is the load bench's scripted one (its replies follow from
the conversation, so any worker can take any request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra import (
    ORDER_TEXT,
    ApiProcess,
    LoopbackFhir,
    call,
    fresh_connections,
    running_api,
    sekmet_on_loopback,
)
from wardround.graphs.copilot.orders import ORDER_SYSTEM
from wardround.testing.postgres import PostgresCluster, postgres_bin, postgres_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed"),
]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
async def fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LoopbackFhir]:
    async with sekmet_on_loopback(tmp_path_factory.mktemp("sekmet")) as server:
        yield server


@pytest.fixture(scope="module")
def workers(
    pg: PostgresCluster, fhir: LoopbackFhir, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """The API under uvicorn with three worker processes sharing the Postgres thread store."""
    home = tmp_path_factory.mktemp("workers")
    with running_api(home, api_env(pg, fhir), workers=3) as api:
        yield api


def api_env(pg: PostgresCluster, fhir: LoopbackFhir, **extra: str) -> dict[str, str]:
    return {
        "WARDROUND_CHECKPOINT_URL": pg.url,
        "WARDROUND_FHIR_BASE_URL": fhir.url,
        "WARDROUND_CHECKPOINT_POOL_SIZE": "3",
        **extra,
    }


async def test_pending_order_survives_restart_and_killed_connections(
    pg: PostgresCluster, fhir: LoopbackFhir, tmp_path: Path
) -> None:
    patient = fhir.patients[0]
    env = api_env(pg, fhir)
    with running_api(tmp_path, env) as api:
        async with fresh_connections(api.url) as client:
            created = await call(client, "/api/threads", {"patient_id": patient})
            assert created.status == 201, created.body
            thread = created.body["thread_id"]
            asked = await call(client, f"/api/threads/{thread}/messages", {"content": ORDER_TEXT})
            assert asked.kinds()[-1] == "done", asked.events
            call_id = asked.first("approval_required")["call_id"]
    assert await fhir.orders(patient) == []  # nothing written before approval

    with running_api(tmp_path, env) as api:
        async with fresh_connections(api.url) as client:
            pending = await call(client, f"/api/threads/{thread}/approvals")
            assert [p["call_id"] for p in pending.body] == [call_id]
            # What an idle timeout on the server or a proxy does to pooled connections.
            killed = pg.sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = 'wardround' AND pid <> pg_backend_pid()"
            )
            assert int(killed) >= 1
            approved = await call(
                client, f"/api/threads/{thread}/approvals/{call_id}", {"action": "approve"}
            )
            assert approved.status == 200
            assert approved.kinds()[-1] == "done", approved.events
            assert approved.first("done")["status"] == "complete"
            again = await call(
                client, f"/api/threads/{thread}/approvals/{call_id}", {"action": "approve"}
            )
            assert again.status == 409
    assert len(await fhir.orders(patient)) == 1


async def _conversation(client: httpx.AsyncClient, patient: str) -> dict[str, Any]:
    created = await call(client, "/api/threads", {"patient_id": patient})
    assert created.status == 201, created.body
    thread = created.body["thread_id"]
    base = f"/api/threads/{thread}"
    asked = await call(client, f"{base}/messages", {"content": ORDER_TEXT})
    assert asked.status == 200 and asked.kinds()[-1] == "done", asked.events
    call_id = asked.first("approval_required")["call_id"]
    approved = await call(client, f"{base}/approvals/{call_id}", {"action": "approve"})
    assert approved.status == 200, approved.body
    assert approved.first("done")["status"] == "complete", approved.events
    state = await call(client, base)
    return {
        "thread": thread,
        "workers": [created.worker, asked.worker, approved.worker, state.worker],
        "status": state.body["status"],
    }


async def test_several_workers_share_threads_and_write_each_order_once(
    workers: ApiProcess, fhir: LoopbackFhir
) -> None:
    patient = fhir.patients[1]
    started = time.perf_counter()
    async with fresh_connections(workers.url) as client:
        runs = await asyncio.gather(*(_conversation(client, patient) for _ in range(8)))
    elapsed = time.perf_counter() - started
    workers = {w for run in runs for w in run["workers"]}
    crossed = [run for run in runs if len(set(run["workers"])) > 1]
    print(f"8 conversations over {len(workers)} workers in {elapsed:.1f} s; {len(crossed)} crossed")
    assert len(workers) >= 2, "every request landed on one worker"
    assert crossed, "no thread was continued on another worker than the one that started it"
    assert all(run["status"] == "idle" for run in runs)
    orders = await fhir.orders(patient)
    assert len(orders) == len(runs)  # one order per thread, none twice
    keys = {i["value"] for o in orders for i in o["identifier"] if i["system"] == ORDER_SYSTEM}
    assert len(keys) == len(runs)


async def test_approvals_sent_to_several_workers_at_once_write_one_order(
    workers: ApiProcess, fhir: LoopbackFhir
) -> None:
    """A double click whose two requests reach two workers: one order on the server."""
    patient = fhir.patients[2]
    async with fresh_connections(workers.url) as client:
        created = await call(client, "/api/threads", {"patient_id": patient})
        base = f"/api/threads/{created.body['thread_id']}"
        asked = await call(client, f"{base}/messages", {"content": ORDER_TEXT})
        call_id = asked.first("approval_required")["call_id"]
        path = f"{base}/approvals/{call_id}"
        replies = await asyncio.gather(
            *(call(client, path, {"action": "approve"}) for _ in range(6))
        )
    print("approvals:", [(r.status, r.worker) for r in replies])
    assert any(r.status == 200 for r in replies)
    assert len(await fhir.orders(patient)) == 1
