"""The SLA clock's entrypoint: a loop that fires due timers, each in the transaction that marks it fired."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from common.db import Database
from routing import metrics
from routing.handlers import Router, aware
from routing.store import RoutingRepository

log = structlog.get_logger(__name__)

# When timers are due but none could be claimed, another process is firing them: look again shortly.
_CONTENDED_PAUSE_S = 0.01


class TimerLoop:
    """Sleeps until the next due timer (at most max_sleep_s, or until a new timer wakes it) and fires what is due.

    Timers live in the database, so every routing process runs this loop: the earliest due time is read
    each round, which is how a timer written by another process (or before a restart) is found in time.
    """

    def __init__(
        self,
        db: Database,
        router: Router,
        *,
        batch_size: int,
        max_sleep_s: float,
        gauge_every_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._router = router
        self._batch = batch_size
        self._max_sleep = max_sleep_s
        self._gauge_every = gauge_every_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._gauge_at = 0.0
        self._next_due: datetime | None = None
        self.fired_total = 0
        router.on_timer_written = self._timer_written

    def _timer_written(self, due: datetime) -> None:
        if self._next_due is None or due < self._next_due:
            self._wake.set()

    async def run(self) -> None:
        """Fire due timers until stopped; errors are logged and retried, never fatal."""
        while not self._stopping:
            try:
                delay, due_then = await self._round()
                if delay > 0:
                    woken = False
                    with contextlib.suppress(TimeoutError):
                        woken = await asyncio.wait_for(self._wake.wait(), delay)
                    self._wake.clear()
                    if due_then and not woken and not self._stopping:
                        await self.tick()  # slept until the earliest due time: fire without looking again
            except Exception:
                log.exception("sla_timer_loop_error")
                await asyncio.sleep(1.0)

    async def _round(self) -> tuple[float, bool]:
        """One look at the store: fire a batch if anything is due; returns how long to sleep, and whether
        the earliest timer is due when that sleep ends."""
        async with self._db.read() as session:
            repo = RoutingRepository(session)
            self._next_due = aware(await repo.next_due())
            if time.monotonic() - self._gauge_at >= self._gauge_every:
                self._gauge_at = time.monotonic()
                metrics.SLA_OPEN_TIMERS.set(await repo.open_timers())
        now = self._clock()  # read after the query, so a slow query does not make the sleep overshoot
        if self._next_due is None:
            return self._max_sleep, False
        if self._next_due > now:
            until_due = (self._next_due - now).total_seconds()
            return min(self._max_sleep, until_due), until_due <= self._max_sleep
        fired = await self.tick()
        return (0.0 if fired else _CONTENDED_PAUSE_S), False

    async def tick(self) -> int:
        """Fire one batch of due timers; returns how many were claimed."""
        now = self._clock()
        async with self._db.transaction() as session:
            fired = await self._router.fire_due_timers(session, now, self._batch)
        self.fired_total += fired
        return fired

    async def stop(self) -> None:
        """Let the current round finish and end the loop."""
        self._stopping = True
        self._wake.set()
