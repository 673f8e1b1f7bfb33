"""The platform fetcher's retry schedule: exponential, capped, jittered, and never overflowing."""

from __future__ import annotations

import random

import pytest

from ingest.fetcher import retry_delay

pytestmark = pytest.mark.unit


def test_delays_double_per_attempt_within_the_jitter_band() -> None:
    rng = random.Random(7)
    for attempt in range(1, 8):
        full = 2.0 * 2 ** (attempt - 1)
        delay = retry_delay(attempt, base_s=2.0, cap_s=10_000.0, rng=rng)
        assert full * 0.5 <= delay <= full


def test_delays_stop_growing_at_the_cap_even_after_thousands_of_attempts() -> None:
    rng = random.Random(7)
    delays = [retry_delay(attempt, base_s=2.0, cap_s=3600.0, rng=rng) for attempt in (12, 100, 5000)]
    assert all(1800.0 <= d <= 3600.0 for d in delays)


def test_jitter_spreads_a_batch_that_failed_together() -> None:
    rng = random.Random(7)
    delays = {round(retry_delay(3, base_s=2.0, cap_s=3600.0, rng=rng), 6) for _ in range(20)}
    assert len(delays) > 10
