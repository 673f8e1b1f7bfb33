"""Routing: assigned leads/s draining a backlog of lead.scored, against a bare consume-and-produce loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import EVEN_RULES, EVEN_SEED

from bench.scoring import compare, received_events
from common.envelope import Event
from common.topics import LEADS_ASSIGNED, LEADS_SCORED


def scored_events(n: int) -> list[Event]:
    """lead.scored events carrying what routing reads: the lead, its source and a score with a grade."""
    events = []
    for received in received_events(n):
        data = dict(received.data)
        data["enrichment"] = {"company_domain": "example.org", "free_email": False}
        data["score"] = {"grade": "B", "fit": 55, "intent": 40, "total": 50, "reasons": ["job title: head of sales"]}
        scored = Event(type="lead.scored", source="/handoff/scoring", subject=received.subject, data=data)
        events.append(scored)
    return events


def run(tmp: Path, bootstrap: str, *, quick: bool, out_size: int = 1850) -> dict[str, Any]:
    """Routing alone (no webhook endpoints): the consumer, the decision, the SLA clock and the outbox."""
    return compare(
        tmp,
        bootstrap,
        service="routing",
        topics=(LEADS_SCORED, LEADS_ASSIGNED),
        events=scored_events(2000 if quick else 20_000),
        out_size=out_size,
        repeats=2 if quick else 3,
        wait_s=120.0 if quick else 600.0,
        seed=EVEN_SEED,
        rules=EVEN_RULES,
    )
