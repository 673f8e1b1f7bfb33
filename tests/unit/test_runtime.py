"""The shared housekeeping loop: runs again at once while work is waiting, waits out a failed round, stops on time."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.runtime import every

pytestmark = pytest.mark.unit


async def test_every_drains_a_backlog_at_once_waits_after_a_failure_and_stops_when_told() -> None:
    stop = asyncio.Event()
    rounds: list[float] = []
    backlog = [3]

    async def work() -> bool:
        rounds.append(time.monotonic())
        if len(rounds) == 2:
            raise RuntimeError("the store is down this round")
        backlog[0] -= 1
        return backlog[0] > 0  # more is waiting

    task = asyncio.create_task(every(2.0, work, stop, name="test"))
    while backlog[0] > 0:
        await asyncio.sleep(0.01)
    assert len(rounds) == 4
    assert rounds[1] - rounds[0] < 1.0, "more waiting: the next round runs at once"
    assert rounds[2] - rounds[1] >= 1.9, "after a failed round the loop waits for its interval, then goes on"
    assert rounds[3] - rounds[2] < 1.0
    stop.set()
    await asyncio.wait_for(task, 1.0)  # does not wait out the interval
    assert len(rounds) == 4
