"""SEKMET inside this process: a FHIR server with no socket, reached through
`httpx.ASGITransport`, or served on loopback with `stack.loopback.LoopbackServer`.

The local stack runs SEKMET as its own process (`stack/fhir_server.py`); this is the quick
form for benches, tests and notebooks that want a private, throwaway FHIR server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from wardround.fhir.client import FhirClient

BASE_URL = "http://sekmet.test/fhir"


def sekmet_app(
    data_dir: Path, *, base_url: str = BASE_URL, server_auth: dict[str, Any] | None = None
) -> Any:
    """A SEKMET FastAPI app storing under `data_dir`: simulator off (it invents resources),
    strict inbound validation, quiet traffic log. `server_auth` is SEKMET's auth section."""
    from sekmet.config import Settings as SekmetSettings
    from sekmet.main import create_app

    settings = SekmetSettings.model_validate(
        {
            "base_url": base_url,
            "host": "127.0.0.1",
            "data_dir": str(data_dir),
            "simulator": {"enabled": False},
            "validation": {"inbound": "strict"},
            "log_inbound": False,
            "server_auth": server_auth or {"types": ["none"]},
        }
    )
    return create_app(settings)


def asgi_client(app: Any, *, base_url: str = BASE_URL, **kwargs: Any) -> FhirClient:
    """A FhirClient talking to an in-process ASGI app; no retry backoff unless asked for."""
    kwargs.setdefault("backoff_s", 0.0)
    return FhirClient(base_url, transport=httpx.ASGITransport(app=app), **kwargs)


async def load_chart(client: FhirClient, bundle: dict[str, Any]) -> str:
    """POST a transaction Bundle; return the server id of the Patient it created.

    Raises ValueError when the server's response names no Patient."""
    response = await client.transaction(bundle)
    for entry in response.get("entry", []):
        location = (entry.get("response") or {}).get("location", "")
        if "Patient/" in location:
            return str(location.split("Patient/")[1].split("/")[0])
    raise ValueError(f"no Patient created: {json.dumps(response)[:300]}")
