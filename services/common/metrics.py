"""Prometheus metrics shared by the plumbing; each process is one service, so the default registry is enough."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter("handoff_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "handoff_http_request_seconds", "HTTP request latency", ["method", "route"], buckets=_FAST
)

OUTBOX_BACKLOG = Gauge("handoff_outbox_backlog", "Outbox rows waiting to be published (last batch seen)")
OUTBOX_PUBLISHED = Counter("handoff_outbox_published_total", "Events published from the outbox")
OUTBOX_PUBLISH_FAILURES = Counter("handoff_outbox_publish_failures_total", "Relay attempts that failed")
OUTBOX_PUBLISH_DELAY = Histogram(
    "handoff_outbox_publish_delay_seconds", "From outbox commit to broker acknowledgement", buckets=_FAST
)

CONSUMED = Counter("handoff_consumer_events_total", "Events consumed", ["topic", "type", "result"])
CONSUMER_LAG = Gauge("handoff_consumer_lag", "Records behind the high watermark", ["topic"])
DEAD_LETTERS = Counter(
    "handoff_dead_letters_total", "Records sent to the dead-letter topic", ["topic", "reason"]
)
CONSUMER_BATCH_SECONDS = Histogram(
    "handoff_consumer_batch_seconds", "Time to process one batch", buckets=_FAST
)
