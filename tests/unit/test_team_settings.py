"""Settings and refusals of the team deployment: the Postgres pool, Chroma URLs, `serve mcp`."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError
from typer.testing import CliRunner

from wardround.cli import app
from wardround.graphs.copilot.checkpoint import (
    CheckpointConfigError,
    check_checkpointer,
    pool_options,
)
from wardround.settings import Settings
from wardround.tools.guidelines.index import GuidelineIndex
from wardround.tools.images.index import is_chroma_url


def test_pool_follows_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDROUND_CHECKPOINT_POOL_SIZE", "4")
    monkeypatch.setenv("WARDROUND_CHECKPOINT_POOL_MAX_IDLE_S", "45")
    options = pool_options(Settings(home=tmp_path))
    assert (options["min_size"], options["max_size"], options["max_idle"]) == (1, 4, 45.0)
    assert options["check"] is AsyncConnectionPool.check_connection  # dead connections replaced
    assert options["kwargs"]["prepare_threshold"] == 0  # PgBouncer in transaction mode works


def test_pool_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(home=tmp_path, checkpoint_pool_size=0)


def test_checkpoint_url_must_be_postgres(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, checkpoint_url="mysql://db/x")  # type: ignore[arg-type]
    with pytest.raises(CheckpointConfigError, match="postgres://"):
        check_checkpointer(settings)


def test_a_chroma_url_is_a_server_not_a_folder(tmp_path: Path) -> None:
    assert is_chroma_url("http://chroma:8000") and not is_chroma_url(tmp_path)
    index = GuidelineIndex("http://127.0.0.1:9")
    assert index.chroma_dir == "http://127.0.0.1:9"
    assert GuidelineIndex(str(tmp_path / "x")).chroma_dir == tmp_path / "x"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "mcp", "--transport", "smoke"], "unknown transport"),
        (["serve", "mcp", "--transport", "http", "--host", "0.0.0.0"], "without a token"),
        (["serve", "mcp", "--patient", "not an id!"], "not a FHIR patient id"),
    ],
)
def test_serve_mcp_refuses_in_one_line(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WARDROUND_HOME", str(tmp_path))
    monkeypatch.setenv("WARDROUND_CHROMA_PATH", str(tmp_path / "none"))
    monkeypatch.delenv("WARDROUND_API_TOKEN", raising=False)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
