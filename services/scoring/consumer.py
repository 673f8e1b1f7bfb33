"""Scoring's Kafka adapter: which events it consumes and which handler applies each."""

from __future__ import annotations

from common.consumer import Handler
from common.topics import LEADS_ERASED, LEADS_OUTCOMES, LEADS_RECEIVED, LEADS_SCORED
from scoring.handlers import Scoring

CONSUMES = (LEADS_RECEIVED, LEADS_ERASED, LEADS_OUTCOMES)
PRODUCES = (LEADS_SCORED,)


def event_handlers(scoring: Scoring) -> dict[str, Handler]:
    return {
        "lead.received": scoring.on_received,
        "lead.erased": scoring.on_erased,
        "lead.converted": scoring.on_outcome,
        "lead.disqualified": scoring.on_outcome,
    }
