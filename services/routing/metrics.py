"""Routing's Prometheus metrics. Labels carry only outcomes and team ids, never anything about a person.

Counters and histograms that describe a state change are recorded when its transaction commits
(`record` hands them to common.db.on_commit), so a rolled-back batch that the consumer retries is not
counted twice.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import on_commit

# Speed-to-lead spans minutes to days; assignment latency spans milliseconds to minutes.
_TOUCH_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_LATE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)

LEADS_ASSIGNED = Counter(
    "handoff_leads_assigned_total",
    "Routing decisions by outcome (assigned, queued, held, nurture; merged: a repeat joined its open lead)",
    ["outcome"],
)
SLA_BREACHES = Counter("handoff_sla_breaches_total", "First-contact deadlines missed, by team", ["team"])
SLA_WARNINGS = Counter("handoff_sla_warnings_total", "SLA nudges sent, by team", ["team"])
SLA_OPEN_TIMERS = Gauge("handoff_sla_open_timers", "SLA and hold timers waiting to fire (refreshed by the timer loop)")
SLA_TIMER_LATENESS = Histogram(
    "handoff_sla_timer_lateness_seconds", "How long after its due time a timer fired", buckets=_LATE_BUCKETS
)
TIME_TO_FIRST_TOUCH = Histogram(
    "handoff_time_to_first_touch_seconds", "From routing to a rep's first touch", buckets=_TOUCH_BUCKETS
)
ASSIGNMENT_LATENCY = Histogram(
    "handoff_lead_assignment_latency_seconds",
    "From when the lead was submitted at its source (since=submitted) or received by Handoff (since=received)"
    " to its first routing decision",
    ["since"],
    buckets=_LATENCY_BUCKETS,
)


def record(session: AsyncSession, apply: Callable[[], None]) -> None:
    """Apply `apply` once the session's transaction commits; dropped if it rolls back."""
    on_commit(session, apply)


def team_label(team_id: str | None) -> str:
    """Team ids are operator-chosen names, never personal data; a missing team is 'none'."""
    return team_id or "none"
