"""Retry-After in both of its forms, and what the user sees when a server keeps refusing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from wardround.fhir.client import FhirClient, FhirUnavailable, retry_after_s


def replies(*statuses: int, retry_after: str | None = None) -> tuple[httpx.MockTransport, list]:
    calls: list[httpx.Request] = []
    queue = list(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status = queue.pop(0) if len(queue) > 1 else queue[0]
        if status == 200:
            return httpx.Response(200, json={"resourceType": "Patient", "id": "p1"})
        headers = {"Retry-After": retry_after} if retry_after else {}
        return httpx.Response(status, headers=headers, text="slow down")

    return httpx.MockTransport(handler), calls


def test_retry_after_forms() -> None:
    assert retry_after_s("7") == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 18 <= (retry_after_s(later) or 0) <= 20
    past = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert retry_after_s(past) == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


async def test_an_http_date_is_waited_out(sleeps: list[float]) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    transport, calls = replies(503, 200, retry_after=later)
    async with FhirClient("http://fhir.test", transport=transport) as fhir:
        assert (await fhir.read("Patient/p1"))["id"] == "p1"
    assert len(calls) == 2 and 3 <= sleeps[0] <= 5


async def test_a_wait_longer_than_allowed_is_a_clear_error_at_once(sleeps: list[float]) -> None:
    transport, calls = replies(429, retry_after="3600")
    async with FhirClient("http://fhir.test", transport=transport) as fhir:
        with pytest.raises(FhirUnavailable) as caught:
            await fhir.read("Patient/p1")
    assert len(calls) == 1 and sleeps == []
    message = str(caught.value)
    assert "rate limiting" in message and "retry after 3600 s" in message


async def test_a_rate_limit_that_never_clears_is_unavailable(sleeps: list[float]) -> None:
    transport, calls = replies(429, retry_after="1")
    async with FhirClient("http://fhir.test", transport=transport, retries=2) as fhir:
        with pytest.raises(FhirUnavailable, match="HTTP 429"):
            await fhir.read("Patient/p1")
    assert len(calls) == 3 and sleeps == [1.0, 1.0]


async def test_a_refused_post_waits_as_asked_then_goes_through(sleeps: list[float]) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "2"})
        return httpx.Response(201, json={"resourceType": "Observation", "id": "o1"})

    async with FhirClient("http://fhir.test", transport=httpx.MockTransport(handler)) as fhir:
        created = await fhir.create({"resourceType": "Observation", "status": "final"})
    assert created["id"] == "o1" and len(calls) == 2 and sleeps == [2.0]
