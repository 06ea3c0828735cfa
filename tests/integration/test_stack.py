"""The real local stack: SEKMET with seeded patients, the embedded llama.cpp server, the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from live import N_PATIENTS, LiveStack, live_settings
from wardround.agents.models import ModelSpec, make_chat_model
from wardround.agents.protocol import structured

pytestmark = pytest.mark.integration
WARDROUND = str(Path(sys.executable).with_name("wardround"))


def _cli(
    settings_home: Path, *args: str, port: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WARDROUND_HOME": str(settings_home)}
    if port is not None:
        env["WARDROUND_FHIR_PORT"] = str(port)
    return subprocess.run([WARDROUND, *args], capture_output=True, text=True, env=env, timeout=300)


def test_seeded_patients_are_searchable(stack: LiveStack) -> None:
    assert len(stack.patient_ids) == N_PATIENTS
    assert stack.status.fhir.patients == N_PATIENTS
    pid = stack.patient_ids[0]
    bundle = httpx.get(
        f"{stack.fhir_url}/Observation",
        params={"patient": pid, "_sort": "-date", "_count": 5},
        timeout=30,
    ).json()
    entries = bundle.get("entry", [])
    assert entries, "a seeded patient has observations"
    dates = [e["resource"].get("effectiveDateTime", "") for e in entries]
    assert dates == sorted(dates, reverse=True)
    assert all(e["resource"]["subject"]["reference"].endswith(pid) for e in entries)


def test_status_json_reports_both_services(stack: LiveStack) -> None:
    done = _cli(stack.settings.home, "stack", "status", "--json", port=stack.settings.fhir_port)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["fhir"] == {"base_url": stack.fhir_url, "up": True, "patients": N_PATIENTS}
    assert status["model"]["up"] is True and status["model"]["name"] == stack.settings.model
    assert httpx.get(f"{status['model']['base_url']}/models", timeout=10).status_code == 200


def test_second_up_reuses_what_runs(stack: LiveStack) -> None:
    before = json.loads((stack.settings.run_dir / "fhir.json").read_text())["pid"]
    done = _cli(stack.settings.home, "stack", "up", "--patients", str(N_PATIENTS), "--seed", "7",
                port=stack.settings.fhir_port)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((stack.settings.run_dir / "fhir.json").read_text())["pid"] == before
    assert stack.patient_ids[0] in done.stdout


class Choice(BaseModel):
    resource_type: str
    reason: str


async def test_embedded_model_gives_schema_valid_output(stack: LiveStack) -> None:
    settings = stack.settings
    model = make_chat_model(settings)
    runnable = structured(model, Choice, ModelSpec(settings).dialect)
    value = await runnable.ainvoke(
        [HumanMessage("Which FHIR resource type holds lab results? Answer in JSON.")]
    )
    assert isinstance(value, Choice) and value.resource_type


def test_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        done = _cli(tmp_path, "stack", "up", "--patients", "1", port=port)
    assert done.returncode != 0
    assert f"port {port} is taken" in done.stderr and "fhir.log" in done.stderr
    assert "Traceback" not in done.stderr


def test_down_stops_by_pid(tmp_path: Path) -> None:
    settings = live_settings(tmp_path)
    from wardround.stack.fhir_server import ensure_fhir_server

    record = ensure_fhir_server(settings)
    done = _cli(tmp_path, "stack", "down", port=settings.fhir_port)
    assert done.returncode == 0 and "fhir: stopped" in done.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{record.base_url}/metadata", timeout=2)
