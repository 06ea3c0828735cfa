"""The one place that says which tools an agent gets.

Every consumer (the copilot, the HTTP API, the MCP server, LangGraph Studio, the evals, the
benches) asks here, so a new tool is one function plus one line in `_builders`.

- `chart_tools(fhir, patient_id, settings, view=)`: the per-patient groups (the chart tools
  at a clinician's level, the FHIR reads and writes, plugins registered `per_patient`) bound
  to one patient; writes carry `REQUIRES_APPROVAL` and the resource they would write.
- `extra_tools(settings)`: the groups that need no patient (image search and guideline lookup
  when their indexes hold something, plugins).
- `patient_tools(...)`: both at once.
- Filters, one per kind of consumer: `patient_bound` (nothing that leaves the chart: what an
  agent bound to one patient gets), `read_only` (no writes: the EHR QA loop, read-only MCP),
  `needs_approval` (the writes, which wait for a clinician).
- `tool_specs()`: every tool over no backend, for schemas only (benches, docs); never run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.tools import BaseTool

from wardround.chart.view import ChartView
from wardround.settings import Settings
from wardround.tools.evidence import REQUIRES_APPROVAL

log = logging.getLogger(__name__)
SPEC_PATIENT = "spec-patient"  # a valid FHIR id for tools built only for their schemas
# Tools that search every patient: left out wherever an agent is bound to one chart.
LEAVES_CHART = frozenset({"find_patient"})
# Arguments not offered to a model or a remote client: a file path on the server is not theirs.
HIDDEN_ARGS = {"search_images": frozenset({"image_path"})}


def _chart(
    fhir: Any, patient_id: str, settings: Settings | None, view: ChartView | None = None
) -> list[BaseTool]:
    from wardround.tools.chart.tools import make_chart_tools

    return make_chart_tools(fhir, patient_id, view)


def _fhir(fhir: Any, patient_id: str, settings: Settings | None) -> list[BaseTool]:
    from wardround.tools.fhir.tools import make_fhir_tools

    return make_fhir_tools(fhir, patient_id=patient_id)


def _images(fhir: Any, patient_id: str, settings: Settings | None) -> list[BaseTool]:
    from wardround.tools.images.search import open_image_index
    from wardround.tools.images.tools import make_image_tools

    if settings is None:
        return make_image_tools(None)  # schemas only
    if not settings.chroma_url and not settings.chroma_dir.exists():
        return []  # opening would create an empty store as a side effect
    index = open_image_index(settings.chroma_url or settings.chroma_dir)
    return make_image_tools(index) if index.count() else []


def _guidelines(fhir: Any, patient_id: str, settings: Settings | None) -> list[BaseTool]:
    from wardround.tools.guidelines.index import GuidelineIndex
    from wardround.tools.guidelines.tools import make_guideline_tools

    if settings is None:
        return make_guideline_tools(None)  # schemas only
    index = GuidelineIndex(settings.chroma_url or settings.chroma_dir)
    return make_guideline_tools(index) if index.count() else []


Builder = Callable[..., list[BaseTool]]  # (fhir, patient_id, settings[, view=])
# name -> (builder, required, per_patient): an optional builder that fails is left out with a
# log line (a deployment without an image index still gets a copilot over the chart); a
# per-patient group is built bound to each chart, the others once.
_builders: dict[str, tuple[Builder, bool, bool]] = {
    "chart": (_chart, True, True),
    "fhir": (_fhir, True, True),
    "images": (_images, False, False),
    "guidelines": (_guidelines, False, False),
}
# Groups whose builder takes the chart as of the task's "now" (`view=`): enums of its codes.
_TAKES_VIEW = {"chart"}


def register(
    name: str,
    builder: Builder,
    *,
    required: bool = False,
    per_patient: bool = False,
    takes_view: bool = False,
) -> None:
    """Add a group of tools every agent gets from now on (a plugin's entry point);
    `takes_view`: the builder is also called with `view=` (a `ChartView` or None)."""
    _builders[name] = (builder, required, per_patient)
    if takes_view:
        _TAKES_VIEW.add(name)
    else:
        _TAKES_VIEW.discard(name)


def _build(
    name: str, fhir: Any, patient_id: str, settings: Settings | None, view: ChartView | None = None
) -> list[BaseTool]:
    builder, required, _ = _builders[name]
    extra = {"view": view} if name in _TAKES_VIEW else {}
    if required:
        return builder(fhir, patient_id, settings, **extra)
    try:
        return builder(fhir, patient_id, settings, **extra)
    except Exception as exc:  # an optional extra must not stop the agent
        log.warning("%s tools left out: %s: %s", name, type(exc).__name__, exc)
        return []


def patient_tools(fhir: Any, patient_id: str, settings: Settings) -> list[BaseTool]:
    """Every tool for one patient's chart, in registry order."""
    return [t for name in _builders for t in _build(name, fhir, patient_id, settings)]


def chart_tools(
    fhir: Any, patient_id: str, settings: Settings | None = None, *, view: ChartView | None = None
) -> list[BaseTool]:
    """The per-patient groups' tools, bound to `patient_id` (the chart tools, then the FHIR
    reads and writes, then plugins). `view`: the chart as of the task's "now", whose codes
    become the chart tools' enums; without one their arguments are names checked when run."""
    names = [n for n, (_, _, per_patient) in _builders.items() if per_patient]
    return [t for name in names for t in _build(name, fhir, patient_id, settings, view)]


def extra_tools(settings: Settings) -> list[BaseTool]:
    """The tools that need no patient (image search, guideline lookup, plugins)."""
    names = [n for n, (_, _, per_patient) in _builders.items() if not per_patient]
    return [t for name in names for t in _build(name, None, SPEC_PATIENT, settings)]


def needs_approval(tool: BaseTool) -> bool:
    return bool((tool.metadata or {}).get(REQUIRES_APPROVAL))


def read_only(tools: Sequence[BaseTool]) -> list[BaseTool]:
    return [t for t in tools if not needs_approval(t)]


def patient_bound(tools: Sequence[BaseTool]) -> list[BaseTool]:
    return [t for t in tools if t.name not in LEAVES_CHART]


def tool_specs() -> list[BaseTool]:
    """Every registered tool, built over no backend: for their names and schemas only."""
    return [t for name in _builders for t in _build(name, None, SPEC_PATIENT, None)]
