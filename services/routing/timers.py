"""The SLA clock's entrypoint: a loop that detects due timers in short transactions, then escalates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from common.db import Database
from common.poll import poll_until
from routing import metrics
from routing.handlers import Router
from routing.store import RoutingRepository

# When timers are due but none could be claimed, another process is firing them: look again shortly.
_CONTENDED_PAUSE_S = 0.01


class TimerLoop:
    """Sleeps until the next due timer (at most max_sleep_s, or until a new timer wakes it) and fires what is due.

    Detection comes first: a due batch is marked fired and its warnings and breaches written in one short
    transaction; each breach leaves an escalation marker that later, smaller transactions turn into the
    reassignment, so a burst of breaches is seen in milliseconds even when escalating it takes seconds.

    Timers live in the database, so every routing process runs this loop. The earliest due time is cached:
    timers this process writes wake the loop, and the store is read again at least every refresh_s, which is
    how a timer written by another process (or before a restart) is found.
    """

    def __init__(
        self,
        db: Database,
        router: Router,
        *,
        batch_size: int,
        max_sleep_s: float,
        gauge_every_s: float = 15.0,
        escalation_batch_size: int | None = None,
        refresh_s: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._router = router
        self._batch = batch_size
        self._escalation_batch = escalation_batch_size or router.settings.timer_escalation_batch_size
        self._max_sleep = max_sleep_s
        self._refresh = max(max_sleep_s, refresh_s if refresh_s is not None else router.settings.timer_refresh_s)
        self._gauge_every = gauge_every_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._gauge_at = 0.0
        self._next_due: datetime | None = None
        self._read_at: float | None = None  # monotonic time of the last store read; None: must read
        self.fired_total = 0
        self.escalated_total = 0
        router.on_timer_written = self._timer_written

    def _timer_written(self, due: datetime) -> None:
        if self._read_at is not None and (self._next_due is None or due < self._next_due):
            self._next_due = due
        self._wake.set()

    async def run(self) -> None:
        """Fire due timers until stopped; errors are logged and retried, never fatal."""
        await poll_until(
            self._stop, self._work, interval_s=self._max_sleep, name="sla_timers", wake=self._wake, error_pause_s=1.0
        )

    async def _work(self) -> float:
        try:
            return await self._round()
        except Exception:
            self._read_at = None  # look at the store again after a failure
            raise

    async def _round(self) -> float:
        """One look at the store (or at the cached next due time while it is fresh): fire a batch if anything
        is due; returns how long to sleep (0: go again at once). A sleep until the earliest due time that no
        new timer cuts short ends in a round that fires it from the cached due time, without looking again."""
        fresh = self._read_at is not None and time.monotonic() - self._read_at < self._refresh
        if not fresh:
            async with self._db.read() as session:
                repo = RoutingRepository(session)
                self._next_due = await repo.next_due()
                if time.monotonic() - self._gauge_at >= self._gauge_every:
                    self._gauge_at = time.monotonic()
                    metrics.SLA_OPEN_TIMERS.set(await repo.open_timers())
            self._read_at = time.monotonic()
        now = self._clock()  # read after the query, so a slow query does not make the sleep overshoot
        if self._next_due is None:
            return self._max_sleep
        if self._next_due > now:
            return min(self._max_sleep, (self._next_due - now).total_seconds())
        fired = await self.tick()
        return 0.0 if fired else _CONTENDED_PAUSE_S

    async def tick(self) -> int:
        """Detect one batch of due timers; once detection has caught up, escalate one small batch.
        Returns how many timers and escalations were claimed."""
        self._read_at = None  # what is due next changes with what fires: look again next round
        async with self._db.transaction() as session:
            fired = await self._router.detect_due_timers(session, self._clock(), self._batch)
        self.fired_total += fired
        escalated = 0
        if fired < self._batch:
            async with self._db.transaction() as session:
                escalated = await self._router.escalate_due(session, self._clock(), self._escalation_batch)
            self.escalated_total += escalated
        return fired + escalated

    async def stop(self) -> None:
        """Let the current round finish and end the loop."""
        self._stop.set()
        self._wake.set()
