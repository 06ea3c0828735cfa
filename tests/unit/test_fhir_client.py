"""FhirClient against a real in-process SEKMET, plus error injection for retries and outages."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from fhir_fixtures import FhirFixture, RecordingTransport
from wardround.fhir.client import (
    FhirClient,
    FhirError,
    FhirNotFound,
    FhirUnavailable,
    escape_value,
    parse_reference,
)
from wardround.runtime.procs import free_port
from wardround.settings import Settings
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sample_charts import bundle_resources, handmade_chart
from wardround.testing.sekmet_inprocess import BASE_URL, load_chart, sekmet_app

pytestmark = pytest.mark.asyncio(loop_scope="session")


def recording_client(fixture: FhirFixture, **kwargs: Any) -> tuple[FhirClient, RecordingTransport]:
    transport = RecordingTransport(httpx.ASGITransport(app=fixture.app))
    return FhirClient(BASE_URL, transport=transport, backoff_s=0, **kwargs), transport


def searches(transport: RecordingTransport) -> list[httpx.Request]:
    """The requests but the CapabilityStatement read (once per client, before the first search)."""
    return [r for r in transport.requests if not r.url.path.endswith("/metadata")]


def count_of(fixture: FhirFixture, label: str, resource_type: str) -> int:
    return sum(r["resourceType"] == resource_type for r in bundle_resources(fixture.bundles[label]))


# ------------------------------------------------------------- real server


async def test_search_follows_next_links_across_pages(fhir: FhirFixture) -> None:
    client, seen = recording_client(fhir)
    pid = fhir.patients["diabetes"]
    found = await client.search("Observation", {"patient": pid, "_count": 5})
    expected = count_of(fhir, "diabetes", "Observation")
    assert expected > 10
    assert len(found) == expected
    assert len({r["id"] for r in found}) == expected
    assert len(searches(seen)) == -(-expected // 5)  # ceil: one request per page


async def test_search_stops_at_the_page_cap(fhir: FhirFixture) -> None:
    client, seen = recording_client(fhir, max_pages=2)
    found = await client.search("Observation", {"patient": fhir.patients["diabetes"], "_count": 5})
    assert len(found) == 10
    assert len(searches(seen)) == 2


async def test_search_limit_stops_paging_early(fhir: FhirFixture) -> None:
    client, seen = recording_client(fhir)
    found = await client.search(
        "Observation", {"patient": fhir.patients["diabetes"], "_count": 5}, limit=7
    )
    assert len(found) == 7
    assert len(searches(seen)) == 2


async def test_repeated_parameter_values_are_anded(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    found = await fhir.client.search(
        "Observation", [("patient", pid), ("date", "ge2023-01-01"), ("date", "le2023-12-31")]
    )
    assert {r["effectiveDateTime"][:4] for r in found} == {"2023"}
    assert len(found) == 3


async def test_read_by_reference_and_missing_record(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    patient = await fhir.client.read(f"Patient/{pid}")
    assert patient["name"][0]["family"] == "Testwell"
    with pytest.raises(FhirNotFound, match="Observation/no-such-id"):
        await fhir.client.read("Observation/no-such-id")


@pytest.mark.parametrize(
    "reference",
    ["Patient", "Patient/../Observation", "Patient/a b", "patient/x", "Patient/x/_history/1",
     "Observation/" + "x" * 65, "Patient/x?_id=y"],
)  # fmt: skip
async def test_malformed_references_never_reach_the_server(
    fhir: FhirFixture, reference: str
) -> None:
    client, seen = recording_client(fhir)
    with pytest.raises(ValueError):
        await client.read(reference)
    assert seen.requests == []


async def test_malformed_types_and_parameter_names_are_refused(fhir: FhirFixture) -> None:
    client, seen = recording_client(fhir)
    with pytest.raises(ValueError):
        await client.search("Observation?patient=x", {})
    with pytest.raises(ValueError):
        await client.search("Observation", {"code&patient": "x"})
    with pytest.raises(ValueError):
        await client.search("Observation", {"code": {"nested": 1}})  # type: ignore[dict-item]
    assert seen.requests == []


async def test_values_cannot_add_search_parameters(fhir: FhirFixture) -> None:
    client, seen = recording_client(fhir)
    mine, other = fhir.patients["handmade"], fhir.patients["diabetes"]
    smuggled = f"{mine}&patient={other}&_id=x"
    found = await client.search("Observation", {"patient": smuggled})
    assert found == []
    query = seen.requests[0].url.params
    assert query.get_list("patient") == [smuggled]
    assert "_id" not in query


async def test_escaped_values_match_literally(fhir: FhirFixture) -> None:
    # Unescaped, "4548-4,85354-9" is an OR-list and finds both codes; escaped it finds neither.
    pid = fhir.patients["handmade"]
    either = await fhir.client.search("Observation", {"patient": pid, "code": "4548-4,85354-9"})
    literal = await fhir.client.search(
        "Observation", {"patient": pid, "code": escape_value("4548-4,85354-9")}
    )
    assert len(either) == 3
    assert literal == []


async def test_everything_returns_the_whole_chart(fhir: FhirFixture) -> None:
    resources = await fhir.client.everything(fhir.patients["diabetes"])
    got = Counter(r["resourceType"] for r in resources)
    want = Counter(r["resourceType"] for r in bundle_resources(fhir.bundles["diabetes"]))
    assert got == want


async def test_everything_unknown_patient_is_not_found(fhir: FhirFixture) -> None:
    with pytest.raises(FhirNotFound):
        await fhir.client.everything("no-such-patient")


class NoEverything(RecordingTransport):
    """A real server that does not offer Patient/$everything (as some EHR sandboxes)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "$everything" in request.url.path:
            self.requests.append(request)
            outcome = {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-supported", "diagnostics": "unknown operation"}]}  # fmt: skip
            return httpx.Response(400, json=outcome)
        return await super().handle_async_request(request)


async def test_everything_falls_back_to_per_type_searches(fhir: FhirFixture) -> None:
    transport = NoEverything(httpx.ASGITransport(app=fhir.app))
    client = FhirClient(BASE_URL, transport=transport, backoff_s=0)
    resources = await client.everything(fhir.patients["handmade"])
    got = Counter(r["resourceType"] for r in resources)
    want = Counter(r["resourceType"] for r in bundle_resources(fhir.bundles["handmade"]))
    assert got == want
    # The fallback is remembered: the second call does not try the operation again.
    before = sum("$everything" in r.url.path for r in transport.requests)
    await client.everything(fhir.patients["handmade"])
    assert sum("$everything" in r.url.path for r in transport.requests) == before == 1


async def test_create_returns_the_stored_resource(fhir: FhirFixture) -> None:
    pid = fhir.patients["handmade"]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
        },
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-02-01T08:00:00Z",
        "valueQuantity": {"value": 64, "unit": "/min"},
    }
    created = await fhir.client.create(observation)
    assert created["id"]
    again = await fhir.client.read(f"Observation/{created['id']}")
    assert again["valueQuantity"]["value"] == 64


async def test_create_invalid_resource_reports_the_servers_diagnostics(fhir: FhirFixture) -> None:
    with pytest.raises(FhirError) as caught:
        await fhir.client.create({"resourceType": "Observation", "valueQuantity": {"value": "x"}})
    assert caught.value.status in (400, 422)
    assert "Observation" in str(caught.value)
    assert not isinstance(caught.value, FhirUnavailable)


async def test_loopback_server_with_foreign_links_keeps_our_origin(tmp_path) -> None:
    # The server advertises an internal host in its links (a proxy setup); paging must
    # still reach the server we were configured with, and never that other host.
    app = sekmet_app(tmp_path, base_url="http://internal.invalid:9/fhir")
    with LoopbackServer(app) as server:
        async with FhirClient(f"{server.url}/fhir", backoff_s=0, retries=0) as client:
            pid = await load_chart(client, handmade_chart())
            found = await client.search("Observation", {"patient": pid, "_count": 1})
            assert len(found) == 4
            assert (await client.read(f"Patient/{pid}"))["id"] == pid


async def test_server_down_names_the_base_url() -> None:
    base = f"http://127.0.0.1:{free_port()}/fhir"
    async with FhirClient(base, retries=1, backoff_s=0) as client:
        with pytest.raises(FhirUnavailable, match=base.replace(".", r"\.")):
            await client.read("Patient/x")


# -------------------------------------------------------- error injection


def scripted(*replies: int | Exception, retry_after: str | None = None):
    """A MockTransport answering with these statuses (or raising these errors) in turn."""
    calls: list[httpx.Request] = []
    queue = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        headers = {"Retry-After": retry_after} if retry_after and reply == 429 else {}
        if reply == 200:
            body = {"resourceType": "Patient", "id": "p1"}
            if request.method == "POST":
                body = {"resourceType": "Observation", "id": "o1", "status": "final"}
            return httpx.Response(200, json=body)
        return httpx.Response(reply, headers=headers, json={"resourceType": "OperationOutcome",
                              "issue": [{"severity": "error", "code": "transient", "diagnostics": "busy"}]})  # fmt: skip

    return httpx.MockTransport(handler), calls


def mock_client(transport: httpx.MockTransport, **kwargs: Any) -> FhirClient:
    kwargs.setdefault("backoff_s", 0.1)
    return FhirClient("http://fhir.test/base", transport=transport, **kwargs)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_get_retries_transient_statuses(status: int, sleeps: list[float]) -> None:
    transport, calls = scripted(status, status, 200)
    patient = await mock_client(transport).read("Patient/p1")
    assert patient["id"] == "p1"
    assert len(calls) == 3


async def test_backoff_grows_exponentially_with_jitter(sleeps: list[float]) -> None:
    transport, calls = scripted(503)
    with pytest.raises(FhirUnavailable, match=r"http://fhir\.test/base"):
        await mock_client(transport, retries=3, backoff_s=0.1).read("Patient/p1")
    assert len(calls) == 4
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):
        assert 0.05 * 2**attempt <= delay <= 0.1 * 2**attempt


async def test_retry_after_is_honoured_beyond_the_backoff_ceiling(sleeps: list[float]) -> None:
    transport, _ = scripted(429, 429, 200, retry_after="3")
    await mock_client(transport, max_backoff_s=2.0).read("Patient/p1")
    assert sleeps == [3.0, 3.0]  # retrying sooner than asked would only be refused again


async def test_rate_limit_that_never_clears_is_an_error(sleeps: list[float]) -> None:
    transport, calls = scripted(429)
    with pytest.raises(FhirError) as caught:
        await mock_client(transport, retries=2).read("Patient/p1")
    assert caught.value.status == 429
    assert len(calls) == 3


async def test_post_is_not_repeated_after_a_server_error(sleeps: list[float]) -> None:
    transport, calls = scripted(500, 200)
    with pytest.raises(FhirError) as caught:
        await mock_client(transport).create({"resourceType": "Observation", "status": "final"})
    assert caught.value.status == 500
    assert len(calls) == 1


async def test_post_is_repeated_when_the_server_refused_it(sleeps: list[float]) -> None:
    transport, calls = scripted(503, 200)
    created = await mock_client(transport).create(
        {"resourceType": "Observation", "status": "final"}
    )
    assert created["id"] == "o1"
    assert len(calls) == 2


async def test_timeouts_and_connection_errors_are_retried(sleeps: list[float]) -> None:
    transport, calls = scripted(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), 200)
    assert (await mock_client(transport).read("Patient/p1"))["id"] == "p1"
    assert len(calls) == 3


async def test_post_is_not_repeated_after_a_read_timeout(sleeps: list[float]) -> None:
    transport, calls = scripted(httpx.ReadTimeout("slow"), 200)
    with pytest.raises(FhirUnavailable):
        await mock_client(transport).create({"resourceType": "Observation", "status": "final"})
    assert len(calls) == 1


async def test_not_found_is_not_retried(sleeps: list[float]) -> None:
    transport, calls = scripted(404)
    with pytest.raises(FhirNotFound):
        await mock_client(transport).read("Patient/p1")
    assert len(calls) == 1


async def test_real_backoff_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    transport, calls = scripted(503, 200)
    started = time.monotonic()
    await mock_client(transport, backoff_s=0.2).read("Patient/p1")
    assert time.monotonic() - started >= 0.1
    assert len(calls) == 2


# ----------------------------------------------------------------- misc


async def test_from_settings_carries_url_timeout_and_page_cap() -> None:
    settings = Settings(
        fhir_base_url="http://example.org/fhir/", fhir_max_pages=3, fhir_timeout_s=5
    )
    client = FhirClient.from_settings(settings)
    assert client.base_url == "http://example.org/fhir"
    assert client.max_pages == 3
    assert client._http.timeout.read == 5


async def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError):
        FhirClient("ftp://example.org/fhir")


async def test_reference_parsing_and_escaping() -> None:
    assert parse_reference("Observation/abc-1.2") == ("Observation", "abc-1.2")
    assert escape_value(r"a,b|c$d\e") == r"a\,b\|c\$d\\e"
