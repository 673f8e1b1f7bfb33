"""Routing's Kafka adapter: which events it consumes and which handler applies each."""

from __future__ import annotations

from common.consumer import BatchHandler, Handler
from common.topics import LEADS_ASSIGNED, LEADS_ERASED, LEADS_OUTCOMES, LEADS_SCORED, LEADS_SLA
from routing.handlers import Router

CONSUMES = (LEADS_SCORED, LEADS_ERASED)
PRODUCES = (LEADS_ASSIGNED, LEADS_SLA, LEADS_OUTCOMES)


def event_handlers(router: Router) -> dict[str, Handler]:
    return {
        "lead.scored": router.on_scored,
        "lead.erased": router.on_erased,
    }


def batch_handlers(router: Router) -> dict[str, BatchHandler]:
    """lead.scored a poll at a time (the common consumer's batch interface)."""
    return {"lead.scored": router.on_scored_batch}
