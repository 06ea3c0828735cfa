"""A CDS Hooks 2.0 service: `patient-view` chart review and `order-select`/`order-sign`
order checks, answered by code from prefetched or fetched FHIR data, behind the EHR's JWT.

`install_cds_hooks(app, settings)` mounts it on an app (`wardround serve api` does);
`create_cds_app(settings)` is the service alone (`wardround serve cds`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi import FastAPI

from wardround.graphs.copilot.audit import AuditLog
from wardround.server.cds_hooks.passages import PassageFinder, open_passages
from wardround.server.cds_hooks.prefetch import FhirFactory, default_fhir
from wardround.server.cds_hooks.routes import cds_router
from wardround.server.cds_hooks.security import ClientVerifier
from wardround.server.cds_hooks.services import SERVICES, CdsHooks
from wardround.settings import Settings

__all__ = ["SERVICES", "CdsHooks", "create_cds_app", "install_cds_hooks"]


def install_cds_hooks(
    app: FastAPI,
    settings: Settings,
    *,
    audit: AuditLog | None = None,
    passages: PassageFinder | None = None,
    fhir: FhirFactory = default_fhir,
    today: Callable[[], date] | None = None,
) -> CdsHooks:
    """Mount /cds-services on `app`; what is not given comes from settings."""
    hooks = CdsHooks(
        passages=passages or open_passages(settings),
        audit=audit or AuditLog(settings.home / "audit.jsonl"),
        smart_links=bool(settings.smart_app_client_id),
        fhir=fhir,
    )
    if today is not None:
        hooks.today = today
    app.state.cds_hooks = hooks
    app.state.cds_base_url = settings.cds_base_url
    app.state.cds_verifier = (
        ClientVerifier(settings.cds_trusted_issuers) if settings.cds_require_jwt else None
    )
    app.include_router(cds_router())
    return hooks


def create_cds_app(settings: Settings, **given: Any) -> FastAPI:
    """The CDS service alone (no copilot, no model); keywords as for `install_cds_hooks`."""
    app = FastAPI(
        title="wardround CDS Hooks service",
        version="0.1.0",
        description="CDS Hooks 2.0: patient-view chart review, order-select/order-sign checks.",
    )
    install_cds_hooks(app, settings, **given)
    return app
