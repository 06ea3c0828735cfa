"""Card-set latency of the CDS Hooks service: p50/p95 per hook, JWT verification included.

    .venv/bin/python -m bench.cds_hooks [-n 50]

In-process SEKMET holding one PySynthea whole-life chart; the CDS app with a signed JWT per
call (JWK Set on loopback), the starter corpus indexed and the rules' passages warmed.
Measured: patient-view reading FHIR with the hook's token (no prefetch), patient-view with
everything prefetched, order-sign with three draft orders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from wardround.fhir.auth import BearerAuth
from wardround.fhir.client import FhirClient
from wardround.graphs.copilot.audit import AuditLog
from wardround.server.cds_hooks import create_cds_app
from wardround.server.cds_hooks.passages import IndexPassages
from wardround.server.cds_hooks.prefetch import PREFETCH, fill_template
from wardround.settings import Settings
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sample_charts import synthea_chart
from wardround.testing.sekmet_inprocess import BASE_URL, asgi_client, load_chart, sekmet_app
from wardround.tools.guidelines.index import GuidelineIndex, index_files
from wardround.tools.guidelines.ingest import corpus_dir, discover

ISSUER, KID, CDS = "https://ehr.bench", "bench-key", "http://cds.bench"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(aud: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    return {"Authorization": "Bearer " + jwt.encode(claims, KEY, "RS384", {"kid": KID})}


def jwks_app() -> Starlette:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))

    async def serve(_: Any) -> JSONResponse:
        return JSONResponse({"keys": [{**public, "kid": KID, "alg": "RS384"}]})

    return Starlette(routes=[Route("/jwks", serve)])


def hook(name: str, pid: str, **extra: Any) -> dict[str, Any]:
    context = {"userId": "Practitioner/bench", "patientId": pid, **extra.pop("context", {})}
    return {"hook": name, "hookInstance": str(uuid.uuid4()), "fhirServer": BASE_URL,
            "fhirAuthorization": {"access_token": "bench", "token_type": "Bearer",
                                  "expires_in": 300, "scope": "patient/*.read", "subject": "wardround"},
            "context": context, **extra}  # fmt: skip


async def prefetched(fhir: FhirClient, pid: str) -> dict[str, Any]:
    out = {}
    for key, template in PREFETCH.items():
        path, _, query = fill_template(template, {"patientId": pid}).partition("?")
        if not query:
            out[key] = await fhir.read(path)
        else:
            found = await fhir.search(path, [tuple(p.split("=", 1)) for p in query.split("&")])
            out[key] = {"resourceType": "Bundle", "type": "searchset",
                        "entry": [{"resource": r} for r in found]}  # fmt: skip
    return out


def drafts(pid: str) -> dict[str, Any]:
    names = [
        "Amoxicillin 250 MG Oral Capsule",
        "Lisinopril 10 MG Oral Tablet",
        "Atorvastatin 20 MG",
    ]
    entries = [{"resource": {"resourceType": "MedicationRequest", "id": f"d{i}", "status": "draft",
                             "intent": "order", "medicationCodeableConcept": {"text": n},
                             "subject": {"reference": f"Patient/{pid}"}}} for i, n in enumerate(names)]  # fmt: skip
    return {"resourceType": "Bundle", "entry": entries}


async def timed(client: httpx.AsyncClient, service: str, body: dict[str, Any]) -> tuple[float, int]:
    url = f"{CDS}/cds-services/{service}"
    start = time.perf_counter()
    response = await client.post(url, json=body, headers=token(url))
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, len(response.json()["cards"])


async def main(n: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-cds-"))
    sekmet = sekmet_app(work / "fhir")
    fhir = asgi_client(sekmet)
    pid = await load_chart(fhir, json.loads(synthea_chart()))
    index = GuidelineIndex(work / "chroma")
    index_files(index, discover([corpus_dir()]))
    passages = IndexPassages(index)

    def reader(base: str, tok: str | None) -> FhirClient:
        transport = httpx.ASGITransport(app=sekmet)
        return FhirClient(base, auth=BearerAuth(tok) if tok else None, transport=transport)

    with LoopbackServer(jwks_app()) as keys:
        settings = Settings(home=work, cds_trusted_issuers={ISSUER: f"{keys.url}/jwks"})
        app = create_cds_app(
            settings, audit=AuditLog(work / "audit.jsonl"), passages=passages, fhir=reader
        )
        app.state.cds_hooks.warm()
        sent = await prefetched(fhir, pid)
        cases = {
            "patient-view, FHIR read": ("wardround-patient-view", lambda: hook("patient-view", pid)),
            "patient-view, prefetched": ("wardround-patient-view",
                                         lambda: hook("patient-view", pid, prefetch=sent)),
            "order-sign, prefetched": ("wardround-order-sign", lambda: hook(
                "order-sign", pid, prefetch=sent, context={"draftOrders": drafts(pid)})),
        }  # fmt: skip
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=CDS
        ) as client:
            records = sum(len(v.get("entry", [])) if "entry" in v else 1 for v in sent.values())
            print(f"chart: {records} records prefetched; {n} calls per case, sequential\n")
            for label, (service, make) in cases.items():
                await timed(client, service, make())  # first call: JWKS fetch, connections
                runs = [await timed(client, service, make()) for _ in range(n)]
                times = sorted(t for t, _ in runs)
                p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
                print(f"{label:28} p50 {statistics.median(times) * 1000:7.1f} ms   "
                      f"p95 {p95 * 1000:7.1f} ms   cards {runs[0][1]}")  # fmt: skip
    await fhir.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50)
    asyncio.run(main(parser.parse_args().n))
