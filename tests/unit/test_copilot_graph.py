"""The copilot graph on a real in-process SEKMET with scripted models: answers and citations,
approval before any write, reject/edit, writes that happen once, persistence, bounds."""

from __future__ import annotations

import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langgraph.types import Command

from copilot_fakes import HBA1C_ORDER, call, final, hba1c_answer_model
from fakes import ScriptedChatModel
from fhir_fixtures import FhirFixture, hba1c_refs
from wardround.fhir.client import escape_value
from wardround.graphs.copilot import (
    ORDER_SYSTEM,
    AuditLog,
    CopilotTools,
    copilot_graph,
    open_checkpointer,
    order_key,
    run_events,
)
from wardround.graphs.copilot.checkpoint import CheckpointConfigError, check_checkpointer
from wardround.graphs.copilot.events import partial_answer
from wardround.graphs.copilot.toolset import model_schema
from wardround.settings import Settings
from wardround.testing.api_inprocess import first, kinds
from wardround.tools.fhir.writes import create_once

pytestmark = pytest.mark.asyncio(loop_scope="session")
# These tests drive the copilot's free tool loop (their scripted models call the raw reads);
# the planner route is tested in test_copilot_chart.py.
copilot_graph = partial(copilot_graph, chart="tools")


async def collect(graph: Any, payload: Any, config: dict[str, Any]) -> list[dict[str, Any]]:
    return [e async for e in run_events(graph, payload, config)]


def config(user: str = "dr.test") -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex, "user": user}}


async def orders_with_key(fhir: FhirFixture, key: str) -> list[dict[str, Any]]:
    return await fhir.client.search(
        "ServiceRequest", [("identifier", f"{ORDER_SYSTEM}|{escape_value(key)}")]
    )


async def service_requests(fhir: FhirFixture, patient_id: str) -> list[dict[str, Any]]:
    return await fhir.client.search("ServiceRequest", {"patient": patient_id})


async def propose_order(
    fhir: FhirFixture, tmp_path: Path, replies_after: list[str]
) -> tuple[Any, dict[str, Any], dict[str, Any], ScriptedChatModel]:
    """A thread whose model proposes HBA1C_ORDER; returns (graph, config, approval, model)."""
    model = ScriptedChatModel(
        replies=[call("create_service_request", **HBA1C_ORDER), *replies_after]
    )
    saver = InMemory.get()
    graph = copilot_graph(model, CopilotTools(fhir.client), checkpointer=saver)
    cfg = config()
    events = await collect(
        graph,
        {"messages": [("human", "order an HbA1c")], "patient_id": fhir.patients["handmade"]},
        cfg,
    )
    assert kinds(events) == ["tool_call", "approval_required", "done"]
    assert first(events, "done") == {"status": "awaiting_approval"}
    return graph, cfg, first(events, "approval_required"), model


class InMemory:
    @staticmethod
    def get() -> Any:
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver()


# ------------------------------------------------------------------ answers


async def test_answer_streams_tokens_and_cites_retrieved_records(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    refs = await hba1c_refs(fhir)
    reply = 'HbA1c 6.1 % on 2023-11-12, down from 7.4 %. "Improving".'
    model = hba1c_answer_model(reply, refs[:2], limit=5)
    audit = AuditLog(tmp_path / "audit.jsonl")
    graph = copilot_graph(
        model, CopilotTools(fhir.client), checkpointer=InMemory.get(), audit=audit
    )
    cfg = config("dr.streams")
    events = await collect(
        graph,
        {"messages": [("human", "latest HbA1c?")], "patient_id": fhir.patients["handmade"]},
        cfg,
    )
    names = kinds(events)
    assert names[:2] == ["tool_call", "tool_result"]
    assert names[-2:] == ["answer", "done"]
    tokens = [e["data"]["text"] for e in events if e["event"] == "token"]
    assert len(tokens) > 3, "the answer arrives in pieces"
    answer = first(events, "answer")
    assert (
        "".join(tokens)
        == answer["text"]
        == 'HbA1c 6.1 % on 2023-11-12, down from 7.4 %. "Improving".'
    )
    assert answer["citations"] == refs[:2]
    assert set(refs) <= set(first(events, "tool_result")["refs"])
    assert first(events, "done") == {"status": "complete"}
    # the audit names who read which records of whom
    reads = [e for e in audit.entries() if e["action"] == "search_records"]
    assert reads and reads[0]["user"] == "dr.streams"
    assert reads[0]["patient"] == fhir.patients["handmade"]
    assert set(refs) <= set(reads[0]["resources"])


async def test_citations_are_limited_to_retrieved_records(fhir: FhirFixture) -> None:
    refs = await hba1c_refs(fhir)
    model = ScriptedChatModel(
        replies=[
            call("search_records", resource_type="Observation", code="4548-4"),
            final("HbA1c 6.1 %", ["Observation/made-up"]),  # refused by the answer schema
            final("HbA1c 6.1 %", refs[:1]),
        ]
    )
    graph = copilot_graph(model, CopilotTools(fhir.client), checkpointer=InMemory.get())
    events = await collect(
        graph,
        {"messages": [("human", "a1c?")], "patient_id": fhir.patients["handmade"]},
        config(),
    )
    assert first(events, "answer")["citations"] == refs[:1]
    repair = model.calls[-1]["messages"][-1].content
    assert "made-up" not in first(events, "answer")["text"] and "citations" in repair


async def test_partial_answer_decodes_a_growing_final_object() -> None:
    raw = '{"action": "final_answer", "answer": "K 3.1 mmol/L\\nlow \\"watch\\" caf\\u00e9", "citations": []}'
    seen = [partial_answer(raw[:n]) for n in range(len(raw) + 1)]
    decoded = [s for s in seen if s is not None]
    assert decoded[-1] == 'K 3.1 mmol/L\nlow "watch" café'
    assert all(decoded[i + 1].startswith(decoded[i]) for i in range(len(decoded) - 1))
    assert partial_answer('{"action": "search_records", "args": {}}') is None
    assert (
        partial_answer("Plain text, native tool calls", plain=True)
        == "Plain text, native tool calls"
    )
    assert partial_answer("Plain text under the json protocol") is None


# ---------------------------------------------------------------- approvals


async def test_order_waits_for_approval_and_is_written_once_approved(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    pid = fhir.patients["handmade"]
    before = len(await service_requests(fhir, pid))
    graph, cfg, approval, _ = await propose_order(fhir, tmp_path, [final("Ordered.")])
    assert approval["tool"] == "create_service_request"
    assert approval["args"]["code"] == "4548-4"
    assert "Hemoglobin A1c" in approval["summary"] and "routine" in approval["summary"]
    assert len(await service_requests(fhir, pid)) == before, "nothing written before approval"

    events = await collect(graph, Command(resume={"action": "approve"}), cfg)
    assert kinds(events)[0] == "tool_result"
    created = first(events, "tool_result")["refs"]
    assert len(created) == 1 and created[0].startswith("ServiceRequest/")
    key = order_key(cfg["configurable"]["thread_id"], approval["call_id"])
    stored = await orders_with_key(fhir, key)
    assert [f"ServiceRequest/{r['id']}" for r in stored] == created
    assert stored[0]["subject"]["reference"] == f"Patient/{pid}"
    assert len(await service_requests(fhir, pid)) == before + 1
    assert first(events, "done") == {"status": "complete"}


async def test_replaying_the_write_step_does_not_write_twice(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    graph, cfg, approval, _ = await propose_order(
        fhir, tmp_path, [final("Ordered."), final("Ordered again.")]
    )
    await collect(graph, Command(resume={"action": "approve"}), cfg)
    key = order_key(cfg["configurable"]["thread_id"], approval["call_id"])
    assert len(await orders_with_key(fhir, key)) == 1
    # Run the write step again from its checkpoint, as after a crash before it was saved.
    history = [s async for s in graph.aget_state_history(cfg)]
    before_act = next(s for s in history if s.next == ("act",))
    await graph.ainvoke(None, before_act.config)
    assert len(await orders_with_key(fhir, key)) == 1


async def test_create_once_posts_one_resource_per_key(fhir: FhirFixture) -> None:
    resource = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"text": "Lipid panel"},
        "subject": {"reference": f"Patient/{fhir.patients['diabetes']}"},
    }
    key = uuid.uuid4().hex
    one = await create_once(fhir.client, dict(resource), key)
    two = await create_once(fhir.client, dict(resource), key)
    other = await create_once(fhir.client, dict(resource), uuid.uuid4().hex)
    assert one["id"] == two["id"] != other["id"]
    assert len(await orders_with_key(fhir, key)) == 1
    assert {"system": ORDER_SYSTEM, "value": key} in one["identifier"]


async def test_reject_writes_nothing_and_tells_the_model(fhir: FhirFixture, tmp_path: Path) -> None:
    pid = fhir.patients["handmade"]
    before = len(await service_requests(fhir, pid))
    graph, cfg, _, model = await propose_order(fhir, tmp_path, [final("Understood.")])
    events = await collect(
        graph, Command(resume={"action": "reject", "reason": "done last week"}), cfg
    )
    assert first(events, "tool_result")["refs"] == []
    assert first(events, "answer")["text"] == "Understood."
    assert len(await service_requests(fhir, pid)) == before
    told = model.calls[-1]["messages"][-1].content
    assert "rejected" in told and "done last week" in told


async def test_edit_writes_the_corrected_order(fhir: FhirFixture, tmp_path: Path) -> None:
    graph, cfg, approval, _ = await propose_order(fhir, tmp_path, [final("Ordered, urgent.")])
    edited = {**HBA1C_ORDER, "priority": "stat", "note": "fasting not needed"}
    await collect(graph, Command(resume={"action": "edit", "args": edited}), cfg)
    key = order_key(cfg["configurable"]["thread_id"], approval["call_id"])
    (stored,) = await orders_with_key(fhir, key)
    assert stored["priority"] == "stat"
    assert stored["note"] == [{"text": "fasting not needed"}]


async def test_an_invalid_decision_asks_again_and_writes_nothing(
    fhir: FhirFixture, tmp_path: Path
) -> None:
    graph, cfg, approval, _ = await propose_order(fhir, tmp_path, [final("Ordered.")])
    key = order_key(cfg["configurable"]["thread_id"], approval["call_id"])
    bad = {"action": "edit", "args": {**HBA1C_ORDER, "priority": "whenever"}}
    events = await collect(graph, Command(resume=bad), cfg)
    again = first(events, "approval_required")
    assert again["call_id"] == approval["call_id"] and "priority" in again["error"]
    assert await orders_with_key(fhir, key) == []
    events = await collect(graph, Command(resume={"action": "approve"}), cfg)
    assert first(events, "done") == {"status": "complete"}
    assert len(await orders_with_key(fhir, key)) == 1


async def test_a_malformed_order_goes_back_to_the_model_not_to_the_clinician(
    fhir: FhirFixture,
) -> None:
    bad_order = call(
        "create_observation", code="8867-4", display="Heart rate", value=72, value_text="72"
    )
    model = ScriptedChatModel(replies=[bad_order, final("I could not record it.")])
    graph = copilot_graph(model, CopilotTools(fhir.client), checkpointer=InMemory.get())
    events = await collect(
        graph,
        {"messages": [("human", "record HR 72")], "patient_id": fhir.patients["handmade"]},
        config(),
    )
    assert "approval_required" not in kinds(events)
    result = first(events, "tool_result")
    assert result["status"] == "error" and "exactly one of value" in result["text"]


# ------------------------------------------------------------- persistence


async def test_a_pending_order_survives_a_restart(fhir: FhirFixture, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    pid = fhir.patients["hypertension"]
    cfg = config()
    async with open_checkpointer(settings) as saver:
        model = ScriptedChatModel(replies=[call("create_service_request", **HBA1C_ORDER)])
        graph = copilot_graph(model, CopilotTools(fhir.client), checkpointer=saver)
        await collect(graph, {"messages": [("human", "order")], "patient_id": pid}, cfg)
    assert (tmp_path / "copilot.sqlite").exists()
    async with open_checkpointer(settings) as saver:  # a new process, the same file
        model = ScriptedChatModel(replies=[final("Ordered.")])
        graph = copilot_graph(model, CopilotTools(fhir.client), checkpointer=saver)
        state = await graph.aget_state(cfg)
        assert [i.value["tool"] for i in state.interrupts] == ["create_service_request"]
        events = await collect(graph, Command(resume={"action": "approve"}), cfg)
        assert first(events, "answer")["text"] == "Ordered."
        state = await graph.aget_state(cfg)
        assert [m.type for m in state.values["messages"]] == ["human", "ai", "tool", "ai"]


async def test_postgres_without_its_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDROUND_CHECKPOINT_URL", "postgresql://u:p@db.example/copilot")
    try:
        import langgraph.checkpoint.postgres  # noqa: F401
    except ImportError:
        with pytest.raises(
            CheckpointConfigError, match="pip install langgraph-checkpoint-postgres"
        ):
            check_checkpointer(Settings(home=tmp_path))
    else:
        check_checkpointer(Settings(home=tmp_path))  # installed: the URL is accepted
    monkeypatch.setenv("WARDROUND_CHECKPOINT_URL", "mysql://nope")
    with pytest.raises(CheckpointConfigError, match="postgres"):
        check_checkpointer(Settings(home=tmp_path))


# ------------------------------------------------------------------- bounds


async def test_steps_are_bounded(fhir: FhirFixture) -> None:
    loop = [call("patient_manifest") for _ in range(3)]
    model = ScriptedChatModel(replies=loop)
    graph = copilot_graph(
        model, CopilotTools(fhir.client), checkpointer=InMemory.get(), max_steps=3
    )
    events = await collect(
        graph, {"messages": [("human", "?")], "patient_id": fhir.patients["anaemia"]}, config()
    )
    assert first(events, "error")["message"] == "no final answer after 3 steps"
    assert first(events, "done") == {"status": "error"}


async def test_model_garbage_is_an_error_event(fhir: FhirFixture) -> None:
    model = ScriptedChatModel(replies=["not json at all", "still not json"])
    graph = copilot_graph(model, CopilotTools(fhir.client), checkpointer=InMemory.get())
    events = await collect(
        graph, {"messages": [("human", "?")], "patient_id": fhir.patients["anaemia"]}, config()
    )
    assert kinds(events) == ["error", "done"]
    assert "not a valid JSON object" in first(events, "error")["message"]


async def test_the_model_sees_safe_schemas_and_no_find_patient(fhir: FhirFixture) -> None:
    tools = CopilotTools(fhir.client)
    names = [t.name for t in tools.for_model()]
    assert "find_patient" not in names and "create_service_request" in names
    for tool in tools.for_model():
        assert "\\s" not in str(model_schema(tool).model_json_schema())
    # the tools themselves still refuse what the model-facing schema no longer spells out
    real = {t.name: t for t in tools.for_patient(fhir.patients["handmade"])}
    message = await real["create_service_request"].ainvoke(
        {
            "name": "create_service_request",
            "args": {**HBA1C_ORDER, "code": "a b"},
            "id": "c1",
            "type": "tool_call",
        }
    )
    assert isinstance(message, ToolMessage) and "Error" in str(message.content)


# ------------------------------------------------------------ langgraph.json


async def test_langgraph_json_graphs_load_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`langgraph dev` imports each graph file by path and calls the factory."""
    import importlib.util
    import json

    root = Path(__file__).resolve().parents[2]
    spec = json.loads((root / "langgraph.json").read_text())
    assert spec["dependencies"] == ["."]
    monkeypatch.setenv("WARDROUND_HOME", str(tmp_path))
    monkeypatch.setenv("WARDROUND_MODEL_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("WARDROUND_MODEL_NAME", "any")
    monkeypatch.setenv("WARDROUND_FHIR_BASE_URL", "http://127.0.0.1:9/fhir")
    monkeypatch.setenv("WARDROUND_CHROMA_PATH", str(tmp_path / "no-index"))
    for name, target in spec["graphs"].items():
        path, factory = target.split(":")
        module_spec = importlib.util.spec_from_file_location(f"lg_{name}", root / path)
        assert module_spec and module_spec.loader
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        graph = await getattr(module, factory)({"configurable": {}})
        assert graph.checkpointer is None, "the LangGraph server brings its own"
        nodes = set(graph.get_graph().nodes)
        if name == "copilot":
            assert {"agent", "review", "act", "finish"} <= nodes
        else:
            assert "planner" in nodes
