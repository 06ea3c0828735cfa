"""Background service processes: start detached, record the pid, wait until ready, stop by pid.

Shared by the embedded model server (agents) and the local FHIR server (stack), so both
leave the same kind of record in `<home>/run/<name>.json` that `stack status/down` read.

A live recorded process that does not answer its ready URL is *busy*, not gone:
llama-cpp-python's server does not answer `/v1/models` while it processes a long prompt.
`running` returns such a record (marked busy) so callers reuse it instead of starting a
twin; `start_service` refuses to start a second one under a lock; every started process
carries `WARDROUND_RUN_DIR` in its environment, so `orphans` can find ours without a record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field

# Environment tags of every started service: which home's run folder, which service.
RUN_DIR_ENV = "WARDROUND_RUN_DIR"
SERVICE_ENV = "WARDROUND_SERVICE"


class ServiceError(RuntimeError):
    """A service failed to start or died; the message names the cause and the log file."""


class ServiceRecord(BaseModel):
    name: str
    pid: int
    base_url: str
    log: str
    info: dict[str, str | int] = {}
    # The kernel's start time of `pid` (clock ticks since boot): a reused pid differs.
    start_ticks: int | None = None
    # Set by `running` when the pid lives but the ready URL did not answer; never stored.
    busy: bool = Field(default=False, exclude=True)


class Orphan(BaseModel):
    """A process one of our services started (tagged with our run folder) that no record names."""

    pid: int
    service: str
    command: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child: a zombie another parent has yet to reap
        stat = _proc_stat(pid)
        return stat is not None and stat[0] != "Z"


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start ticks) from /proc/<pid>/stat, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[2]), int(fields[19])


def start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[2] if stat else None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def url_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def record_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def read_record(run_dir: Path, name: str) -> ServiceRecord | None:
    path = record_path(run_dir, name)
    if not path.exists():
        return None
    try:
        return ServiceRecord.model_validate_json(path.read_text())
    except ValueError:
        return None


def write_record(run_dir: Path, record: ServiceRecord) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = record_path(run_dir, record.name).with_suffix(".tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    tmp.replace(record_path(run_dir, record.name))


def is_alive(record: ServiceRecord) -> bool:
    """The recorded process still runs (and is the same process, not a reused pid)."""
    if not pid_alive(record.pid):
        return False
    return record.start_ticks is None or start_ticks(record.pid) == record.start_ticks


@contextlib.contextmanager
def service_lock(run_dir: Path, name: str) -> Iterator[None]:
    """One starter per service and home at a time (across processes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / f"{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _same_service(a: dict[str, str | int], b: dict[str, str | int]) -> bool:
    """Two starts ask for the same service if their info agrees beyond the (free) port."""
    return {k: v for k, v in a.items() if k != "port"} == {
        k: v for k, v in b.items() if k != "port"
    }


def start_service(
    name: str,
    argv: Sequence[str],
    *,
    run_dir: Path,
    base_url: str,
    ready_url: str,
    log: Path,
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    info: dict[str, str | int] | None = None,
) -> ServiceRecord:
    """Start `argv` in its own session, wait for `ready_url`, record it. Raises ServiceError.

    If a live process already holds the record (another client started it meanwhile, or
    it is busy), that record is returned when it is the same service, else refused: a
    second copy would be orphaned the moment its record overwrote the first's.
    """
    with service_lock(run_dir, name):
        current = read_record(run_dir, name)
        if current is not None and is_alive(current):
            if _same_service(current.info, info or {}):
                return current
            raise ServiceError(
                f"{name} already runs as pid {current.pid} ({current.base_url}) with other "
                f"settings; stop it first (wardround stack down); log: {current.log}"
            )
        tags = {RUN_DIR_ENV: str(run_dir.resolve()), SERVICE_ENV: name}
        proc = _launch(argv, log, {**os.environ, **(env or {}), **tags}, cwd)
        record = ServiceRecord(
            name=name,
            pid=proc.pid,
            base_url=base_url,
            log=str(log),
            info=info or {},
            start_ticks=start_ticks(proc.pid),
        )
        _wait_ready(proc, name, ready_url, timeout_s, log)
        write_record(run_dir, record)
        return record


def _launch(
    argv: Sequence[str], log: Path, env: dict[str, str], cwd: Path | None
) -> subprocess.Popen[bytes]:
    """`argv` started with its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,  # survives the CLI that started it; stopped by group
        )


def _wait_ready(
    proc: subprocess.Popen[bytes], name: str, ready_url: str, timeout_s: float, log: Path
) -> None:
    """Return once `ready_url` answers; stop `proc` and raise ServiceError if it exits first
    or does not answer within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop_pid(proc.pid)  # its children, if it left any
            raise ServiceError(
                f"{name} exited with code {proc.returncode} while starting "
                f"({log_tail(log) or 'no output'}); log: {log}"
            )
        if url_ok(ready_url):
            return
        time.sleep(0.25)
    stop_pid(proc.pid)
    raise ServiceError(f"{name} did not answer {ready_url} within {timeout_s:.0f} s; log: {log}")


def _signal_group(pid: int, sig: signal.Signals) -> bool:
    """Signal the process group led by `pid` (or `pid` alone if it leads none)."""
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False


def _group_gone(pid: int) -> bool:
    return not pid_alive(pid) and not group_members(pid)


def stop_child(process: subprocess.Popen[Any], timeout_s: float = 20.0) -> None:
    """Stop a child process this process started: SIGTERM, then SIGKILL if it lingers."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_pid(pid: int, timeout_s: float = 10.0) -> bool:
    """SIGTERM the process group, then SIGKILL what lingers. True if something was stopped."""
    if _group_gone(pid):
        return False
    if not _signal_group(pid, signal.SIGTERM):
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _group_gone(pid):
            return True
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _group_gone(pid):
        time.sleep(0.05)
    return True


def stop_service(run_dir: Path, name: str) -> bool:
    record = read_record(run_dir, name)
    if record is None:
        return False
    stopped = stop_pid(record.pid) if is_alive(record) else False
    record_path(run_dir, name).unlink(missing_ok=True)
    return stopped


def running(run_dir: Path, name: str, ready_url_suffix: str = "") -> ServiceRecord | None:
    """The record of a live service, or None (records of dead processes are removed).

    A live process whose ready URL does not answer is returned with `busy=True`: reuse it
    (requests queue behind the work it is doing), never start a second one beside it.
    """
    record = read_record(run_dir, name)
    if record is None:
        return None
    if not is_alive(record):
        record_path(run_dir, name).unlink(missing_ok=True)
        return None
    if url_ok(record.base_url.rstrip("/") + ready_url_suffix):
        return record
    return record.model_copy(update={"busy": True})


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def tagged(run_dir: Path) -> list[Orphan]:
    """Every process group started by `start_service` for this run folder (by group id)."""
    wanted = str(run_dir.resolve())
    groups: dict[int, Orphan] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _proc_stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        env = _environ(pid)
        if env.get(RUN_DIR_ENV) != wanted:
            continue
        pgid = stat[1]
        if pgid not in groups or pid == pgid:  # name a group by its leader when it lives
            groups[pgid] = Orphan(
                pid=pgid, service=env.get(SERVICE_ENV, "?"), command=_command(pid)
            )
    return sorted(groups.values(), key=lambda o: o.pid)


def orphans(run_dir: Path) -> list[Orphan]:
    """Our tagged processes that no live record names (e.g. left by a crash or a race)."""
    recorded = set()
    for path in run_dir.glob("*.json") if run_dir.exists() else []:
        record = read_record(run_dir, path.stem)
        if record is not None and is_alive(record):
            recorded.add(record.pid)
    return [o for o in tagged(run_dir) if o.pid not in recorded]


def stop_orphans(run_dir: Path) -> list[Orphan]:
    """Stop (by process group) every orphan of this run folder; returns those stopped."""
    return [o for o in orphans(run_dir) if stop_pid(o.pid)]


def dump(record: ServiceRecord | None) -> str:
    return json.dumps(record.model_dump() if record else None)
