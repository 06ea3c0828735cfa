"""The API as an ASGI factory for running several workers:

    uvicorn --factory wardround.server.asgi:app --workers 4 --host 0.0.0.0 --port 8100

Each worker builds its own model client, FHIR client and Postgres pool from the WARDROUND_*
environment. Several workers need a shared thread store (WARDROUND_CHECKPOINT_URL): the
SQLite default is for one process on one machine.
"""

from __future__ import annotations

from fastapi import FastAPI

from wardround.server.app import create_app
from wardround.settings import Settings


def app() -> FastAPI:
    return create_app(Settings())
