"""The event contract: topic names and the event types each carries (see schemas/asyncapi.yaml)."""

from __future__ import annotations

LEADS_RECEIVED = "leads.received.v1"
LEADS_ERASED = "leads.erased.v1"
LEADS_SCORED = "leads.scored.v1"
LEADS_ASSIGNED = "leads.assigned.v1"
LEADS_SLA = "leads.sla.v1"
LEADS_OUTCOMES = "leads.outcomes.v1"

EVENT_TOPICS: dict[str, str] = {
    "lead.received": LEADS_RECEIVED,
    "lead.erased": LEADS_ERASED,
    "lead.scored": LEADS_SCORED,
    "lead.assigned": LEADS_ASSIGNED,
    "lead.reassigned": LEADS_ASSIGNED,
    "lead.unassigned": LEADS_ASSIGNED,
    "lead.resubmitted": LEADS_ASSIGNED,
    "lead.sla_warning": LEADS_SLA,
    "lead.sla_breached": LEADS_SLA,
    "lead.touched": LEADS_OUTCOMES,
    "lead.accepted": LEADS_OUTCOMES,
    "lead.rejected": LEADS_OUTCOMES,
    "lead.converted": LEADS_OUTCOMES,
    "lead.disqualified": LEADS_OUTCOMES,
}


def dead_letter_topic(service: str) -> str:
    """Each consuming service has its own dead-letter topic, so a replay goes back to the right consumer."""
    return f"deadletter.{service}.v1"


def retention_days(topic: str, *, leads_days: float, dead_letter_days: float) -> float | None:
    """How long a topic keeps records: lead events and dead letters carry personal data, so both are bounded."""
    if topic.startswith("deadletter."):
        return dead_letter_days
    if topic.startswith("leads."):
        return leads_days
    return None


def topic_configs(topic: str, *, leads_days: float, dead_letter_days: float) -> dict[str, str]:
    """The broker configs a topic is created with (`retention.ms` as a string, as the admin API takes it)."""
    days = retention_days(topic, leads_days=leads_days, dead_letter_days=dead_letter_days)
    return {} if days is None else {"retention.ms": str(int(days * 86_400_000))}
