"""A private PostgreSQL cluster for a test or a bench: `initdb` and `pg_ctl` on a free port,
its socket and data in a fresh folder, stopped by its pid and removed at the end.

Debian's `postgresql` package is enough (its binaries are not on PATH; they are found under
/usr/lib/postgresql). As root the server runs as the package's `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from wardround.runtime.procs import free_port


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL binaries (not on PATH there), or None."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres(argv: list[str]) -> list[str]:
    # The server refuses to run as root; Debian's package creates the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresCluster:
    folder: Path
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql://wr@/wardround?host={self.folder}&port={self.port}"

    def pid(self) -> int | None:
        pidfile = self.folder / "data" / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def sql(self, statement: str) -> str:
        psql = [str(self.bin / "psql"), "-h", str(self.folder), "-p", str(self.port)]
        argv = [*psql, "-U", "wr", "-d", "wardround", "-tAc", statement]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-500:]
        raise RuntimeError(f"{' '.join(argv)} failed: {detail}")


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """initdb + pg_ctl start on a free port, socket and data in a fresh folder under the
    system temp dir (one the `postgres` user can reach); stopped and removed at the end."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="wardround-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    cluster = PostgresCluster(folder, free_port(), bindir)
    data = folder / "data"
    try:
        _run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "wr", "--auth=trust"]))
        options = f"-p {cluster.port} -k {folder} -c listen_addresses='' -c fsync=off"
        log = str(folder / "log")
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", log]
        _run(_as_postgres([*pg_ctl, "-w", "start"]))
        createdb = [str(bindir / "createdb"), "-h", str(folder), "-p", str(cluster.port)]
        _run([*createdb, "-U", "wr", "wardround"])
        yield cluster
    finally:
        pid = cluster.pid()
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # "fast" shutdown of this postmaster only
            deadline = time.monotonic() + 20
            while cluster.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(folder, ignore_errors=True)
