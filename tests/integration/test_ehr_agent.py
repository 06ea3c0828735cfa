"""`wardround ask` end to end: the real FHIR server, the real embedded model, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from live import LiveStack
from wardround.agents.models import make_chat_model
from wardround.fhir.client import FhirClient
from wardround.graphs.ehr_qa import answer_question
from wardround.runtime.procs import free_port

pytestmark = pytest.mark.integration
WARDROUND = str(Path(sys.executable).with_name("wardround"))


def ask_cli(
    stack: LiveStack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        **os.environ,
        "WARDROUND_HOME": str(stack.settings.home),
        "WARDROUND_FHIR_PORT": str(stack.settings.fhir_port),
    }
    return subprocess.run(
        [WARDROUND, "ask", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=600,
    )


def latest_systolic(stack: LiveStack, patient_id: str) -> tuple[str, str]:
    """(value, day) of the newest systolic pressure, read straight from the server."""
    bundle = httpx.get(
        f"{stack.fhir_url}/Observation",
        params={"patient": patient_id, "code": "85354-9", "_sort": "-date", "_count": 1},
        timeout=30,
    ).json()
    panel = bundle["entry"][0]["resource"]
    systolic = next(c for c in panel["component"] if c["code"]["coding"][0]["code"] == "8480-6")
    value = systolic["valueQuantity"]["value"]
    return f"{value:g}", panel["effectiveDateTime"][:10]


@pytest.mark.parametrize("graph", ["planner", "loop"])
async def test_answers_cite_records_that_resolve_on_the_server(
    stack: LiveStack, graph: str
) -> None:
    model = make_chat_model(stack.settings)
    async with FhirClient.from_settings(stack.settings) as fhir:
        result = await answer_question(
            "What was the patient's most recent systolic blood pressure?",
            stack.patient_ids[0],
            model=model,
            fhir=fhir,
            graph=graph,  # type: ignore[arg-type]
        )
    if graph == "planner":
        assert result.error is None, result.error
        value, day = latest_systolic(stack, stack.patient_ids[0])
        assert value in result.answer and day in result.answer, (result.answer, value, day)
        assert result.computed and result.supported and len(result.citations) == 1
    assert set(result.citations) <= set(result.retrieved)
    for ref in result.citations:
        record = httpx.get(f"{stack.fhir_url}/{ref}", timeout=10)
        assert record.status_code == 200, ref
        assert record.json()["subject"]["reference"].endswith(stack.patient_ids[0])
    assert result.tokens["prompt"] > 0 and result.latency_s > 0


def test_ask_json_output_says_how_the_answer_was_checked(stack: LiveStack) -> None:
    done = ask_cli(stack, "How much did she weigh at the last visit?", "--patient",
                   stack.patient_ids[1], "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) >= {"answer", "citations", "supported", "plan", "steps", "tokens"}
    assert out["answer"] and out["citations"] and out["supported"] is True
    assert "Body Weight" in out["plan"], out["plan"]
    weight = httpx.get(f"{stack.fhir_url}/{out['citations'][0]}", timeout=10).json()
    assert f"{weight['valueQuantity']['value']:g}" in out["answer"]
    assert set(out["tokens"]) == {"prompt", "completion"}


def test_base_url_at_a_llamacpp_server_detects_its_dialect(stack: LiveStack) -> None:
    """OpenAI's json_schema request shape makes llama.cpp answer HTTP 500; the client
    switches to llama.cpp's shape instead of printing a traceback."""
    url = stack.status.model.base_url
    done = ask_cli(stack, "When was the patient last seen?", "--patient", stack.patient_ids[0],
                   "--base-url", url, "--model-name", "whatever", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["citations"][0].startswith("Encounter/")


def test_model_server_down_is_a_one_line_error(stack: LiveStack) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    done = ask_cli(stack, "Latest weight?", "--patient", stack.patient_ids[0],
                   "--base-url", dead, "--model-name", "m")  # fmt: skip
    assert done.returncode != 0
    assert dead in done.stderr and "not reachable" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3


def test_empty_question_is_refused(stack: LiveStack) -> None:
    done = ask_cli(stack, "  ", "--patient", stack.patient_ids[0])
    assert done.returncode != 0 and "empty" in done.stderr and "Traceback" not in done.stderr


def test_unknown_patient_is_a_one_line_error(stack: LiveStack) -> None:
    done = ask_cli(stack, "Latest HbA1c?", "--patient", "does-not-exist")
    assert done.returncode != 0
    assert "unknown patient 'does-not-exist'" in done.stderr and "Traceback" not in done.stderr


def test_fhir_server_down_is_a_one_line_error(stack: LiveStack) -> None:
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    done = ask_cli(stack, "Latest HbA1c?", "--patient", stack.patient_ids[0],
                   env={"WARDROUND_FHIR_BASE_URL": dead})  # fmt: skip
    assert done.returncode != 0
    assert dead in done.stderr and "unreachable" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2


async def test_cite_then_answer_with_the_real_model(stack: LiveStack) -> None:
    """The general path on real records: the model cites from an enum of what was read,
    answers from the cited lines alone, and the faithfulness check runs on its numbers."""
    from langgraph.runtime import Runtime

    from wardround.chart.options import Option
    from wardround.chart.retrieve import fetch, ids_of
    from wardround.fhir.render import render_resource
    from wardround.graphs.ehr_qa.planner import PlannerContext, answer, cite
    from wardround.tools.text_embeddings import minilm_similarity

    pid = stack.patient_ids[0]
    weight = Option(label="Body Weight [Observation]", resource_type="Observation",
                    code="http://loinc.org|29463-7")  # fmt: skip
    async with FhirClient.from_settings(stack.settings) as fhir:
        records = await fetch(fhir, pid, weight, 5)
        patient = await fhir.read(f"Patient/{pid}")
        runtime = Runtime(context=PlannerContext(make_chat_model(stack.settings), fhir,
                                                 minilm_similarity()))  # fmt: skip
        state: dict = {
            "question": "How much did the patient weigh at the most recent weighing?",
            "patient_id": pid, "patient": patient, "about": weight.label,
            "records": [render_resource(r) for r in records], "retrieved": ids_of(records),
        }  # fmt: skip
        state |= await cite(state, runtime)  # type: ignore[arg-type]
        assert state.get("error") is None and state["citations"]
        assert set(state["citations"]) <= set(state["retrieved"])
        state |= await answer(state, runtime)  # type: ignore[arg-type]
    newest = f"{records[0]['valueQuantity']['value']:g}"
    assert state.get("error") is None
    assert isinstance(state["unsupported"], list), "the faithfulness check ran"
    assert newest in state["answer"], (state["answer"], newest)
