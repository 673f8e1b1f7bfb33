"""Scoring's Kafka adapter: which events it consumes and which handler applies each."""

from __future__ import annotations

from common.consumer import BatchHandler, Handler
from common.topics import LEADS_ERASED, LEADS_OUTCOMES, LEADS_RECEIVED, LEADS_SCORED
from scoring.handlers import Scoring

CONSUMES = (LEADS_RECEIVED, LEADS_ERASED, LEADS_OUTCOMES)
PRODUCES = (LEADS_SCORED,)


def batch_handlers(scoring: Scoring) -> dict[str, BatchHandler]:
    """The hot path: a poll's lead.received events scored and stored together."""
    return {"lead.received": scoring.on_received_batch}


def event_handlers(scoring: Scoring) -> dict[str, Handler]:
    return {
        "lead.erased": scoring.on_erased,
        "lead.converted": scoring.on_outcome,
        "lead.disqualified": scoring.on_outcome,
    }
