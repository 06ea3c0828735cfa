"""The audit log: one JSON line per access to a patient's record (who, whom, what, when).

Written by the copilot graph for every FHIR tool call and approval decision, and by the
HTTP API for what it reads itself (the patient list, a cited record). Appends are small
single-line writes under a lock, so concurrent conversations never interleave lines.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wardround.agents.phi_model import PhiEvent
from wardround.agents.phi_model import log as phi_log
from wardround.fhir.compartment import DroppedRecord
from wardround.fhir.compartment import log as compartment_log

ANONYMOUS = "anonymous"
DROPPED = "drop_foreign_record"


class AuditLog:
    """Append-only JSONL at `path`; `AuditLog(None)` records nothing (for tools that opt out)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(
        self,
        *,
        user: str | None,
        action: str,
        patient: str | None = None,
        resources: Iterable[str] = (),
        thread: str | None = None,
        **detail: Any,
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "user": user or ANONYMOUS,
            "patient": patient,
            "action": action,
            "resources": list(resources),
        }
        if thread:
            entry["thread"] = thread
        entry.update({k: v for k, v in detail.items() if v is not None})
        if self.path is not None:
            line = json.dumps(entry, default=str, ensure_ascii=False) + "\n"
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(line)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every entry so far (for tests and small tools; the file is the record)."""
        if self.path is None or not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]


class DroppedRecordHandler(logging.Handler):
    """Writes each record the FHIR client dropped as another patient's (reported on the
    `wardround.fhir.compartment` logger) to an audit log: server, type and id, no content."""

    def __init__(self, audit: AuditLog) -> None:
        super().__init__(logging.WARNING)
        self.audit = audit

    def emit(self, record: logging.LogRecord) -> None:
        dropped = getattr(record, "dropped_record", None)
        if isinstance(dropped, DroppedRecord):
            record_dropped(self.audit)(dropped)


def record_dropped(audit: AuditLog) -> Callable[[DroppedRecord], None]:
    """A FHIR client's drop hook (`client.on_drop`) writing each dropped record to `audit`:
    that client's drops only, where the logger handler hears every client in the process."""

    def write(dropped: DroppedRecord) -> None:
        audit.record(
            user=None,
            action=DROPPED,
            patient=dropped.patient_id,
            server=dropped.base_url,
            resource_type=dropped.resource_type,
            resource_id=dropped.resource_id,
            via=dropped.via,
        )

    return write


def audit_dropped_records(audit: AuditLog) -> DroppedRecordHandler:
    """Subscribe `audit` to the FHIR client's dropped records; `removeHandler` it to stop."""
    handler = DroppedRecordHandler(audit)
    compartment_log.addHandler(handler)
    return handler


class PhiEventHandler(logging.Handler):
    """Writes each pseudonymised egress and re-identification (`wardround.agents.phi`) to
    the audit log the model was configured with: counts per kind and the host, no values."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._logs: dict[Path, AuditLog] = {}  # one per file, so appends share its lock

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "phi_event", None)
        if not isinstance(event, PhiEvent) or event.audit_path is None:
            return
        audit = self._logs.setdefault(event.audit_path, AuditLog(event.audit_path))
        audit.record(
            user=None, action=event.action, patient=event.patient_id, host=event.host,
            replaced=event.counts,
        )  # fmt: skip


_PHI_HANDLER = PhiEventHandler()


def audit_phi_events() -> PhiEventHandler:
    """Subscribe the audit log to PHI events (once per process; later calls are no-ops)."""
    if _PHI_HANDLER not in phi_log.handlers:
        phi_log.addHandler(_PHI_HANDLER)
        phi_log.setLevel(min(phi_log.getEffectiveLevel(), logging.INFO))
    return _PHI_HANDLER
