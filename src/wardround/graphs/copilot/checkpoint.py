"""Where copilot threads are kept: SQLite under the home directory, or Postgres when configured.

The Postgres DSN comes from the setting `checkpoint_url` (env `WARDROUND_CHECKPOINT_URL`);
empty means `<home>/copilot.sqlite`. Postgres is reached through a `psycopg_pool` pool sized
by `checkpoint_pool_size` and `checkpoint_pool_max_idle_s`, so several API workers (each
with its own pool) share threads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from wardround.settings import Settings

if TYPE_CHECKING:  # the postgres extra, imported when used
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

ENV_URL = "WARDROUND_CHECKPOINT_URL"
POSTGRES_SCHEMES = ("postgres://", "postgresql://")


_MISSING_POSTGRES = (
    "a Postgres checkpoint URL is set but langgraph-checkpoint-postgres is not installed: "
    "pip install langgraph-checkpoint-postgres 'psycopg[binary,pool]'"
)


class CheckpointConfigError(RuntimeError):
    """The configured checkpointer cannot be used (missing package, bad URL)."""


def checkpoint_url(settings: Settings) -> str | None:
    value: Any = getattr(settings, "checkpoint_url", None) or os.environ.get(ENV_URL) or None
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return str(value) if value else None


def sqlite_path(settings: Settings) -> Path:
    return settings.home / "copilot.sqlite"


def describe(settings: Settings) -> str:
    """Where threads are kept, without credentials (for logs and the CLI)."""
    url = checkpoint_url(settings)
    if url is None:
        return f"sqlite:{sqlite_path(settings)}"
    return "postgres:" + url.split("@")[-1]


def check_checkpointer(settings: Settings) -> None:
    """Raise CheckpointConfigError now if `open_checkpointer` would fail on configuration."""
    url = checkpoint_url(settings)
    if url is None:
        return
    if not url.startswith(POSTGRES_SCHEMES):
        raise CheckpointConfigError(
            f"{ENV_URL} must be a postgres:// or postgresql:// URL (or empty for SQLite)"
        )
    try:
        import langgraph.checkpoint.postgres.aio  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise CheckpointConfigError(_MISSING_POSTGRES) from None


# Any constant: API workers starting together run the saver's migrations one at a time.
_SETUP_LOCK = 0x77617264


def pool_options(settings: Settings) -> dict[str, Any]:
    """`AsyncConnectionPool` options from settings.

    One connection stays open; up to `checkpoint_pool_size` open under load and close again
    after `checkpoint_pool_max_idle_s` idle. A connection checked out of the pool is tested
    first, so one killed by a server or proxy idle timeout is replaced instead of failing
    the request.
    """
    from psycopg_pool import AsyncConnectionPool

    size = int(getattr(settings, "checkpoint_pool_size", 10))
    return {
        "min_size": 1,
        "max_size": max(1, size),
        "max_idle": float(getattr(settings, "checkpoint_pool_max_idle_s", 300.0)),
        "check": AsyncConnectionPool.check_connection,
        # What the Postgres saver needs of each connection.
        "kwargs": {"autocommit": True, "prepare_threshold": 0},
    }


async def _setup_once(url: str, saver: AsyncPostgresSaver, timeout_s: float = 120) -> None:
    """Create or migrate the saver's tables, one worker at a time.

    The lock is polled, not waited on: a session blocked in `pg_advisory_lock` holds a
    snapshot, and the migrations' CREATE INDEX CONCURRENTLY would wait for it forever.
    """
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as lock:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await _try_lock(lock):
            if asyncio.get_running_loop().time() > deadline:
                raise CheckpointConfigError("another process kept the Postgres setup lock")
            await asyncio.sleep(0.2)
        try:
            await saver.setup()
        finally:
            await lock.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


async def _try_lock(conn: Any) -> bool:
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_SETUP_LOCK,))
    row = await cursor.fetchone()
    return bool(row and row[0])


@asynccontextmanager
async def _postgres(url: str, settings: Settings) -> AsyncIterator[BaseCheckpointSaver]:
    import psycopg
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool, PoolTimeout

    options = pool_options(settings)
    options["kwargs"]["row_factory"] = dict_row
    pool = AsyncConnectionPool(url, open=False, **options)
    try:
        await pool.open(wait=True, timeout=15)
    except (PoolTimeout, psycopg.OperationalError) as exc:
        await pool.close()
        where = url.split("@")[-1]
        raise CheckpointConfigError(f"cannot reach Postgres at {where}: {exc}") from None
    try:
        saver = AsyncPostgresSaver(pool)
        await _setup_once(url, saver)
        yield saver
    finally:
        await pool.close()


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver]:
    """The thread store for `settings`, open for the duration of the block."""
    url = checkpoint_url(settings)
    if url is None:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = sqlite_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            yield saver
        return
    check_checkpointer(settings)
    async with _postgres(url, settings) as saver:
        yield saver
