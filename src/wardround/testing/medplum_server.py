"""Medplum's in-memory FHIR router as a loopback FHIR R4 server: a second implementation.

`stack/medplum/` holds a small Node HTTP wrapper (`server.mjs`) around `@medplum/fhir-router`
and its `MemoryRepository`, pinned by `package-lock.json`. `install()` runs `npm ci` once into
a folder named by the digest of the pins (so a changed pin reinstalls); `medplum_server()`
starts node on a free port, waits for `GET [base]/metadata`, and stops it by pid.

    python -m wardround.testing.medplum_server install    # what ./run does before the tests
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wardround.runtime.procs import ServiceError, ServiceRecord, free_port, start_service, stop_pid

PACKAGE = Path(__file__).with_name("medplum")
FILES = ("package.json", "package-lock.json")
# @medplum/* 4.5.2 declares node ^20.19.0 || >=22.12.0.
MIN_NODE = (20, 19)
SERVICE = "medplum"
INSTALL_DIR_ENV = "WARDROUND_MEDPLUM_DIR"


class MedplumUnavailable(RuntimeError):
    """Node.js or npm is missing or too old, or `npm ci` failed; the message says which."""


def node_version() -> tuple[int, int] | None:
    """(major, minor) of the `node` on PATH, or None if there is none."""
    node = shutil.which("node")
    if node is None:
        return None
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    match = re.match(r"v(\d+)\.(\d+)", done.stdout.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_node() -> None:
    """Raise MedplumUnavailable unless a recent enough node and npm are on PATH."""
    version = node_version()
    if version is None or shutil.which("npm") is None:
        raise MedplumUnavailable("node and npm are not installed (apt-get install nodejs npm)")
    if version < MIN_NODE:
        raise MedplumUnavailable(
            f"node {version[0]}.{version[1]} is too old for @medplum/fhir-router "
            f"(needs {MIN_NODE[0]}.{MIN_NODE[1]}+)"
        )


def default_install_root() -> Path:
    """`$WARDROUND_MEDPLUM_DIR`, else beside the virtualenv's other installed packages."""
    configured = os.environ.get(INSTALL_DIR_ENV)
    return Path(configured) if configured else Path(sys.prefix) / "share" / "wardround-medplum"


def _digest() -> str:
    sha = hashlib.sha256()
    for name in FILES:
        sha.update((PACKAGE / name).read_bytes())
    return sha.hexdigest()[:16]


def install(root: Path | None = None) -> Path:
    """The folder holding the pinned node_modules, running `npm ci` if not yet done."""
    folder = (root or default_install_root()) / _digest()
    if (folder / "node_modules" / "@medplum" / "fhir-router").is_dir():
        return folder
    check_node()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Installed in a scratch folder, then renamed: a killed install never looks finished.
    scratch = Path(tempfile.mkdtemp(prefix=".install-", dir=folder.parent))
    for name in FILES:
        shutil.copy2(PACKAGE / name, scratch / name)
    argv = ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"]
    done = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise MedplumUnavailable(f"npm ci for @medplum/fhir-router failed: {' / '.join(detail)}")
    try:
        scratch.rename(folder)
    except OSError:  # another process finished the same install first
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def start(state_dir: Path, *, port: int | None = None, timeout_s: float = 180) -> ServiceRecord:
    """Start the wrapper on 127.0.0.1 (a free port by default); its log and pid record go
    to `state_dir`. Raises MedplumUnavailable or ServiceError."""
    folder = install()
    shutil.copy2(PACKAGE / "server.mjs", folder / "server.mjs")  # imports resolve beside it
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    argv = ["node", str(folder / "server.mjs"), "--port", str(port), "--base", "/fhir"]
    return start_service(
        SERVICE,
        argv,
        run_dir=state_dir,
        base_url=base_url,
        ready_url=f"{base_url}/metadata",
        log=state_dir / "medplum.log",
        timeout_s=timeout_s,  # indexing the R4 definitions takes seconds on a busy machine
        cwd=folder,
        info={"port": port},
    )


@contextmanager
def medplum_server(state_dir: Path, *, port: int | None = None) -> Iterator[ServiceRecord]:
    """`with medplum_server(tmp) as server:` a running wrapper at `server.base_url`,
    stopped by pid when the block ends. Data lives in memory: each start is empty."""
    record = start(state_dir, port=port)
    try:
        yield record
    finally:
        stop_pid(record.pid)


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m wardround.testing.medplum_server install", file=sys.stderr)
        return 2
    try:
        print(install())
    except (MedplumUnavailable, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
