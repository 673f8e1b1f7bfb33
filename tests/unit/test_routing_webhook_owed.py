"""What a consumer waits for after a batch: the webhooks its commit handed off, but not a slow receiver's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from routing.webhooks.owed import OWED_WITHIN_S, PROBE_EVERY_S, OwedDeliveries
from routing.webhooks.store import HandedOff


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _row(delivery_id: str, endpoint_id: str) -> HandedOff:
    return HandedOff(delivery_id, endpoint_id, f"msg_{delivery_id}", "{}", "lease", datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.asyncio
async def test_a_prompt_endpoint_is_waited_for_until_answered() -> None:
    clock = Clock()
    owed = OwedDeliveries(clock)
    owed.add([_row("d1", "fast"), _row("d2", "fast")])
    assert not owed.idle.is_set()
    clock.now += 0.002
    owed.done("d1", answered=True)
    assert not owed.idle.is_set(), "d2 still out"
    owed.done("d2", answered=True)
    assert owed.idle.is_set()
    owed.add([_row("d3", "fast")])
    assert not owed.idle.is_set(), "answers within the bound: still waited for"


@pytest.mark.asyncio
async def test_an_endpoint_slower_than_the_bound_is_not_waited_for() -> None:
    clock = Clock()
    owed = OwedDeliveries(clock)
    owed.add([_row("d1", "remote"), _row("d2", "local")])
    clock.now += 0.001
    owed.done("d2", answered=True)
    clock.now += OWED_WITHIN_S * 15  # an internet receiver's answer
    owed.done("d1", answered=True)
    owed.add([_row("d3", "remote")])
    assert owed.idle.is_set(), "a slow receiver's deliveries hold no batch back"
    owed.add([_row("d4", "local")])
    assert not owed.idle.is_set(), "another endpoint of the same sender still is"
    # Its deliveries not waited for are not timed: their answers are read after the consumer's next apply.
    clock.now += 0.001
    owed.done("d3", answered=True)
    owed.done("d4", answered=True)
    assert owed.slow("remote") and owed.idle.is_set()
    clock.now += PROBE_EVERY_S  # its probe is due: this hand-off, every delivery of it, is waited for again
    owed.add([_row("p1", "remote"), _row("p2", "remote")])
    assert not owed.idle.is_set()
    clock.now += OWED_WITHIN_S * 10  # still slow
    owed.done("p1", answered=True)
    owed.done("p2", answered=True)
    assert owed.idle.is_set() and owed.slow("remote")
    owed.add([_row("q1", "remote")])
    assert owed.idle.is_set(), "the next probe only after another PROBE_EVERY_S"
    clock.now += PROBE_EVERY_S
    owed.add([_row("p3", "remote")])
    clock.now += 0.001  # answered promptly: a loopback receiver slow once (a cold start) is waited for again
    owed.done("p3", answered=True)
    assert not owed.slow("remote")
    owed.add([_row("d5", "remote")])
    assert not owed.idle.is_set()


@pytest.mark.asyncio
async def test_a_drop_is_not_an_answer_and_revocations_and_settling_forget() -> None:
    clock = Clock()
    owed = OwedDeliveries(clock)
    owed.add([_row("d1", "e1"), _row("d2", "e2")])
    clock.now += 5.0
    owed.done("d1")  # dropped (lease too short, endpoint disabled): its time says nothing of the receiver
    assert not owed.slow("e1")
    owed.revoke(set(), {"e2"})
    assert owed.idle.is_set() and len(owed) == 0
    owed.add([_row("d5", "e1"), _row("d6", "e1")])
    owed.settle(in_flight=1)  # two handed, one attempt running: one was dropped unnoticed
    assert owed.idle.is_set()
