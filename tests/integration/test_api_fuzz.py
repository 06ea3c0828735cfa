"""The copilot API fuzzed from its own OpenAPI schema (schemathesis) as a real process: uvicorn,
the SQLite thread store, SEKMET as a process, the scripted model. No 5xx, every response
as its schema says, no traceback in the server's log."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from bench import drills

pytestmark = pytest.mark.integration
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
SEEN: Counter[str] = Counter()
# Per operation and mode; docs/safety.md gives the figures of a longer run.
EXAMPLES = int(os.environ.get("WARDROUND_FUZZ_EXAMPLES", "12"))


@dataclass
class LiveApi:
    stack: drills.Stack
    url: str
    patient: str
    thread: str


@pytest.fixture(scope="module")
def live_api() -> Iterator[LiveApi]:
    stack = drills.new_stack("fuzz")
    try:
        stack.fhir_up()
        patients = stack.load_charts()
        stack.helper("api", ["api-serve"], "/api/health")
        url = stack.url("api")
        thread = httpx.post(f"{url}/api/threads", json={"patient_id": patients[0]}, timeout=60)
        yield LiveApi(stack, url, patients[0], thread.json()["thread_id"])
    finally:
        stack.down()


def fuzz_operation(
    operation: Any, mode: GenerationMode, live_api: LiveApi, failures: list[str]
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)  # fmt: skip
    def one(case: schemathesis.Case) -> None:
        # Random ids only reach "not found"; half the cases use a real thread and patient
        # so the fuzzed bodies reach the graph, the thread store and FHIR.
        SEEN["cases"] += 1
        if SEEN["cases"] % 2:
            if case.path_parameters and "thread_id" in case.path_parameters:
                case.path_parameters["thread_id"] = live_api.thread
            if isinstance(case.body, dict) and "patient_id" in case.body:
                case.body["patient_id"] = live_api.patient
        response = case.call(base_url=live_api.url, timeout=120)
        SEEN[f"{response.status_code // 100}xx"] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as err:  # a failed check: keep fuzzing the other operations
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {err}")

    one()


def test_api_holds_its_schema_under_fuzzing(live_api: LiveApi) -> None:
    # schemathesis' pytest plugin predates pytest 9, so hypothesis drives its strategies.
    schema = schemathesis.openapi.from_url(f"{live_api.url}/api/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        SEEN["operations"] += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(operation, mode, live_api, failures)
            except Unsatisfiable:  # nothing to make invalid (an operation without input)
                SEEN["unsatisfiable"] += 1
    SEEN["failures"] = len(failures)
    assert not failures, "\n".join(failures[:10])
    assert SEEN["5xx"] == 0 and SEEN["cases"] > 100


def test_no_traceback_in_the_server_log(live_api: LiveApi) -> None:
    log = drills.log_text(live_api.stack.settings.home / "logs" / "api.log")
    print(f"\nfuzz: {dict(SEEN)}; server log {len(log.splitlines())} lines")
    assert drills.TRACEBACK not in log, log[-3000:]
