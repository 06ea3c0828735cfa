r"""The copilot's tools for one patient: FHIR reads and writes, plus image and guideline search.

FHIR tools are bound to the thread's patient (they take no patient argument and refuse other
patients' records); `find_patient` is left out so a conversation stays in one chart. An
approved order's write tool carries the order's key, so it is posted at most once.

The model sees each tool through an argument schema of its own (`for_model`): regex
patterns llama.cpp's grammar converter cannot read (`\s`, `\d`, `\w` in character
classes: it rejects the whole grammar) are left out, and arguments the copilot does not offer
over HTTP (reading an image from a server path) are removed. Arguments are checked again
against the tool's full schema before anything runs or is shown for approval.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, create_model

from wardround.fhir.client import FhirClient
from wardround.settings import Settings
from wardround.tools.fhir.tools import ChartScope, bind_tool, write_spec
from wardround.tools.registry import (
    HIDDEN_ARGS,
    SPEC_PATIENT,
    chart_tools,
    needs_approval,
    patient_bound,
)

MAX_PATIENTS = 64  # conversations' tool lists kept; older ones are rebuilt when needed
_UNSUPPORTED_ESCAPE = re.compile(r"\\[sSdDwW]")


def _grammar_safe(metadata: list[Any]) -> list[Any]:
    return [
        m for m in metadata if not _UNSUPPORTED_ESCAPE.search(str(getattr(m, "pattern", "") or ""))
    ]


def model_schema(tool: BaseTool) -> type[BaseModel]:
    """The argument schema the model is given for `tool` (see the module docstring)."""
    schema = tool.tool_call_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    hidden = HIDDEN_ARGS.get(tool.name, frozenset())
    fields: dict[str, Any] = {}
    for name, info in schema.model_fields.items():
        if name in hidden:
            continue
        field = copy.copy(info)
        field.metadata = _grammar_safe(info.metadata)
        fields[name] = (info.annotation, field)
    return create_model(schema.__name__, __doc__=schema.__doc__, **fields)


async def _not_here(**_: Any) -> Any:
    raise RuntimeError("a model-facing tool description is not run; the graph runs the tool")


class _ModelFacingTool(StructuredTool):
    """A tool description only (never run); its schema is used as it is, not re-derived."""

    @property
    def tool_call_schema(self) -> Any:
        return self.args_schema


def model_facing(tool: BaseTool) -> BaseTool:
    return _ModelFacingTool(
        name=tool.name,
        description=tool.description,
        args_schema=model_schema(tool),
        coroutine=_not_here,
        metadata=tool.metadata,
    )


class CopilotTools:
    """The tools of a copilot conversation, built once and reused for every turn.

    Args:
        fhir: the FHIR client every FHIR tool uses.
        extra: patient-independent tools (image search, guideline lookup: `registry.extra_tools`);
            tools needing approval are not accepted here, because only FHIR writes know how to
            be idempotent.
    """

    def __init__(
        self, fhir: FhirClient, extra: Sequence[BaseTool] = (), settings: Settings | None = None
    ) -> None:
        for tool in extra:
            if needs_approval(tool):
                raise ValueError(f"{tool.name}: extra tools must not need approval")
        self.fhir = fhir
        self.extra = list(extra)
        self.settings = settings  # for plugins registered per patient
        self._by_patient: dict[str, dict[str, BaseTool]] = {}
        # Bound tools describe "the patient", never an id: one model-facing list serves all.
        spec = self.for_patient(SPEC_PATIENT)
        self._for_model = [model_facing(t) for t in spec]
        self.fhir_names = frozenset(t.name for t in spec if t not in self.extra)

    def for_patient(self, patient_id: str) -> list[BaseTool]:
        """All tools the model may call in this patient's conversation, reads first."""
        return list(self.by_name(patient_id).values())

    def by_name(self, patient_id: str) -> dict[str, BaseTool]:
        """`for_patient`'s tools by name, built once per patient (a few, recently used)."""
        tools = self._by_patient.get(patient_id)
        if tools is None:
            fhir = patient_bound(chart_tools(self.fhir, patient_id, self.settings))
            reads = [t for t in fhir if not needs_approval(t)]
            writes = [t for t in fhir if needs_approval(t)]
            tools = {t.name: t for t in [*reads, *self.extra, *writes]}
            if len(self._by_patient) >= MAX_PATIENTS:
                self._by_patient.pop(next(iter(self._by_patient)))
            self._by_patient[patient_id] = tools
        return tools

    def for_model(self) -> list[BaseTool]:
        """The tools as the model is shown them (same names, safe schemas, no patient)."""
        return list(self._for_model)

    def write_tool(self, patient_id: str, name: str, key: str) -> BaseTool:
        """The write tool `name` for this patient whose create happens once per `key`."""
        return bind_tool(write_spec(name), ChartScope(self.fhir, patient_id, key))
