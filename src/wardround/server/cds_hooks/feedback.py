"""Card outcomes (the feedback endpoint) in the audit log, named by patient and service.

Feedback names only a card's uuid, so the service remembers the cards it issued (a bounded
map, an hour) to say whose chart the outcome was about; feedback for a card it does not
know (another worker's, or older) is still recorded, without a patient.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from wardround.graphs.copilot.audit import AuditLog
from wardround.server.cds_hooks.models import Card, FeedbackRequest

__all__ = ["IssuedCards", "record_feedback"]


@dataclass(frozen=True)
class IssuedCard:
    patient: str
    service: str
    summary: str
    suggestions: tuple[str, ...]
    at: float


class IssuedCards:
    """The cards issued lately, by uuid (at most `size`, for at most `ttl_s`)."""

    def __init__(self, size: int = 10_000, ttl_s: float = 3600.0) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._cards: OrderedDict[str, IssuedCard] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, cards: list[Card], patient: str, service: str) -> None:
        now = time.monotonic()
        with self._lock:
            for card in cards:
                ids = tuple(s.uuid for s in card.suggestions or [])
                self._cards[card.uuid] = IssuedCard(patient, service, card.summary, ids, now)
            while len(self._cards) > self.size:
                self._cards.popitem(last=False)

    def get(self, uuid: str) -> IssuedCard | None:
        with self._lock:
            found = self._cards.get(uuid)
        if found is None or time.monotonic() - found.at > self.ttl_s:
            return None
        return found


def record_feedback(
    audit: AuditLog, issued: IssuedCards, service_id: str, body: FeedbackRequest, client: str
) -> int:
    """One audit entry per card outcome; returns how many were recorded."""
    for item in body.feedback:
        card = issued.get(item.card)
        reason = item.overrideReason
        audit.record(
            user=client,
            action="cds_feedback",
            patient=card.patient if card else None,
            service=service_id,
            card=item.card,
            summary=card.summary if card else None,
            outcome=item.outcome,
            accepted_suggestions=[s.id for s in item.acceptedSuggestions or []] or None,
            override_reason=reason.reason.code if reason and reason.reason else None,
            user_comment=reason.userComment if reason else None,
            outcome_timestamp=item.outcomeTimestamp,
            known_card=card is not None,
        )
    return len(body.feedback)
