"""Big charts: the manifest, a planner question (all but the model) and the chart panel on
the demo's PySynthea chart and on one ten times its size, with time and peak memory.

    .venv/bin/python -m bench.big_chart [--scale 10] [--repeat 2]

The demo chart is one PySynthea patient (seed 42, as the tests and `wardround stack up`
make them). The big chart is the same patient with its clinical records copied `scale - 1`
more times under new ids and dates moved back by whole weeks per copy (references inside a
copy point at that copy's records; the patient, practitioners and organisations are
shared). Both are loaded into one SEKMET (ANALYZEd), served on loopback from this process;
each case runs in a fresh child process that talks to it over HTTP, so its peak RSS
(`ru_maxrss`) and Python peak (`tracemalloc`) are the client's alone. The planner uses the
repo's scripted chat model (instant replies) and a word-overlap ranking instead of MiniLM,
so its figures are the framework's: FHIR reads, manifest, options, computation.
Writes `bench/out/big_chart.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).parent / "out"
SHARED = {"Patient", "Practitioner", "PractitionerRole", "Organization", "Location"}
_URN = re.compile(r"urn:uuid:([0-9a-fA-F-]{36})")
_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})")
QUESTIONS = {
    "latest": ("What was the most recent body weight?", "latest_value", "Body Weight"),
    "count": ("How many body weight measurements were recorded?", "how_many", "Body Weight"),
}


def copies(bundle: dict[str, Any], scale: int, locations: dict[str, str]) -> list[list[dict]]:
    """The clinical entries of `bundle`, `scale - 1` times over: one transaction's entries
    per copy (a copy's references point inside it)."""
    clinical = [e for e in bundle["entry"] if e["resource"]["resourceType"] not in SHARED]
    clinical = [e for e in clinical if e["resource"]["resourceType"] != "Provenance"]
    own = {_URN.search(e["fullUrl"]).group(1) for e in clinical if _URN.search(e["fullUrl"])}
    text = json.dumps(clinical)
    out: list[list[dict]] = []
    for k in range(1, scale):
        fresh = {u: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{u}/{k}")) for u in own}

        def ref(m: re.Match[str], fresh: dict[str, str] = fresh) -> str:
            u = m.group(1)
            return f"urn:uuid:{fresh[u]}" if u in fresh else locations.get(u, m.group(0))

        def moved(m: re.Match[str], k: int = k) -> str:
            try:
                day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                return m.group(0)
            return (day - timedelta(weeks=k)).isoformat()

        copied = json.loads(_DATE.sub(moved, _URN.sub(ref, text)))
        for entry in copied:
            entry["request"] = {"method": "POST", "url": entry["resource"]["resourceType"]}
            entry["resource"].pop("id", None)
        out.append(copied)
    return out


async def load(folder: Path, scale: int) -> dict[str, Any]:
    """SEKMET at `folder` with the demo chart and the `scale`x chart; their patient ids."""
    from wardround.testing.sample_charts import synthea_chart
    from wardround.testing.sekmet_inprocess import asgi_client, load_chart, sekmet_app

    text = synthea_chart()
    app = sekmet_app(folder)
    sizes: dict[str, Any] = {}
    async with asgi_client(app, timeout=600) as client:
        demo = await load_chart(client, json.loads(text))
        big_bundle = json.loads(text)
        response = await client.transaction(big_bundle)
        locations = {}
        for sent, got in zip(big_bundle["entry"], response.get("entry", []), strict=False):
            where = (got.get("response") or {}).get("location", "")
            m = _URN.search(sent.get("fullUrl", ""))
            if m and where:
                locations[m.group(1)] = "/".join(where.split("/_history")[0].split("/")[-2:])
        big = next(v.split("/")[1] for v in locations.values() if v.startswith("Patient/"))
        extra = copies(json.loads(text), scale, locations)
        for entries in extra:
            await client.transaction(
                {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            )
        sizes = {"demo_bundle_bytes": len(text), "demo_entries": len(json.loads(text)["entry"])}
        sizes["big_entries"] = sizes["demo_entries"] + sum(map(len, extra))
    for db in folder.rglob("*.db"):
        with sqlite3.connect(db) as conn:
            conn.execute("ANALYZE")
    return {"demo": demo, "big": big, **sizes}


def overlap(question: str, names: Sequence[str]) -> np.ndarray:
    """Word overlap in place of MiniLM (no model in the measured process)."""
    words = set(re.findall(r"[a-z0-9]+", question.lower()))
    return np.array([len(words & set(re.findall(r"[a-z0-9]+", n.lower()))) for n in names], float)


def scripted(kind: str, about: str) -> Any:
    from wardround.testing.scripted_chat import ScriptedChatModel

    def respond(messages: Sequence[Any]) -> str:
        text = str(messages[-1].content)
        options = [line[2:] for line in text.splitlines() if line.startswith("- ")]
        pick = next((o for o in options if about.lower() in o.lower()), options[0])
        if "kind" in str(messages[0].content).lower() or "Options:" in text:
            return json.dumps({"kind": kind, "about": pick})
        refs = re.findall(r"\b[A-Z][A-Za-z]+/[A-Za-z0-9\-.]+", text)
        return json.dumps({"about": pick, "citations": refs[:1], "answer": "scripted"})

    model = ScriptedChatModel(respond=respond)
    model.metadata = {"dialect": "none", "protocol": "json"}
    return model


async def case(what: str, base_url: str, patient: str, repeat: int) -> dict[str, Any]:
    """One measurement in this (fresh) process: wall time of each repeat, peaks, sizes."""
    from wardround.fhir.client import FhirClient
    from wardround.fhir.manifest import build_manifest
    from wardround.graphs.ehr_qa import answer_question
    from wardround.graphs.ehr_qa.planner import _MANIFESTS
    from wardround.server.chart import chart_summary

    times: list[float] = []
    detail: dict[str, Any] = {}
    tracemalloc.start()
    async with FhirClient(base_url, timeout=600) as fhir:
        for _ in range(repeat):
            _MANIFESTS.clear()
            started = time.perf_counter()
            if what == "manifest":
                m = await build_manifest(fhir, patient)
                detail = {"records": sum(t.count for t in m.types.values()), "partial": m.partial}
            elif what == "chart_panel":
                s = await chart_summary(fhir, patient)
                detail = {"records": s.records, "labs": len(s.labs), "partial": s.partial}
            else:
                question, kind, about = QUESTIONS[what.removeprefix("planner_")]
                r = await answer_question(
                    question, patient, model=scripted(kind, about), fhir=fhir, graph="planner",
                    similarity=overlap,
                )  # fmt: skip
                detail = {"answer": r.answer[:160], "retrieved": len(r.retrieved)}
            times.append(time.perf_counter() - started)
    _, py_peak = tracemalloc.get_traced_memory()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "first_s": round(times[0], 3),
        "best_s": round(min(times), 3),
        "python_peak_mib": round(py_peak / 2**20, 1),
        "peak_rss_mib": round(rss_kib / 1024, 1),
        **detail,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--case")  # internal: one measurement in a child process
    parser.add_argument("--base-url")
    parser.add_argument("--patient")
    args = parser.parse_args(argv)
    if args.case:
        result = asyncio.run(case(args.case, args.base_url, args.patient, args.repeat))
        print(json.dumps(result))
        return
    from wardround.testing.loopback import LoopbackServer
    from wardround.testing.sekmet_inprocess import sekmet_app

    folder = Path(tempfile.mkdtemp(prefix="wardround-big-chart-"))
    started = time.perf_counter()
    loaded = asyncio.run(load(folder, args.scale))
    load_s = time.perf_counter() - started
    print(f"loaded in {load_s:.0f} s: {json.dumps(loaded)}", flush=True)
    rows: list[dict[str, Any]] = []
    cases = ["manifest", "chart_panel", "planner_latest", "planner_count"]
    with LoopbackServer(sekmet_app(folder, base_url="http://127.0.0.1/fhir")) as server:
        base = f"{server.url}/fhir"
        for what in cases:
            for size in ("demo", "big"):
                argv_ = [sys.executable, "-m", "bench.big_chart", "--case", what,
                         "--base-url", base, "--patient", loaded[size],
                         "--repeat", str(args.repeat)]  # fmt: skip
                done = subprocess.run(argv_, capture_output=True, text=True, timeout=1800)
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
                row = {"case": what, "chart": size, **json.loads(done.stdout.splitlines()[-1])}
                print(json.dumps(row), flush=True)
                rows.append(row)
    OUT.mkdir(exist_ok=True)
    report = {"scale": args.scale, "repeat": args.repeat, "load_s": round(load_s, 1),
              **loaded, "rows": rows}  # fmt: skip
    (OUT / "big_chart.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
