"""A hostile FHIR server for tests: an httpx transport in front of a real one (SEKMET).

It answers the way lenient or broken servers do, all at once, and says nothing about it:
- its CapabilityStatement claims a `patient` search parameter for every type;
- it ignores `Prefer: handling=strict` and drops the OperationOutcome entries that would
  say a parameter was ignored;
- every page of a patient search carries other patients' records of the same type, and a
  search with `_include` gets another patient's Patient and records as included entries;
- `Patient/{id}/$everything` comes back with another patient's whole chart mixed in;
- with `swap_patient_reads`, reading `Patient/{id}` returns another Patient.

What it injected is kept in `injected` (references), so a test can check the attack
happened and that none of it came out of the client.

`HostileProxy` serves the same behaviour over HTTP (an ASGI app forwarding to a real
server's base URL), for entry points that build their own client from a base URL or run in
another process; `hostile_server` serves it on a loopback port for a block of code.

    python -m wardround.testing.hostile_fhir 5    # measure: raw SEKMET vs the client, 5 patients
    python -m wardround.testing.hostile_fhir serve --upstream http://127.0.0.1:8090/fhir --port 8095
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from wardround.fhir.compartment import COMPARTMENT

__all__ = ["HostileProxy", "HostileTransport", "hostile_server", "names_another"]

JSON = "application/fhir+json"
_PATIENT_READ = re.compile(r"/Patient/([A-Za-z0-9\-.]{1,64})$")
_EVERYTHING = re.compile(r"/Patient/([A-Za-z0-9\-.]{1,64})/\$everything$")
_SEARCH = re.compile(r"/([A-Z][A-Za-z]+)$")
FOREIGN_PER_PAGE = 5
# Types it claims a `patient` search for, whether the server behind it has one or not.
CLAIMED = frozenset({*COMPARTMENT, "Device"})


class HostileTransport(httpx.AsyncBaseTransport):
    """Wraps `inner` (the real server's transport) serving at `base_url`."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        base_url: str,
        *,
        swap_patient_reads: bool = False,
    ) -> None:
        self.inner = inner
        self.base = httpx.URL(base_url.rstrip("/"))
        self.swap_patient_reads = swap_patient_reads
        self.injected: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "prefer" in request.headers:
            del request.headers["prefer"]  # strict handling? never heard of it
        path = request.url.path.removeprefix(self.base.path)
        if request.method != "GET":
            return await self.inner.handle_async_request(request)
        if path == "/metadata":
            return await self._metadata(request)
        if match := _EVERYTHING.fullmatch(path):
            return await self._everything(request, match.group(1))
        if (match := _PATIENT_READ.fullmatch(path)) and self.swap_patient_reads:
            return await self._swapped_patient(request, match.group(1))
        if (match := _SEARCH.fullmatch(path)) and _patient_of(request.url):
            return await self._search(request, match.group(1), _patient_of(request.url))
        return await self.inner.handle_async_request(request)

    # ------------------------------------------------------------------ lies

    async def _metadata(self, request: httpx.Request) -> httpx.Response:
        statement = await self._json(request)
        for rest in statement.get("rest") or []:
            listed = {r.get("type") for r in rest.get("resource") or []}
            rest["resource"] = [*rest.get("resource", []), *({"type": t} for t in CLAIMED - listed)]
            for resource in rest["resource"]:
                params = resource.setdefault("searchParam", [])
                if not any(p.get("name") == "patient" for p in params):
                    params.append({"name": "patient", "type": "reference"})
        return _reply(statement)

    async def _search(self, request: httpx.Request, rtype: str, pid: str) -> httpx.Response:
        bundle = await self._json(request)
        entries = [e for e in bundle.get("entry") or [] if not _is_outcome(e)]
        foreign = await self._foreign(rtype, pid, FOREIGN_PER_PAGE)
        entries += [_entry(r, "match") for r in foreign]
        if request.url.params.get("_include"):
            other = await self._other_patient(pid)
            if other is not None:
                entries.append(_entry(other, "include"))
                entries += [
                    _entry(r, "include") for r in await self._foreign("Observation", pid, 3)
                ]
        bundle["entry"] = entries
        return _reply(bundle)

    async def _everything(self, request: httpx.Request, pid: str) -> httpx.Response:
        bundle = await self._json(request)
        other = await self._other_patient(pid)
        if other is not None and bundle.get("resourceType") == "Bundle":
            theirs = await self._get(f"/Patient/{other['id']}/$everything")
            extra = [e for e in theirs.get("entry") or [] if not _is_outcome(e)]
            self.injected += [
                _ref(e["resource"]) for e in extra if names_another(e["resource"], pid)
            ]
            bundle["entry"] = [*(bundle.get("entry") or []), *extra]
        return _reply(bundle)

    async def _swapped_patient(self, request: httpx.Request, pid: str) -> httpx.Response:
        other = await self._other_patient(pid)
        if other is None:
            return await self.inner.handle_async_request(request)
        self.injected.append(_ref(other))
        return _reply(other)

    # --------------------------------------------------------------- helpers

    async def _foreign(self, rtype: str, pid: str, count: int) -> list[dict[str, Any]]:
        """Up to `count` records of `rtype` of patients other than `pid`."""
        found: list[dict[str, Any]] = []
        for other in await self._others(pid):
            page = await self._get(f"/{rtype}", patient=other["id"], _count=str(count))
            found += [r for r in _resources(page) if r.get("resourceType") == rtype]
            found = [r for r in found if names_another(r, pid)]
            if len(found) >= count:
                break
        self.injected += [_ref(r) for r in found[:count]]
        return found[:count]

    async def _other_patient(self, pid: str) -> dict[str, Any] | None:
        others = await self._others(pid)
        if others:
            self.injected.append(_ref(others[0]))
        return others[0] if others else None

    async def _others(self, pid: str) -> list[dict[str, Any]]:
        page = await self._get("/Patient", _count="50")
        return [r for r in _resources(page) if r.get("id") != pid][:3]

    async def _get(self, path: str, **params: str) -> dict[str, Any]:
        url = self.base.copy_with(path=self.base.path + path, params=params)
        return await self._json(httpx.Request("GET", url, headers={"Accept": JSON}))

    async def _json(self, request: httpx.Request) -> dict[str, Any]:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        return json.loads(body) if body else {}


def _patient_of(url: httpx.URL) -> str:
    value = url.params.get("patient") or url.params.get("subject") or ""
    return value.removeprefix("Patient/")


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry") or [] if not _is_outcome(e)]


def _is_outcome(entry: dict[str, Any]) -> bool:
    resource = entry.get("resource") or {}
    return (entry.get("search") or {}).get("mode") == "outcome" or (
        resource.get("resourceType") == "OperationOutcome"
    )


def names_another(resource: dict[str, Any], pid: str) -> bool:
    """Whether `resource` is another Patient, or names a Patient and never Patient/`pid`
    (read from its JSON text, independently of the client's compartment table)."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id") != pid
    text = json.dumps(resource)
    return '"Patient/' in text and f'"Patient/{pid}"' not in text


def _entry(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    return {"fullUrl": _ref(resource), "resource": resource, "search": {"mode": mode}}


def _ref(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _reply(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"content-type": JSON})


# ------------------------------------------------------------------ over HTTP

# Not forwarded either way: hop-by-hop headers, and what the proxy recomputes (it decodes
# bodies, so it never passes on a compressed one).
_REQUEST_DROPS = frozenset({"host", "content-length", "connection", "transfer-encoding",
                            "accept-encoding", "keep-alive", "upgrade"})  # fmt: skip
_RESPONSE_DROPS = frozenset({"content-length", "content-encoding", "connection",
                             "transfer-encoding", "keep-alive"})  # fmt: skip


class HostileProxy:
    """An ASGI app that serves `HostileTransport` over HTTP in front of `upstream` (a FHIR
    base URL): a request for path P (with its query) is sent to P at upstream's origin, so
    the proxy's FHIR base is its own origin plus upstream's path. `inner` is the transport
    to upstream (default: plain HTTP)."""

    def __init__(
        self,
        upstream: str,
        *,
        inner: httpx.AsyncBaseTransport | None = None,
        swap_patient_reads: bool = False,
    ) -> None:
        self.upstream = httpx.URL(upstream.rstrip("/"))
        self.transport = HostileTransport(
            inner or httpx.AsyncHTTPTransport(), str(self.upstream),
            swap_patient_reads=swap_patient_reads,
        )  # fmt: skip

    @property
    def injected(self) -> list[str]:
        return self.transport.injected

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        target = raw_path + (b"?" + query if query else b"")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope.get("headers") or []
            if k.decode("latin-1").lower() not in _REQUEST_DROPS
        ]
        request = httpx.Request(
            scope["method"], self.upstream.copy_with(raw_path=target), headers=headers,
            content=body,
        )  # fmt: skip
        try:
            response = await self.transport.handle_async_request(request)
            content = await response.aread()
            status, kept = response.status_code, response.headers.multi_items()
        except httpx.HTTPError as exc:
            status, kept = 502, [("content-type", JSON)]
            content = json.dumps(_outcome(f"upstream {self.upstream}: {exc}")).encode()
        out = [(k.encode(), v.encode()) for k, v in kept if k.lower() not in _RESPONSE_DROPS]
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": content})


def _outcome(text: str) -> dict[str, Any]:
    issue = {"severity": "error", "code": "transient", "diagnostics": text}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


@dataclass
class HostileServer:
    """A `HostileProxy` being served: `url` is its FHIR base."""

    url: str
    proxy: HostileProxy

    @property
    def injected(self) -> list[str]:
        return self.proxy.injected


@contextmanager
def hostile_server(
    upstream: str, *, port: int | None = None, swap_patient_reads: bool = False
) -> Iterator[HostileServer]:
    """`with hostile_server(url) as server:` the hostile behaviour in front of `upstream`,
    served on a loopback port (a thread of this process) at `server.url` until the block
    ends; `server.injected` is what it slipped in."""
    from wardround.testing.loopback import LoopbackServer

    proxy = HostileProxy(upstream, swap_patient_reads=swap_patient_reads)
    with LoopbackServer(proxy, port=port) as served:
        yield HostileServer(served.url + proxy.upstream.path.rstrip("/"), proxy)


def serve(upstream: str, *, host: str = "127.0.0.1", port: int = 8095, swap: bool = False) -> None:
    """Serve the hostile proxy in front of `upstream` until interrupted."""
    import sys

    import uvicorn

    proxy = HostileProxy(upstream, swap_patient_reads=swap)
    base = f"http://{host}:{port}{proxy.upstream.path.rstrip('/')}"
    print(f"hostile FHIR server at {base} -> {proxy.upstream}", file=sys.stderr, flush=True)
    uvicorn.run(proxy, host=host, port=port, log_level="warning", lifespan="off")


# ------------------------------------------------------------------ measuring


async def measure(patients: int) -> dict[str, Any]:
    """Load `patients` PySynthea charts into SEKMET in-process; count, per type, the foreign
    records a raw lenient `patient=` search returns, then what the client returns for the
    types that leaked and for `$everything`, on SEKMET and behind this proxy."""
    import tempfile
    from pathlib import Path

    from wardround.fhir.client import FhirClient, FhirUnsupportedSearch
    from wardround.fhir.records import RECORD_TYPES, fetch_records
    from wardround.testing.sample_charts import synthea_chart
    from wardround.testing.sekmet_inprocess import BASE_URL, load_chart, sekmet_app

    app = sekmet_app(Path(tempfile.mkdtemp(prefix="wardround-hostile-")))

    def plain() -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=app)

    async with FhirClient(BASE_URL, transport=plain(), timeout=600) as loader:
        pids = [
            await load_chart(loader, json.loads(synthea_chart(42 + n))) for n in range(patients)
        ]
    raw: dict[str, list[int]] = {}
    async with httpx.AsyncClient(transport=plain(), timeout=600) as http:
        for rtype in RECORD_TYPES:
            for pid in pids:
                page = await http.get(
                    f"{BASE_URL}/{rtype}", params={"patient": pid, "_count": 1000}
                )
                found = [r for r in _resources(page.json()) if r.get("resourceType") == rtype]
                total = raw.setdefault(rtype, [0, 0])
                total[0] += len(found)
                total[1] += sum(names_another(r, pid) for r in found)
    leaked = [t for t, (_, foreign) in raw.items() if foreign]
    report: dict[str, Any] = {"raw": {t: raw[t] for t in leaked}}
    for name in ("sekmet", "hostile"):
        transport = plain() if name == "sekmet" else HostileTransport(plain(), BASE_URL)
        out, left_out = 0, set()
        async with FhirClient(BASE_URL, transport=transport, timeout=600) as client:
            for pid in pids:
                for rtype in leaked:
                    try:
                        found = await fetch_records(client, pid, rtype, limit=1000)
                    except FhirUnsupportedSearch:
                        left_out.add(rtype)
                        continue
                    out += sum(names_another(r, pid) for r in found)
                out += sum(names_another(r, pid) for r in await client.everything(pid))
            report[name] = {
                "foreign_out": out,
                "dropped": client.dropped,
                "left_out": sorted(left_out),
            }
    return report


def main(argv: list[str] | None = None) -> None:
    """`serve --upstream URL [--port N]`, or the measurement: `[PATIENTS]`."""
    import argparse
    import asyncio
    import logging
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        parser = argparse.ArgumentParser(prog="python -m wardround.testing.hostile_fhir serve")
        parser.add_argument("--upstream", required=True, help="the real server's FHIR base URL")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8095)
        parser.add_argument("--swap-patient-reads", action="store_true")
        opts = parser.parse_args(args[1:])
        serve(opts.upstream, host=opts.host, port=opts.port, swap=opts.swap_patient_reads)
        return
    logging.disable(logging.WARNING)  # each drop is a log line
    count = int(args[0]) if args else 5  # PySynthea patients
    print(json.dumps(asyncio.run(measure(count)), indent=1))


if __name__ == "__main__":
    main()
