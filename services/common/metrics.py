"""Prometheus metrics shared by the plumbing; each process is one service, so the default registry is enough."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from common.db import on_commit

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter("handoff_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("handoff_http_request_seconds", "HTTP request latency", ["method", "route"], buckets=_FAST)

OUTBOX_BACKLOG = Gauge("handoff_outbox_backlog", "Outbox rows waiting to be published (last batch seen)")
OUTBOX_PUBLISHED = Counter("handoff_outbox_published_total", "Events published from the outbox")
OUTBOX_PUBLISH_FAILURES = Counter("handoff_outbox_publish_failures_total", "Relay attempts that failed")
OUTBOX_DEAD_LETTERS = Counter(
    "handoff_outbox_dead_letters_total", "Outbox rows the broker refused for good, moved to outbox_dead", ["reason"]
)
OUTBOX_PUBLISH_DELAY = Histogram(
    "handoff_outbox_publish_delay_seconds", "From outbox commit to broker acknowledgement", buckets=_FAST
)

CONSUMED = Counter("handoff_consumer_events_total", "Events consumed", ["topic", "type", "result"])
CONSUMER_LAG = Gauge("handoff_consumer_lag", "Records behind the high watermark", ["topic"])
DEAD_LETTERS = Counter("handoff_dead_letters_total", "Records sent to the dead-letter topic", ["topic", "reason"])
CONSUMER_BATCH_SECONDS = Histogram("handoff_consumer_batch_seconds", "Time to process one batch", buckets=_FAST)

# Business counters of ingest and scoring; routing defines its own next to the code that produces them.
LEADS_RECEIVED = Counter("handoff_leads_received_total", "Leads accepted by ingest", ["source_kind"])
LEADS_SCORED = Counter("handoff_leads_scored_total", "Leads scored", ["grade"])
QUARANTINED = Counter(
    "handoff_quarantined_total", "Submissions ingest kept in quarantine instead of as leads", ["source", "reason"]
)

# Label values come from a closed vocabulary; anything else is folded so a bad input cannot add a time series.
_SOURCE_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_GRADE = re.compile(r"[A-Z][A-Z0-9+-]?")
_SOURCE_ID = re.compile(r"[0-9a-f-]{36}")
QUARANTINE_REASONS = frozenset({"no_contact", "origin_not_allowed", "honeypot"})


@functools.lru_cache(maxsize=256)
def consumed(topic: str, event_type: str, result: str) -> Any:
    """CONSUMED's child for these labels, looked up once per process: `labels` takes a lock and checks its values on
    every call, once per type and result of every poll (bounded: a record's type is the producer's to choose)."""
    return CONSUMED.labels(topic=topic, type=event_type, result=result)


def after_commit(session: Any, action: Callable[[], None]) -> None:
    """Run `action` once the session's transaction commits, so a rolled-back unit of work counts nothing."""
    on_commit(session, action)


def lead_received(session: Any, source_kind: str | None, count: int = 1) -> None:
    """Count `count` accepted leads of one source kind when their transaction commits (one listener per batch)."""
    kind = source_kind if source_kind and _SOURCE_KIND.fullmatch(source_kind) else "other"
    counter = LEADS_RECEIVED.labels(source_kind=kind)
    after_commit(session, lambda: counter.inc(count))


def quarantined(session: Any, source_id: str | None, reason: str) -> None:
    """Count one quarantined submission by source id ("admin" without one) and reason when its transaction commits."""
    source = source_id if source_id and _SOURCE_ID.fullmatch(source_id) else "admin"
    label = reason if reason in QUARANTINE_REASONS else "other"
    after_commit(session, QUARANTINED.labels(source=source, reason=label).inc)


def lead_scored(session: Any, grade: str | None, count: int = 1) -> None:
    """Count `count` scored leads of one grade when their transaction commits (one listener per batch and grade)."""
    counter = _SCORED_BY_GRADE.get(grade)
    if counter is None:
        label = grade if grade and _GRADE.fullmatch(grade) else "none"
        counter = LEADS_SCORED.labels(grade=label)
        if len(_SCORED_BY_GRADE) < 64:  # grades are a closed set; the cap only guards against a bad caller
            _SCORED_BY_GRADE[grade] = counter
    after_commit(session, lambda: counter.inc(count))


# A grade's child counter, looked up once per process (`labels` takes a lock and checks its values per call).
_SCORED_BY_GRADE: dict[str | None, Any] = {}
