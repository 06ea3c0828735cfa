"""The API's OpenAPI schema says what its answers hold (found by fuzzing it: a 422 body is
`{"detail": "<message>"}`, and a streamed reply is a sequence of events)."""

from __future__ import annotations

from pathlib import Path

from wardround.server.app import create_app
from wardround.settings import Settings


def test_a_validation_error_matches_the_documented_body(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path))  # type: ignore[call-arg]
    schema = app.openapi()
    body = schema["components"]["schemas"]["HTTPValidationError"]
    assert body["properties"]["detail"]["type"] == "string"
    stream = schema["paths"]["/api/threads/{thread_id}/messages"]["post"]["responses"]["200"]
    event = stream["content"]["text/event-stream"]["schema"]
    assert event["type"] == "object" and event["required"] == ["data"]
