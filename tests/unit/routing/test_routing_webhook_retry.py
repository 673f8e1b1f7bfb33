"""The retry schedule (Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), its jitter and Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from routing.settings import RoutingSettings
from routing.webhooks.retry import parse_retry_after, retry_delay

pytestmark = pytest.mark.unit

SCHEDULE = RoutingSettings().webhook_retry_schedule_s
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_default_schedule_is_svix_after_an_immediate_first_attempt() -> None:
    assert SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    delays = [retry_delay(step, SCHEDULE, jitter=0.2, rand=0.5) for step in range(1, 9)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000, None]  # the 8th failure gives up


@pytest.mark.parametrize("step", range(1, 8))
def test_jitter_spreads_each_delay_within_the_configured_fraction(step: int) -> None:
    base = SCHEDULE[step - 1]
    rng = random.Random(step)
    delays = [retry_delay(step, SCHEDULE, jitter=0.2, rand=rng.random()) for _ in range(400)]
    assert all(d is not None and base * 0.8 <= d <= base * 1.2 for d in delays)
    assert retry_delay(step, SCHEDULE, jitter=0.2, rand=0.0) == pytest.approx(base * 0.8)
    assert len({round(d or 0, 6) for d in delays}) > 300  # spread, not a constant
    assert min(d or 0 for d in delays) < base * 0.9 and max(d or 0 for d in delays) > base * 1.1


def test_retry_after_wins_only_when_later_and_is_capped() -> None:
    assert retry_delay(1, SCHEDULE, jitter=0, rand=0.5, retry_after=60) == 60
    assert retry_delay(2, SCHEDULE, jitter=0, rand=0.5, retry_after=60) == 300
    assert retry_delay(1, SCHEDULE, jitter=0, rand=0.5, retry_after=10**9, retry_after_max=86_400) == 86_400
    assert retry_delay(8, SCHEDULE, jitter=0, rand=0.5, retry_after=60) is None  # spent is spent


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(format_datetime(NOW + timedelta(minutes=7), usegmt=True), NOW) == 420
    assert parse_retry_after(format_datetime(NOW - timedelta(minutes=7), usegmt=True), NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_step_counts_failures_from_one() -> None:
    with pytest.raises(ValueError):
        retry_delay(0, SCHEDULE, jitter=0.2, rand=0.5)
