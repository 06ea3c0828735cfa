"""The FHIR client and the EHR QA agent on two independent FHIR R4 servers, same charts.

SEKMET (in this process) and Medplum's in-memory router (`stack/medplum`, a node process on
a free port, stopped by pid) each get the carebundle charts and the hand-made chart; every
check below runs on both. Where the servers differ, the test says how and checks what the
client does about it; the table is in docs/fhir-servers.md.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from langchain_core.messages import BaseMessage

from fakes import ScriptedChatModel
from fhir_fixtures import RecordingTransport
from wardround.fhir.client import EVERYTHING_FALLBACK_TYPES, FhirClient, FhirError
from wardround.fhir.records import fetch_records
from wardround.graphs.ehr_qa import answer_question
from wardround.testing import medplum_server
from wardround.testing.sample_charts import (
    bundle_resources,
    carebundle_charts,
    handmade_chart,
    synthea_chart,
)
from wardround.testing.sekmet_inprocess import BASE_URL, load_chart, sekmet_app

pytestmark = pytest.mark.integration

SERVERS = ["sekmet", "medplum"]
A1C = "Hemoglobin A1c/Hemoglobin.total in Blood [Observation]"


@dataclass
class Server:
    """A running FHIR server with charts loaded: `patients[label]` is its Patient id."""

    name: str
    base_url: str
    transport: Callable[[], httpx.AsyncBaseTransport]
    patients: dict[str, str] = field(default_factory=dict)
    bundles: dict[str, dict] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> tuple[FhirClient, RecordingTransport]:
        """A fresh client (nothing learnt about the server yet) and its request log."""
        recorder = RecordingTransport(self.transport())
        kwargs.setdefault("backoff_s", 0.0)
        return FhirClient(self.base_url, transport=recorder, **kwargs), recorder

    async def raw(self, path: str, **params: Any) -> dict[str, Any]:
        """GET straight from the server, bypassing the client's adaptations."""
        async with httpx.AsyncClient(transport=self.transport(), timeout=120) as http:
            return (await http.get(f"{self.base_url}/{path}", params=params)).json()

    def count(self, label: str, resource_type: str) -> int:
        return sum(
            r["resourceType"] == resource_type for r in bundle_resources(self.bundles[label])
        )


def require_node() -> None:
    """Skip only when no usable node can be had; ./run installs it on a fresh machine."""
    try:
        medplum_server.check_node()
    except medplum_server.MedplumUnavailable as exc:
        pytest.skip(f"Medplum needs Node.js: {exc}")


async def started(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Callable[[], httpx.AsyncBaseTransport]]]:
    """(base URL, transport factory) of a fresh, empty server of this kind."""
    if name == "sekmet":
        app = sekmet_app(tmp_path_factory.mktemp("sekmet"))
        yield BASE_URL, lambda: httpx.ASGITransport(app=app)
        return
    require_node()
    with medplum_server.medplum_server(tmp_path_factory.mktemp("medplum")) as record:
        yield record.base_url, httpx.AsyncHTTPTransport


async def loaded(
    name: str, tmp_path_factory: pytest.TempPathFactory, charts: dict[str, dict]
) -> AsyncIterator[Server]:
    async for base_url, transport in started(name, tmp_path_factory):
        server = Server(name, base_url, transport)
        loader, _ = server.client(timeout=300)
        for label, bundle in charts.items():
            server.bundles[label] = bundle
            server.patients[label] = await load_chart(loader, json.loads(json.dumps(bundle)))
        await loader.aclose()
        yield server


@pytest.fixture(scope="module", params=SERVERS)
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """Each server with the carebundle charts and the hand-made chart."""
    charts = {**carebundle_charts(), "handmade": handmade_chart()}
    async for running in loaded(request.param, tmp_path_factory, charts):
        yield running


@pytest.fixture(scope="module", params=SERVERS)
async def synthea_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """Each server with one whole-life PySynthea patient (about 1,700 resources)."""
    charts = {"synthea": json.loads(synthea_chart())}
    async for running in loaded(request.param, tmp_path_factory, charts):
        yield running


def patient_params(recorder: RecordingTransport) -> list[str]:
    return [v for r in recorder.requests for v in r.url.params.get_list("patient")]


# ------------------------------------------------------------------ reads and searches


async def test_metadata_read_and_missing_record(server: Server) -> None:
    client, _ = server.client()
    async with client:
        assert (await client.capabilities())["fhirVersion"].startswith("4.0")
        pid = server.patients["handmade"]
        assert (await client.read(f"Patient/{pid}"))["name"][0]["family"] == "Testwell"
        with pytest.raises(FhirError, match="Observation/no-such-id") as caught:
            await client.read("Observation/no-such-id")
        assert caught.value.status == 404


async def test_a_bare_patient_id_finds_the_chart_on_both(server: Server) -> None:
    """`patient=<id>` matches nothing on Medplum's in-memory repository (it compares the
    reference text `Patient/<id>`); the client asks again in that form and remembers."""
    pid = server.patients["handmade"]
    raw = await server.raw("Observation", patient=pid)
    typed = await server.raw("Observation", patient=f"Patient/{pid}")
    assert typed["total"] == 4
    assert raw["total"] == (0 if server.name == "medplum" else 4)
    client, recorder = server.client()
    async with client:
        assert len(await client.search("Observation", {"patient": pid})) == 4
        assert len(await client.search("Condition", {"patient": pid})) == 2
    sent = patient_params(recorder)
    if server.name == "medplum":  # one bare try, then the typed form only
        assert sent == [pid, f"Patient/{pid}", f"Patient/{pid}"]
    else:
        assert sent == [pid, pid]


async def test_search_follows_next_links_across_pages(server: Server) -> None:
    pid = server.patients["diabetes"]
    expected = server.count("diabetes", "Observation")
    assert expected > 10
    client, recorder = server.client()
    async with client:
        found = await client.search("Observation", {"patient": f"Patient/{pid}", "_count": 5})
        assert len({r["id"] for r in found}) == len(found) == expected
        pages = [r for r in recorder.requests if not r.url.path.endswith("/metadata")]
        assert len(pages) == math.ceil(expected / 5)  # and one CapabilityStatement read
        first = await server.raw("Observation", patient=f"Patient/{pid}", _count=5)
        nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
        assert "_offset=5" in nxt  # both page by offset in an absolute next link
        capped, _ = server.client(max_pages=2)
        async with capped:
            assert len(await capped.search("Observation", {"patient": pid, "_count": 5})) == 10


async def test_sort_by_date_both_ways(server: Server) -> None:
    pid = f"Patient/{server.patients['handmade']}"
    client, _ = server.client()
    async with client:
        newest = await client.search("Observation", {"patient": pid, "_sort": "-date"})
        oldest = await client.search("Observation", {"patient": pid, "_sort": "date"})
    days = [r["effectiveDateTime"] for r in newest]
    assert days[0].startswith("2023-11-12T09:10") and days[-1] == "2022-05-01"
    assert [r["id"] for r in oldest] == [r["id"] for r in reversed(newest)]


async def test_dates_are_anded_and_codes_ored(server: Server) -> None:
    pid = f"Patient/{server.patients['handmade']}"
    client, _ = server.client()
    async with client:
        window = [("patient", pid), ("date", "ge2023-01-01"), ("date", "le2023-12-31")]
        assert len(await client.search("Observation", window)) == 3
        either = {"patient": pid, "code": "4548-4,85354-9"}
        assert len(await client.search("Observation", either)) == 3
        system = {"patient": pid, "code": "http://loinc.org|4548-4"}
        assert len(await client.search("Observation", system)) == 2


async def test_code_text_search_falls_back_to_matching_here(server: Server) -> None:
    """`code:text` is a word-prefix match on SEKMET and matches nothing on Medplum's
    in-memory repository; `fetch_records` filters the type's records itself when the
    server finds none, so both answer the same."""
    pid = server.patients["handmade"]
    raw = await server.raw("Observation", patient=f"Patient/{pid}", **{"code:text": "Hemoglobin"})
    assert raw["total"] == (0 if server.name == "medplum" else 2)
    client, _ = server.client()
    async with client:
        for words in ("Hemoglobin", "a1c"):
            found = await fetch_records(client, pid, "Observation", text=words)
            assert [r["effectiveDateTime"][:10] for r in found] == ["2023-11-12", "2022-05-01"]


async def test_patient_search_by_name_and_identifier(server: Server) -> None:
    client, _ = server.client()
    async with client:
        by_name = await client.search("Patient", [("name", "testw"), ("birthdate", "1960-02-29")])
        by_mrn = await client.search("Patient", {"identifier": "MRN-0042"})
    assert [p["id"] for p in by_name] == [p["id"] for p in by_mrn] == [server.patients["handmade"]]


# --------------------------------------------------------------------------- $everything


async def test_everything_returns_the_whole_chart(server: Server) -> None:
    """SEKMET offers Patient/$everything (one page, `_count` ignored); the Medplum router
    has no such operation (404), so the client searches the chart's types one by one."""
    client, recorder = server.client()
    async with client:
        resources = await client.everything(server.patients["handmade"])
        assert client._has_everything is (server.name == "sekmet")
        with pytest.raises(FhirError) as missing:
            await client.everything("no-such-patient")
        assert missing.value.status == 404
    got = Counter(r["resourceType"] for r in resources)
    assert got == Counter(r["resourceType"] for r in bundle_resources(server.bundles["handmade"]))
    if server.name == "medplum":
        searched = {r.url.path.rsplit("/", 1)[1] for r in recorder.requests}
        assert set(EVERYTHING_FALLBACK_TYPES) <= searched
        per_type = [r for r in recorder.requests if "patient" in r.url.params]
        pages = str(client.page_size)  # bounded pages, not one page of a whole type
        assert per_type and all(r.url.params.get("_count") == pages for r in per_type)


async def test_everything_covers_carebundle_charts(server: Server) -> None:
    client, _ = server.client()
    async with client:
        for label in ("diabetes", "hypertension", "anaemia"):
            resources = await client.everything(server.patients[label])
            kept = set(EVERYTHING_FALLBACK_TYPES) | {"Patient"}
            want = Counter(
                r["resourceType"]
                for r in bundle_resources(server.bundles[label])
                if r["resourceType"] in kept
            )
            assert (
                Counter(r["resourceType"] for r in resources if r["resourceType"] in kept) == want
            )


# --------------------------------------------------------------------------------- writes


def heart_rate(pid: str, key: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:wardround:test", "value": key}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "HR"},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-02-01T08:00:00Z",
        "valueQuantity": {"value": 64, "unit": "/min"},
    }


async def test_create_and_conditional_create(server: Server) -> None:
    pid = server.patients["anaemia"]
    client, _ = server.client()
    async with client:
        created = await client.create(heart_rate(pid, "plain"))
        assert (await client.read(f"Observation/{created['id']}"))["valueQuantity"]["value"] == 64
        guard = "identifier=urn:wardround:test|once"
        first = await client.create(heart_rate(pid, "once"), if_none_exist=guard)
        again = await client.create(heart_rate(pid, "once"), if_none_exist=guard)
        assert first["id"] == again["id"]
        twins = await client.search("Observation", {"identifier": "urn:wardround:test|once"})
        assert len(twins) == 1


async def test_invalid_resources_only_sekmet_refuses(server: Server) -> None:
    """SEKMET validates strictly (HTTP 400 with diagnostics); Medplum's in-memory
    repository stores what it is given. Validating before a write is the caller's part."""
    bad = {"resourceType": "Observation", "valueQuantity": {"value": "x"}}
    client, _ = server.client()
    async with client:
        if server.name == "sekmet":
            with pytest.raises(FhirError, match="Observation") as caught:
                await client.create(bad)
            assert caught.value.status == 400
        else:
            assert (await client.create(bad))["id"]


# ---------------------------------------------------------------------- a whole-life chart


async def test_a_pysynthea_patient_loads_and_pages(synthea_server: Server) -> None:
    """The transaction Bundle of a whole-life chart loads; paging reads every encounter.
    (Observations are not searched here: Medplum's in-memory search scans every record of
    the type per page, about 17 s for 1,000 on a busy 2-core machine.)"""
    server = synthea_server
    pid = server.patients["synthea"]
    client, recorder = server.client(timeout=300)
    async with client:
        patient = await client.read(f"Patient/{pid}")
        assert patient["birthDate"]
        encounters = await client.search("Encounter", {"patient": pid, "_count": 50})
        conditions = await client.search("Condition", {"patient": pid, "_count": 100})
    assert len({e["id"] for e in encounters}) == server.count("synthea", "Encounter") > 50
    assert len(conditions) == server.count("synthea", "Condition")
    assert sum(r.url.path.endswith("/Encounter") for r in recorder.requests) > 1


# --------------------------------------------------------------------- the EHR QA agent


def word_overlap(question: str, labels: Sequence[str]) -> np.ndarray:
    """A stand-in for MiniLM: shared lower-case words (deterministic, no model load)."""
    words = set(question.lower().replace("?", "").split())
    return np.array(
        [len(words & set(label.lower().replace("[", " ").split())) / 10 for label in labels]
    )


REF = re.compile(r"^([A-Za-z]+/[A-Za-z0-9\-.]+) ", re.M)


def scripted(*replies: dict | Callable[[list[BaseMessage]], str]) -> ScriptedChatModel:
    model = ScriptedChatModel(replies=[r if callable(r) else json.dumps(r) for r in replies])
    model.metadata = {"dialect": "llamacpp", "protocol": "json"}
    return model


async def ask(
    server: Server, question: str, *replies: Any, graph: str = "planner", **loop: Any
) -> Any:
    client, _ = server.client()
    async with client:
        return await answer_question(
            question,
            server.patients["handmade"],
            model=scripted(*replies),
            fhir=client,
            similarity=word_overlap,
            graph=graph,  # type: ignore[arg-type]
            **loop,
        )


async def test_planner_computes_the_latest_value(server: Server) -> None:
    plan = {"kind": "latest_value", "about": A1C}
    result = await ask(server, "latest hemoglobin a1c in blood", plan)
    assert result.error is None and result.computed and result.supported
    assert result.answer == "6.1 % on 2023-11-12."
    assert len(result.citations) == 1 and set(result.citations) <= set(result.retrieved)


async def test_planner_lists_current_medications(server: Server) -> None:
    meds = "all medications (prescriptions) [MedicationRequest]"
    result = await ask(server, "what is she taking", {"kind": "list_current", "about": meds})
    assert "metformin" in result.answer and "Amoxicillin" not in result.answer
    assert len(result.citations) == 1


async def test_cite_then_answer_on_read_records(server: Server) -> None:
    allergies = "all allergies and intolerances [AllergyIntolerance]"

    def first_ref(messages: list[BaseMessage]) -> str:
        return json.dumps({"citations": REF.findall(str(messages[-1].content))[:1]})

    result = await ask(
        server, "what reaction does she get from peanuts", {"kind": "other", "about": allergies},
        first_ref, {"answer": "Hives (Allergy to peanut)"},
    )  # fmt: skip
    assert result.error is None and result.supported
    assert result.citations[0].startswith("AllergyIntolerance/")


async def test_tool_loop_searches_and_cites(server: Server) -> None:
    def final(messages: list[BaseMessage]) -> str:
        found = re.findall(r"AllergyIntolerance/[A-Za-z0-9\-.]+", str(messages[-1].content))
        return json.dumps({"action": "final_answer", "answer": "Allergy to peanut",
                           "citations": found[:1]})  # fmt: skip

    search = {"action": "search_records", "args": {"resource_type": "AllergyIntolerance"}}
    result = await ask(
        server, "What allergies does she have?", search, final, graph="loop", choice="one_call"
    )
    assert result.error is None and result.answer == "Allergy to peanut"
    assert len(result.citations) == 1 and result.citations[0] in result.retrieved


def test_the_medplum_pins_are_exact() -> None:
    package = json.loads((medplum_server.PACKAGE / "package.json").read_text())
    lock = json.loads((medplum_server.PACKAGE / "package-lock.json").read_text())
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert Path(medplum_server.PACKAGE / "server.mjs").is_file()
