"""Bounded reads over SEKMET in-process (one PySynthea patient, about 1,750 resources):
searches page with `_count`, a read cap truncates and says so, an oversized `$everything`
(SEKMET does not page it) is read by paged per-type searches, a body above the bound is
refused with a clear error, and the manifest and chart panel stay the same either way."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest

from fhir_fixtures import FhirFixture, RecordingTransport
from wardround.fhir.bounded import ReadState, watch_partial
from wardround.fhir.client import FhirClient, FhirResponseTooLarge
from wardround.fhir.manifest import build_manifest
from wardround.fhir.records import RECORD_TYPES, fetch_records
from wardround.server.chart import chart_summary
from wardround.testing.sekmet_inprocess import BASE_URL

pytestmark = pytest.mark.asyncio(loop_scope="session")


def client_of(fixture: FhirFixture, **kwargs: Any) -> tuple[FhirClient, RecordingTransport]:
    transport = RecordingTransport(httpx.ASGITransport(app=fixture.app))
    return FhirClient(BASE_URL, transport=transport, backoff_s=0, **kwargs), transport


def reads(transport: RecordingTransport, path_end: str) -> list[httpx.Request]:
    return [r for r in transport.requests if r.url.path.endswith(path_end)]


async def test_searches_page_with_count_and_follow_next(synthea_fhir: FhirFixture) -> None:
    pid = synthea_fhir.patients["synthea"]
    client, transport = client_of(synthea_fhir, page_size=50)
    async with client:
        found = await client.search("Observation", {"patient": pid})
    pages = reads(transport, "/Observation")
    assert pages[0].url.params["_count"] == "50"
    assert len(found) > 500 and not found.truncated
    assert len(pages) == -(-len(found) // 50)  # every page followed through link[next]
    assert len({r["id"] for r in found}) == len(found)


async def test_a_larger_count_is_lowered_to_the_page_size(synthea_fhir: FhirFixture) -> None:
    pid = synthea_fhir.patients["synthea"]
    client, transport = client_of(synthea_fhir, page_size=40)
    async with client:
        await client.search("Observation", {"patient": pid, "_count": 5000}, limit=100)
    assert reads(transport, "/Observation")[0].url.params.get_list("_count") == ["40"]


async def test_a_cap_truncates_and_says_so(synthea_fhir: FhirFixture) -> None:
    pid = synthea_fhir.patients["synthea"]
    client, _ = client_of(synthea_fhir, page_size=50, max_records=120)
    async with client:
        with watch_partial() as notes:
            found = await client.search("Observation", {"patient": pid})
            whole = await client.search("Immunization", {"patient": pid})
    assert len(found) == 120 and found.truncated
    assert "max_records" in (found.why or "")
    assert notes == [found.why]  # the planner's "not all records were read"
    assert not whole.truncated  # a type under the cap is read whole


async def test_a_callers_limit_is_not_a_partial_read(synthea_fhir: FhirFixture) -> None:
    pid = synthea_fhir.patients["synthea"]
    client, _ = client_of(synthea_fhir)
    async with client:
        with watch_partial() as notes:
            newest = await fetch_records(client, pid, "Observation", limit=3)
    assert len(newest) == 3 and notes == []


async def test_oversized_everything_falls_back_to_paged_type_searches(
    synthea_fhir: FhirFixture,
) -> None:
    pid = synthea_fhir.patients["synthea"]
    whole, _ = client_of(synthea_fhir)
    small, transport = client_of(synthea_fhir, page_size=100, everything_max_bytes=200_000)
    async with whole, small:
        expected = await whole.everything(pid, fallback_types=RECORD_TYPES)
        state = ReadState()
        got = [
            r
            async for page in small.iter_everything(pid, fallback_types=RECORD_TYPES, state=state)
            for r in page
        ]
        again = await small.everything(pid, fallback_types=RECORD_TYPES)
        left_out = await small.unsearchable(RECORD_TYPES)  # no per-patient search for them
    assert state.fell_back and not state.truncated
    searched = set(RECORD_TYPES) - set(left_out)
    kept = {f"{r['resourceType']}/{r['id']}" for r in expected if r["resourceType"] in searched}
    assert {f"{r['resourceType']}/{r['id']}" for r in got} >= kept | {f"Patient/{pid}"}
    searches = [r for r in transport.requests if "$everything" not in r.url.path]
    observations = [r for r in searches if r.url.path.endswith("/Observation")]
    assert all(r.url.params["_count"] == "100" for r in searches if "_count" in r.url.params)
    assert len(observations) >= 2 * 5  # paged, on both reads
    # The second read of the same chart goes to the per-type searches at once.
    assert len(reads(transport, "/$everything")) == 1
    assert len(again) == len(got)


async def test_a_body_above_the_bound_is_refused(synthea_fhir: FhirFixture) -> None:
    pid = synthea_fhir.patients["synthea"]
    client, _ = client_of(synthea_fhir, max_body_bytes=20_000)
    async with client:
        with pytest.raises(FhirResponseTooLarge, match="larger than 20,000 bytes") as err:
            await client.search("Observation", {"patient": pid, "_count": 100})
    assert err.value.limit == 20_000


async def test_manifest_and_chart_panel_are_the_same_read_per_type(
    synthea_fhir: FhirFixture,
) -> None:
    pid = synthea_fhir.patients["synthea"]
    whole, _ = client_of(synthea_fhir)
    small, _ = client_of(synthea_fhir, page_size=100, everything_max_bytes=200_000)
    async with whole, small:
        one, other = await build_manifest(whole, pid), await build_manifest(small, pid)
        today = date(2026, 1, 1)
        panel, paged = (
            await chart_summary(whole, pid, today),
            await chart_summary(small, pid, today),
        )
    assert one.partial is None and other.partial is None
    assert {t: s.count for t, s in one.types.items() if t in RECORD_TYPES} == {
        t: s.count for t, s in other.types.items() if t in RECORD_TYPES
    }
    assert panel.labs == paged.labs and panel.problems == paged.problems
    assert panel.vitals == paged.vitals and paged.partial is None


async def test_a_capped_manifest_says_it_is_partial(synthea_fhir: FhirFixture) -> None:
    pid = synthea_fhir.patients["synthea"]
    client, _ = client_of(synthea_fhir, max_records=200, everything_max_bytes=200_000)
    async with client:
        manifest = await build_manifest(client, pid)
    assert manifest.partial and "max_records" in manifest.partial
    assert "Not all records were read" in manifest.render()
