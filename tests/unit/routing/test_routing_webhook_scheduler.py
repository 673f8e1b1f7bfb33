"""The sender's slots: bounded in all and per endpoint, waiting claims served round-robin, stale leases left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from routing.webhooks.claims import Claim
from routing.webhooks.scheduler import FairScheduler

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _claim(endpoint_id: str, n: int, lease_s: float = 60) -> Claim:
    return Claim(
        delivery_id=f"{endpoint_id}-{n}",
        endpoint_id=endpoint_id,
        message_id=f"msg-{endpoint_id}-{n}",
        url="https://crm.example.com/hook",
        payload="{}",
        secrets=("whsec_x",),
        lease_token="t",
        lease_until=NOW + timedelta(seconds=lease_s),
    )


def test_a_backlog_on_one_endpoint_leaves_the_other_slots_to_the_others() -> None:
    slots = FairScheduler(total=4, per_endpoint=2)
    for n in range(10):
        slots.wait(_claim("slow", n))
    slots.wait(_claim("fast", 0))
    slots.wait(_claim("fast", 1))
    started = [c.delivery_id for c in slots.ready(NOW, 15)]
    assert started == ["slow-0", "fast-0", "slow-1", "fast-1"]  # turns alternate, two each
    assert slots.free == 0 and slots.held() == {"slow": 10, "fast": 2}

    slots.finished(_claim("fast", 0))
    assert [c.delivery_id for c in slots.ready(NOW, 15)] == []  # the free slot is not the slow endpoint's
    slots.finished(_claim("slow", 0))
    assert [c.delivery_id for c in slots.ready(NOW, 15)] == ["slow-2"]
    assert slots.in_flight == {"slow": 2, "fast": 1} and slots.waiting == 7


def test_a_waiting_claim_whose_lease_would_end_mid_attempt_is_left_to_the_table() -> None:
    slots = FairScheduler(total=4, per_endpoint=4)
    slots.wait(_claim("crm", 0, lease_s=10))  # a 15 s attempt would outlive it
    slots.wait(_claim("crm", 1, lease_s=60))
    assert [c.delivery_id for c in slots.ready(NOW, 15)] == ["crm-1"]
    assert slots.waiting == 0 and slots.in_flight == {"crm": 1}


def test_waiting_claims_changed_since_their_hand_off_are_dropped() -> None:
    slots = FairScheduler(total=1, per_endpoint=1)
    for n in range(3):
        slots.wait(_claim("a", n))
        slots.wait(_claim("b", n))
    slots.drop_waiting({"a-1"}, {"b"})  # a-1 redacted, endpoint b disabled
    assert slots.waiting == 2 and slots.held() == {"a": 2}
    started = [c.delivery_id for c in slots.ready(NOW, 15)]
    slots.finished(_claim("a", 0))
    started += [c.delivery_id for c in slots.ready(NOW, 15)]
    assert started == ["a-0", "a-2"] and slots.waiting == 0
