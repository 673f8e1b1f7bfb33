"""Which hand-offs are sent with the endpoints their writing transaction read, and which read them again."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from routing.webhooks.claims import ENDPOINTS_FRESH_S, as_written
from routing.webhooks.store import EndpointRow, HandedOff

ENDPOINT = EndpointRow("e1", "https://crm.example.com/hooks", "standard", "sealed", None, None)


def _row(delivery_id: str, endpoint: EndpointRow | None, read_at: float) -> HandedOff:
    until = datetime(2026, 1, 1, tzinfo=UTC)
    return HandedOff(delivery_id, "e1", f"msg_{delivery_id}", "{}", "lease", until, endpoint, read_at)


def test_a_batch_read_just_now_is_sent_as_read() -> None:
    now = time.monotonic()
    assert as_written([_row("d1", ENDPOINT, now), _row("d2", ENDPOINT, now)], changed_at=0.0) == {"e1": ENDPOINT}


def test_a_batch_with_one_stale_or_unread_endpoint_is_read_again() -> None:
    now = time.monotonic()
    assert as_written([_row("d1", ENDPOINT, now), _row("d2", ENDPOINT, now - 2 * ENDPOINTS_FRESH_S)], 0.0) is None
    assert as_written([_row("d1", ENDPOINT, now), _row("d2", None, now)], 0.0) is None


def test_an_endpoint_change_committed_after_the_read_voids_it() -> None:
    now = time.monotonic()
    assert as_written([_row("d1", ENDPOINT, now)], changed_at=now + 0.001) is None
