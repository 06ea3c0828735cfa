"""The copilot's HTTP API (FastAPI, server-sent events) and its chat page."""

from wardround.server.app import create_app

__all__ = ["create_app"]
