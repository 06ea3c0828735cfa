"""PHI to a hosted model, end to end: `answer_question` over a PySynthea chart in SEKMET,
with an OpenAI-compatible simulator as the hosted model (the one on this machine counts as
hosted through `phi_local_hosts=[]`). Every request body is recorded and searched for the
patient's identifiers and the real dates of the records sent; the answer the caller gets
carries the real ones again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fhir_fixtures import FhirFixture
from wardround.agents.models import make_chat_model
from wardround.agents.phi import identifiers
from wardround.agents.phi_model import PseudonymisingChatModel
from wardround.fhir.render import render_resource
from wardround.graphs.copilot.audit import AuditLog
from wardround.graphs.ehr_qa import answer_question
from wardround.settings import Settings
from wardround.testing.chat_simulator import SimulatorServer, message_text

pytestmark = pytest.mark.asyncio(loop_scope="module")
NOTES = "all clinical notes and documents [DocumentReference]"
ISO = re.compile(r"\d{4}-\d{2}-\d{2}")
REF = re.compile(r"^([A-Za-z]+/[A-Za-z0-9\-.]+) ", re.M)


def word_overlap(question: str, labels: Sequence[str]) -> np.ndarray:
    """A stand-in for MiniLM (no model load): shared lower-case words."""
    words = set(question.lower().split())
    return np.array([len(words & set(label.lower().split())) / 10 for label in labels])


def hosted_model(messages: list[dict[str, Any]]) -> str:
    """Plans "other" over the notes, cites the first record, and answers with the patient's
    name token and the first record's date as it was sent (shifted)."""
    ask = message_text(messages[-1]["content"])
    if ask.startswith("Options:"):
        return json.dumps({"kind": "other", "about": NOTES})
    refs = REF.findall(ask.split("Records", 1)[-1])
    if ask.startswith("Records"):
        return json.dumps({"citations": refs[:1]})
    first = ask.split("Records:", 1)[1].strip().splitlines()[0]
    sent_date = ISO.search(first)
    assert sent_date is not None
    return json.dumps({"answer": f"[PATIENT-NAME-1] had a note on {sent_date[0]}."})


@pytest.fixture(scope="module")
def simulator() -> Iterator[tuple[SimulatorServer, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []
    with SimulatorServer(hosted_model, latency_s=0.0, bodies=bodies) as server:
        yield server, bodies


def _settings(home: Path, base_url: str) -> Settings:
    return Settings(
        home=home, model_base_url=base_url, model_name="sim", phi_pseudonymise=True,
        phi_local_hosts=[],
    )  # fmt: skip


async def _record_dates(fhir: FhirFixture, refs: list[str]) -> set[date]:
    """Every date written in the records the graph read, as the renderer writes them."""
    found = set()
    for ref in refs:
        text = render_resource(await fhir.client.read(ref))
        found |= {date.fromisoformat(d) for d in ISO.findall(text)}
    return found


async def test_nothing_identifying_leaves_and_the_answer_comes_back_real(
    synthea_fhir: FhirFixture, simulator: tuple[SimulatorServer, list[dict]], tmp_path: Path
) -> None:
    server, bodies = simulator
    bodies.clear()
    model = make_chat_model(_settings(tmp_path, server.base_url))
    assert isinstance(model, PseudonymisingChatModel)
    pid = synthea_fhir.patients["synthea"]
    patient = await synthea_fhir.client.read(f"Patient/{pid}")
    name = patient["name"][0]
    question = f"What do the notes say about {name['given'][0]} {name['family']}?"
    result = await answer_question(
        question, pid, model=model, fhir=synthea_fhir.client, similarity=word_overlap
    )
    assert result.error is None and result.citations, result
    sent = [json.dumps(b) for b in bodies]
    assert len(sent) >= 3, "plan, cite and answer went to the hosted model"

    secrets = [value for _, value in identifiers(patient)] + [patient["birthDate"]]
    leaks = {s for s in secrets if len(s) >= 2 for body in sent if s.lower() in body.lower()}
    assert leaks == set(), f"identifiers sent: {leaks}"

    real = await _record_dates(synthea_fhir, result.retrieved)
    offset = model.pseudonymiser(patient).offset_days
    shifted = {d + timedelta(days=offset) for d in real}
    in_bodies = {date.fromisoformat(d) for body in sent for d in ISO.findall(body)}
    assert in_bodies & (real - shifted) == set(), "a real record date was sent"
    assert in_bodies & shifted, "the records' dates were sent shifted"

    cited = render_resource(await synthea_fhir.client.read(result.citations[0]))
    first_date = ISO.search(cited.split(" ", 1)[1])
    assert first_date is not None
    assert result.answer == f"{name['given'][0]} had a note on {first_date[0]}."

    entries = AuditLog(tmp_path / "audit.jsonl").entries()
    egress = [e for e in entries if e["action"] == "phi_egress"]
    assert len(egress) == len(bodies) and {e["host"] for e in egress} == {"127.0.0.1"}
    assert all(e["patient"] == pid and e["replaced"].get("name") for e in egress)
    assert any(e["action"] == "phi_reidentify" and e["replaced"] for e in entries)
    assert name["family"] not in (tmp_path / "audit.jsonl").read_text()


async def test_an_unknown_patient_sends_nothing(
    synthea_fhir: FhirFixture, simulator: tuple[SimulatorServer, list[dict]], tmp_path: Path
) -> None:
    server, bodies = simulator
    bodies.clear()
    model = make_chat_model(_settings(tmp_path, server.base_url))
    result = await answer_question(
        "latest potassium?", "no-such-patient", model=model, fhir=synthea_fhir.client,
        similarity=word_overlap,
    )  # fmt: skip
    assert result.error and "unknown patient" in result.error
    assert bodies == []
