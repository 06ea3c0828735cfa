"""What the `fhir` and `synthea_fhir` fixtures (conftest.py) yield.

The server and the charts themselves are production pieces: `wardround.stack.sekmet_inprocess`
(SEKMET in this process) and `wardround.stack.sample_charts` (carebundle, the hand-made chart,
a PySynthea patient).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wardround.tools.fhir.client import FhirClient


@dataclass
class FhirFixture:
    """A running SEKMET with charts loaded: `patients[label]` is the server's Patient id."""

    app: Any
    client: FhirClient
    patients: dict[str, str] = field(default_factory=dict)
    bundles: dict[str, dict] = field(default_factory=dict)
