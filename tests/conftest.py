"""Fixtures shared by the unit and integration tests: SEKMET in this process with small
synthetic charts loaded. Each is module-scoped: a test file gets its own server.

Helper modules beside this file (fakes.py, copilot_fakes.py, ...) are imported by their
bare names: pytest puts this folder on sys.path (`pythonpath` in pyproject.toml), and the
tests are not part of the installed package.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from eval_fixtures import EvalFhir
from fhir_fixtures import FhirFixture
from wardround.stack.sample_charts import (
    carebundle_charts,
    handmade_chart,
    load_ann_and_bob,
    synthea_chart,
)
from wardround.stack.sekmet_inprocess import asgi_client, load_chart, sekmet_app


@pytest.fixture(scope="module")
async def fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FhirFixture]:
    """SEKMET in-process with the carebundle charts and the hand-made chart loaded."""
    app = sekmet_app(tmp_path_factory.mktemp("sekmet"))
    client = asgi_client(app)
    fixture = FhirFixture(app=app, client=client)
    charts = {**carebundle_charts(), "handmade": handmade_chart()}
    for label, bundle in charts.items():
        fixture.bundles[label] = bundle
        fixture.patients[label] = await load_chart(client, json.loads(json.dumps(bundle)))
    yield fixture
    await client.aclose()


@pytest.fixture(scope="module")
async def synthea_fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FhirFixture]:
    """SEKMET in-process with one PySynthea patient (whole-life record) loaded."""
    app = sekmet_app(tmp_path_factory.mktemp("sekmet-synthea"))
    client = asgi_client(app)
    bundle = json.loads(synthea_chart())
    fixture = FhirFixture(app=app, client=client, bundles={"synthea": bundle})
    fixture.patients["synthea"] = await load_chart(client, json.loads(json.dumps(bundle)))
    yield fixture
    await client.aclose()


@pytest.fixture(scope="module")
async def eval_fhir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EvalFhir]:
    """SEKMET in-process holding Ann's and Bob's charts (known answers)."""
    app = sekmet_app(tmp_path_factory.mktemp("sekmet-evals"))
    client = asgi_client(app)
    ids = await load_ann_and_bob(client)
    yield EvalFhir(app=app, client=client, ids=ids)
    await client.aclose()
