"""What the services' own metrics say about a stretch of load: polls, their size and time, the relay's delay.

The end-to-end bench reads each service's `/metrics` before and after a latency level and reports the difference,
so a level's row can say what dominates at that rate (how many polls a second, how many leads each, how long each
took to apply, how long the relay took from commit to acknowledgement, how long a webhook attempt took) from the
same run, without a profiler attached.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# Sums of these samples (every label set added up) are what a level's difference needs.
SAMPLES = (
    "handoff_consumer_batch_seconds_count",
    "handoff_consumer_batch_seconds_sum",
    "handoff_consumer_events_total",
    "handoff_outbox_publish_delay_seconds_count",
    "handoff_outbox_publish_delay_seconds_sum",
    "handoff_webhook_delivery_seconds_count",
    "handoff_webhook_delivery_seconds_sum",
)


def sample(url: str, timeout: float = 5.0) -> dict[str, float]:
    """The service's counters of SAMPLES now, summed over their labels; {} if it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return {}
    totals = dict.fromkeys(SAMPLES, 0.0)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in totals:
                totals[s.name] += s.value
    return totals


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return round(num / den * scale, 2) if den else None


def difference(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, Any]:
    """Per poll and per event figures of one service between two samples `seconds` apart."""
    if not before or not after:
        return {}
    d = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in SAMPLES}
    polls = d["handoff_consumer_batch_seconds_count"]
    events = d["handoff_consumer_events_total"]
    return {
        "polls_per_s": _ratio(polls, seconds),
        "events_per_poll": _ratio(events, polls),
        "apply_ms_per_poll": _ratio(d["handoff_consumer_batch_seconds_sum"], polls, 1000),
        # The poll loop's busy share of the wall clock (1.0: it never waited for records).
        "apply_share": _ratio(d["handoff_consumer_batch_seconds_sum"], seconds),
        "relay_delay_ms": _ratio(
            d["handoff_outbox_publish_delay_seconds_sum"], d["handoff_outbox_publish_delay_seconds_count"], 1000
        ),
        "webhook_attempt_ms": _ratio(
            d["handoff_webhook_delivery_seconds_sum"], d["handoff_webhook_delivery_seconds_count"], 1000
        ),
    }


def describe(name: str, figures: dict[str, Any]) -> str:
    """One log line's part: `routing 12.0 polls/s x 41.2 events, 55.1 ms each (66 % busy), commit to ack 4.2 ms`.

    "commit to ack" is the outbox relay's delay from a row's commit to the broker's acknowledgement as the service
    reads it: since the consumer's hand-off stopped waiting for the answer (da048ca), the answer is read at the
    loop's next turn, so this is an upper bound on the broker's own time, not the hop's latency."""
    if not figures or not figures.get("polls_per_s"):
        return f"{name} -"
    text = (
        f"{name} {figures['polls_per_s']} polls/s x {figures['events_per_poll']} events, "
        f"{figures['apply_ms_per_poll']} ms each ({(figures['apply_share'] or 0) * 100:.0f} % busy)"
    )
    if figures.get("relay_delay_ms") is not None:
        text += f", commit to ack {figures['relay_delay_ms']} ms"
    if figures.get("webhook_attempt_ms") is not None:
        text += f", webhook attempt {figures['webhook_attempt_ms']} ms"
    return text
