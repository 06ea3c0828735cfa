"""What the `fhir` and `synthea_fhir` fixtures (conftest.py) yield, and helpers over it.

The server and the charts themselves are production pieces: `wardround.testing.sekmet_inprocess`
(SEKMET in this process) and `wardround.testing.sample_charts` (carebundle, the hand-made chart,
a PySynthea patient).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from wardround.fhir.client import FhirClient


@dataclass
class FhirFixture:
    """A running SEKMET with charts loaded: `patients[label]` is the server's Patient id."""

    app: Any
    client: FhirClient
    patients: dict[str, str] = field(default_factory=dict)
    bundles: dict[str, dict] = field(default_factory=dict)


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to a real transport and keeps them, to count pages and read queries."""

    def __init__(self, inner: httpx.AsyncBaseTransport):
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


async def hba1c_refs(fhir: FhirFixture) -> list[str]:
    """The hand-made patient's HbA1c results, newest first, as references."""
    found = await fhir.client.search(
        "Observation",
        {"patient": fhir.patients["handmade"], "code": "4548-4", "_sort": "-date"},
    )
    return [f"Observation/{r['id']}" for r in found]
