"""What the evaluation tests share: the benchmark data folder, and what the `eval_fhir`
fixture (conftest.py) yields: SEKMET holding the two charts with known answers
(`wardround.testing.sample_charts.ann` and `bob`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wardround.fhir.client import FhirClient

# The public benchmark files (CI points WARDROUND_BENCHMARK_DATA_DIR at a read-only copy).
BENCHMARK_DATA = Path(os.environ.get("WARDROUND_BENCHMARK_DATA_DIR", "/work/shared/data"))


@dataclass
class EvalFhir:
    """SEKMET in-process holding the two charts; `ids` are their Patient ids."""

    app: Any
    client: FhirClient
    ids: dict[str, str]
