"""SMART App Launch for the copilot page: EHR and standalone launch, authorization code with
PKCE, the launched patient bound to the session.

`install_smart(app, settings)` adds /smart/* when `smart_app_client_id` is set;
`smart_dependencies(settings)` is what the /api router is included with (the binding).
"""

from __future__ import annotations

import httpx
from fastapi import Depends, FastAPI
from fastapi.params import Depends as DependsParam

from wardround.server.smart.binding import bind_to_launched_patient, launched_session
from wardround.server.smart.launch import SmartApp, smart_router
from wardround.settings import Settings

__all__ = [
    "SmartApp",
    "bind_to_launched_patient",
    "install_smart",
    "launched_session",
    "smart_dependencies",
    "smart_enabled",
]


def smart_enabled(settings: Settings) -> bool:
    return bool(settings.smart_app_client_id)


def smart_dependencies(settings: Settings) -> list[DependsParam]:
    return [Depends(bind_to_launched_patient)] if smart_enabled(settings) else []


def install_smart(
    app: FastAPI, settings: Settings, http: httpx.AsyncClient | None = None
) -> SmartApp | None:
    """Mount /smart/* (nothing unless SMART is configured)."""
    if not smart_enabled(settings):
        return None
    app.state.smart = SmartApp.from_settings(settings, http)
    app.include_router(smart_router())
    return app.state.smart
