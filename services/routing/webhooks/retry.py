"""The retry schedule (pure): when the next attempt is due, and what a receiver's `Retry-After` asks for."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_delay(
    step: int,
    schedule: Sequence[float],
    *,
    jitter: float,
    rand: float,
    retry_after: float | None = None,
    retry_after_max: float = float("inf"),
) -> float | None:
    """Seconds from the `step`-th failed attempt of a round to the next, or None once the schedule is spent.

    `rand` in [0, 1) spreads the delay by up to `jitter` either way; a receiver's `Retry-After` wins when later.
    """
    if step < 1:
        raise ValueError("step counts failed attempts and starts at 1")
    if step > len(schedule):
        return None
    delay = schedule[step - 1] * (1 + jitter * (2 * rand - 1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_max))
    return delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
