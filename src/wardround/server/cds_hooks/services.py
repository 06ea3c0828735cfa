"""The CDS services wardround offers, and the engine that answers a hook with cards.

Cards come from code (dates, codes, values, the guideline passages found beforehand), not
from the model: a hook is answered in milliseconds, far inside the specification's budget,
and the same chart always gives the same cards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from wardround.fhir.compartment import belongs_to
from wardround.graphs.copilot.audit import AuditLog
from wardround.server.cds_hooks import orders as order_rules
from wardround.server.cds_hooks.cards import CopilotLink, to_card
from wardround.server.cds_hooks.chart import ref
from wardround.server.cds_hooks.feedback import IssuedCards
from wardround.server.cds_hooks.findings import Finding
from wardround.server.cds_hooks.models import CdsResponse, CdsService, Discovery, HookRequest
from wardround.server.cds_hooks.orders import check_orders, draft_orders
from wardround.server.cds_hooks.overdue import (
    HBA1C_GUIDELINE,
    LIPID_GUIDELINE,
    UACR_GUIDELINE,
    overdue,
)
from wardround.server.cds_hooks.passages import PassageFinder
from wardround.server.cds_hooks.prefetch import (
    PREFETCH,
    ChartData,
    FhirFactory,
    default_fhir,
    gather_chart,
)
from wardround.server.cds_hooks.results import LIMIT_GUIDELINES, abnormal_results

__all__ = ["SERVICES", "CdsHooks", "HookRefused"]

SERVICES: dict[str, CdsService] = {
    s.id: s
    for s in (
        CdsService(
            hook="patient-view",
            id="wardround-patient-view",
            title="wardround chart review",
            description="Abnormal latest results and tests overdue per the starter guidelines "
            "(HbA1c, UACR, lipids on a statin), each citing its records and guideline passage.",
            prefetch=PREFETCH,
        ),
        CdsService(
            hook="order-select",
            id="wardround-order-select",
            title="wardround order check (selection)",
            description="Checks the selected draft orders against allergies, the latest "
            "potassium and eGFR, and lipid monitoring.",
            prefetch=PREFETCH,
        ),
        CdsService(
            hook="order-sign",
            id="wardround-order-sign",
            title="wardround order check (signing)",
            description="Checks every draft order against allergies, the latest potassium and "
            "eGFR, lipid monitoring and recent repeats, before signing.",
            prefetch=PREFETCH,
        ),
    )
}
# Every guideline question a rule asks, so `warm` can find their passages before the first hook.
RULE_GUIDELINES = [
    HBA1C_GUIDELINE,
    UACR_GUIDELINE,
    LIPID_GUIDELINE,
    order_rules.HYPERKALAEMIA,
    order_rules.METFORMIN_EGFR,
    order_rules.LIPIDS_BEFORE_STATIN,
    *LIMIT_GUIDELINES,
]


class HookRefused(Exception):
    """A hook that cannot be answered: `status` 400 (bad request) or 412 (no chart data)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class CdsHooks:
    """Answers hooks: gathers the chart, runs the hook's rules, turns findings into cards."""

    passages: PassageFinder
    audit: AuditLog
    smart_links: bool = False  # links launch the copilot as a SMART app (SMART is configured)
    fhir: FhirFactory = default_fhir
    today: Callable[[], date] = lambda: datetime.now(UTC).date()

    def __post_init__(self) -> None:
        self.issued = IssuedCards()
        self._warming: asyncio.Task[None] | None = None

    def discovery(self) -> Discovery:
        return Discovery(services=list(SERVICES.values()))

    def warm(self) -> None:
        """Find every rule's guideline passage now (loads the text model once)."""
        for g in RULE_GUIDELINES:
            self.passages.find(g.query, g.source)

    def start_warming(self) -> None:
        """Warm in the background once (an EHR calls discovery when it registers us)."""
        if self._warming is None:
            self._warming = asyncio.create_task(asyncio.to_thread(self.warm))

    async def answer(
        self, service_id: str, hook: HookRequest, client: str, base_url: str
    ) -> CdsResponse:
        """The cards for one hook call; `base_url` is where this server is reached."""
        service = SERVICES.get(service_id)
        if service is None:
            raise HookRefused(404, f"no CDS service {service_id!r}; see GET /cds-services")
        if hook.hook != service.hook:
            raise HookRefused(400, f"{service_id} answers {service.hook}, not {hook.hook}")
        chart = await self._chart(hook)
        findings = self._findings(service.hook, hook, chart)
        # A passage not found yet (a result no rule foresaw) is a search: off the event loop.
        link = CopilotLink(base_url, self.smart_links)
        cards = await asyncio.to_thread(
            lambda: [to_card(f, self.passages, chart.patient_id, link) for f in findings]
        )
        self._record(service_id, hook, chart, findings, [c.uuid for c in cards], client)
        self.issued.remember(cards, chart.patient_id, service_id)
        return CdsResponse(cards=cards)

    async def _chart(self, hook: HookRequest) -> ChartData:
        from wardround.fhir.errors import FhirError
        from wardround.server.cds_hooks.prefetch import PrefetchUnavailable

        try:
            return await gather_chart(hook, PREFETCH, self.fhir)
        except PrefetchUnavailable as exc:
            raise HookRefused(412, str(exc)) from None
        except FhirError as exc:
            raise HookRefused(412, f"the EHR's FHIR server could not be read: {exc}") from None
        except ValueError as exc:
            raise HookRefused(400, str(exc)) from None

    def _findings(self, name: str, hook: HookRequest, chart: ChartData) -> list[Finding]:
        today = self.today()
        if name == "patient-view":
            return abnormal_results(chart) + overdue(chart, today)
        orders = draft_orders(hook.context, only_selected=name == "order-select")
        foreign = [ref(o) for o in orders if not belongs_to(o, chart.patient_id)]
        if foreign:
            raise HookRefused(400, f"draft orders for another patient: {', '.join(foreign)}")
        return check_orders(orders, chart, today)

    def _record(
        self,
        service_id: str,
        hook: HookRequest,
        chart: ChartData,
        findings: list[Finding],
        card_ids: list[str],
        client: str,
    ) -> None:
        used = sorted({r for f in findings for r in f.records})
        self.audit.record(
            user=hook.user or client,
            action="cds_hook",
            patient=chart.patient_id,
            resources=used,
            service=service_id,
            hook_instance=hook.hookInstance,
            client=client,
            cards=card_ids,
            fetched=chart.fetched or None,
            dropped=chart.dropped or None,
        )
