"""Tell a pseudonymising model whose identifiers to mask: `async with patient_scope(...)`.

The graphs call with a patient id; this reads that patient's Patient resource once (kept a
few minutes) and sets the scope the model reads (agents/phi_model.py). A model that does not
pseudonymise costs nothing here: no read, no scope. When the Patient cannot be read the
scope refuses every model call inside it, so nothing leaves unmasked.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

from wardround.agents.phi import Pseudonymiser
from wardround.agents.phi_model import (
    PhiRefused,
    PseudonymisingChatModel,
    current_scope,
    in_patient_scope,
)
from wardround.fhir.client import FhirClient

P = ParamSpec("P")
R = TypeVar("R")
KEEP_S = 300.0
_KEPT: dict[tuple[str, str, str], tuple[float, Pseudonymiser]] = {}


async def _pseudonymiser(
    model: PseudonymisingChatModel, fhir: FhirClient, patient_id: str
) -> Pseudonymiser | PhiRefused:
    key, now = (fhir.base_url, patient_id, model.host), time.monotonic()
    kept = _KEPT.get(key)
    if kept and now - kept[0] < KEEP_S:
        return kept[1]
    try:
        patient = await fhir.read(f"Patient/{patient_id}")
    except Exception as err:  # whatever went wrong, the one safe answer is not to send
        return PhiRefused(
            f"PHI pseudonymisation is on, and Patient/{patient_id} could not be read from "
            f"{fhir.base_url} ({type(err).__name__}: {str(err)[:160]}): nothing is sent to "
            f"{model.host} unmasked"
        )
    if len(_KEPT) > 1000:
        _KEPT.clear()
    made = model.pseudonymiser(patient)
    _KEPT[key] = (now, made)
    return made


@asynccontextmanager
async def patient_scope(model: Any, fhir: FhirClient, patient_id: str) -> AsyncIterator[None]:
    """Model calls inside the block mask `patient_id`'s identifiers (when `model` masks)."""
    held = current_scope()
    if not isinstance(model, PseudonymisingChatModel) or (
        isinstance(held, Pseudonymiser) and held.patient_id == patient_id
    ):
        yield
        return
    # Imported here: the copilot package imports the EHR QA graphs, which import this.
    from wardround.graphs.copilot.audit import audit_phi_events

    audit_phi_events()  # every egress and re-identification in the scope is audited
    with in_patient_scope(await _pseudonymiser(model, fhir, patient_id)):
        yield


def patient_scoped(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """`fn` (taking `patient_id`, `model` and `fhir`) run inside that patient's scope."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    async def scoped(*args: P.args, **kwargs: P.kwargs) -> R:
        given = signature.bind(*args, **kwargs).arguments
        async with patient_scope(given["model"], given["fhir"], given["patient_id"]):
            return await fn(*args, **kwargs)

    return scoped
