"""The chart as of a moment: the manifest (what the chart holds) and the task's "now".

A task fixes its own "now" (MedAgentBench's 2023-11-13T10:15; an eval's reference date);
records dated after it do not exist yet for the agent, and "the latest" means the latest
before it. The wall clock is never read here: whoever builds a view says when "now" is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wardround.chart.options import Option, candidates
from wardround.fhir.client import FhirClient
from wardround.fhir.fields import resource_datetime
from wardround.fhir.manifest import Manifest, build_manifest


def parse_instant(stamp: str, tz: Any = UTC) -> datetime | None:
    """A FHIR date or dateTime as an aware datetime (a bare date is its midnight)."""
    try:
        value = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=tz)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def dated_after(resource: dict[str, Any], now: datetime | None) -> bool:
    """The record is dated after `now` (undated records and the Patient never are)."""
    if now is None or resource.get("resourceType") == "Patient":
        return False
    stamp = resource_datetime(resource)
    value = parse_instant(stamp, aware(now).tzinfo) if stamp else None
    return value is not None and value > aware(now)


def as_of(records: Sequence[dict[str, Any]], now: datetime | None) -> list[dict[str, Any]]:
    """The records that existed at `now` (all of them when `now` is None)."""
    return [r for r in records if not dated_after(r, now)]


@dataclass(frozen=True)
class ChartView:
    """One patient's chart as of `now`: its manifest, and `now` itself (None: the chart as
    it stands, for live use where the caller has no task time)."""

    manifest: Manifest
    now: datetime | None = None

    def options(self) -> list[Option]:
        """The planner's record options (whole types, then each code) that existed at `now`."""
        if self.now is None:
            return candidates(self.manifest)
        day = aware(self.now).date().isoformat()
        early = self.manifest.model_copy(
            update={"codes": [c for c in self.manifest.codes if (c.first or "") <= day]}
        )
        return candidates(early)


async def build_view(fhir: FhirClient, patient_id: str, now: datetime | None) -> ChartView:
    return ChartView(await build_manifest(fhir, patient_id), now)
