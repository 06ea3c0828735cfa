"""Background services: a busy service is reused, never doubled; stop takes the whole group;
orphans (our processes no record names) are found and stopped. Real processes, no mocks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from wardround.runtime import procs

# An HTTP service that answers /ready, unless the flag file exists: then it holds each
# request for 20 s, like llama.cpp's server holding a long prompt. It also starts a child
# (same process group) that a stop must take down too.
SERVICE = r"""
import http.server, os, subprocess, sys, time
flag, port = sys.argv[1], int(sys.argv[2])
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.path.exists(flag):
            time.sleep(20)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def start(run_dir: Path, flag: Path, name: str = "svc") -> procs.ServiceRecord:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    return procs.start_service(
        name,
        [sys.executable, "-c", SERVICE, str(flag), str(port)],
        run_dir=run_dir,
        base_url=url,
        ready_url=f"{url}/ready",
        log=run_dir.parent / "logs" / f"{name}.log",
        timeout_s=30,
        info={"kind": "test", "port": port},
    )


def test_a_busy_service_is_reused_not_doubled(tmp_path: Path) -> None:
    run_dir, flag = tmp_path / "run", tmp_path / "busy"
    first = start(run_dir, flag)
    try:
        flag.touch()  # from now on the ready URL hangs, the pid lives
        seen = procs.running(run_dir, "svc", "/ready")
        assert seen is not None and seen.pid == first.pid and seen.busy
        again = start(run_dir, flag)  # what a second client does if it sees nothing
        assert again.pid == first.pid
        assert [g.pid for g in procs.tagged(run_dir)] == [first.pid]
        assert procs.orphans(run_dir) == []
        stored = procs.record_path(run_dir, "svc").read_text()
        assert '"busy"' not in stored  # a state of the moment, never written down
    finally:
        procs.stop_service(run_dir, "svc")
    assert procs.tagged(run_dir) == []


def test_concurrent_starts_make_one_process(tmp_path: Path) -> None:
    run_dir, flag = tmp_path / "run", tmp_path / "busy"
    pids: list[int] = []
    workers = [threading.Thread(target=lambda: pids.append(start(run_dir, flag).pid))]
    workers.append(threading.Thread(target=lambda: pids.append(start(run_dir, flag).pid)))
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert len(pids) == 2 and pids[0] == pids[1]
        assert len(procs.tagged(run_dir)) == 1
    finally:
        procs.stop_service(run_dir, "svc")


def test_a_different_service_under_a_live_record_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start(run_dir, tmp_path / "busy")
    try:
        other = procs.free_port()
        try:
            procs.start_service(
                "svc", [sys.executable, "-c", "pass"], run_dir=run_dir,
                base_url=f"http://127.0.0.1:{other}", ready_url=f"http://127.0.0.1:{other}/",
                log=tmp_path / "x.log", info={"kind": "other"},
            )  # fmt: skip
        except procs.ServiceError as err:
            assert f"pid {first.pid}" in str(err) and "stack down" in str(err)
        else:
            raise AssertionError("a second service was started over a live record")
    finally:
        procs.stop_service(run_dir, "svc")


def test_stop_takes_the_whole_process_group(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    record = start(run_dir, tmp_path / "busy")
    deadline = time.monotonic() + 10
    while len(procs.group_members(record.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    members = procs.group_members(record.pid)
    assert len(members) == 2, "the service and its child"
    assert procs.stop_service(run_dir, "svc")
    assert procs.group_members(record.pid) == []
    assert not procs.record_path(run_dir, "svc").exists()


def test_dead_records_are_removed_and_pid_reuse_is_not_trusted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    procs.write_record(
        run_dir, procs.ServiceRecord(name="gone", pid=os.getpid(), base_url="x", log="x",
                                     start_ticks=1)  # our pid, another start time: reused
    )  # fmt: skip
    assert procs.running(run_dir, "gone") is None
    assert not procs.record_path(run_dir, "gone").exists()


def test_orphans_are_reported_and_stopped(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, procs.RUN_DIR_ENV: str(run_dir.resolve()), procs.SERVICE_ENV: "model"}
    leaked = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], env=env, start_new_session=True
    )  # a server whose record was overwritten by its twin's
    try:
        found = procs.orphans(run_dir)
        assert [(o.pid, o.service) for o in found] == [(leaked.pid, "model")]
        assert procs.orphans(tmp_path / "elsewhere") == []
        assert [o.pid for o in procs.stop_orphans(run_dir)] == [leaked.pid]
        assert leaked.wait(timeout=10) is not None
        assert procs.orphans(run_dir) == []
    finally:
        if leaked.poll() is None:
            leaked.kill()


def test_status_and_down_report_orphans(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_dir = home / "run"
    run_dir.mkdir(parents=True)
    env = {**os.environ, procs.RUN_DIR_ENV: str(run_dir.resolve()), procs.SERVICE_ENV: "model"}
    leaked = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], env=env, start_new_session=True
    )
    cli = [str(Path(sys.executable).with_name("wardround")), "stack"]
    cli_env = {**os.environ, "WARDROUND_HOME": str(home), "WARDROUND_FHIR_PORT": "1"}
    try:
        status = subprocess.run([*cli, "status"], capture_output=True, text=True, env=cli_env)
        assert status.returncode == 0, status.stderr
        assert f"orphan model pid {leaked.pid}" in status.stdout
        down = subprocess.run([*cli, "down"], capture_output=True, text=True, env=cli_env)
        assert f"orphan model pid {leaked.pid}: stopped" in down.stdout
        assert leaked.wait(timeout=10) is not None
    finally:
        if leaked.poll() is None:
            leaked.kill()
