"""The SLA clock's entrypoint: a loop that fires due timers, each in the transaction that marks it fired."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from common.db import Database
from routing.handlers import Router, aware
from routing.store import RoutingRepository

log = structlog.get_logger(__name__)


class TimerLoop:
    """Sleeps until the next due timer (or a wake-up from a new, earlier one) and fires what is due."""

    def __init__(
        self,
        db: Database,
        router: Router,
        *,
        batch_size: int,
        max_sleep_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._router = router
        self._batch = batch_size
        self._max_sleep = max_sleep_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self.fired_total = 0
        router.on_timer_written = self._timer_written
        self._next_due: datetime | None = None

    def _timer_written(self, due: datetime) -> None:
        if self._next_due is None or due < self._next_due:
            self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                fired = await self.tick()
                if fired >= self._batch:
                    continue  # a burst: keep draining without sleeping
                async with self._db.read() as session:
                    self._next_due = aware(await RoutingRepository(session).next_due())
                delay = self._max_sleep
                if self._next_due is not None:
                    delay = min(delay, max(0.0, (self._next_due - self._clock()).total_seconds()))
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
            except Exception:
                log.exception("sla_timer_loop_error")
                await asyncio.sleep(1.0)

    async def tick(self) -> int:
        """Fire one batch of due timers; returns how many were claimed."""
        now = self._clock()
        async with self._db.transaction() as session:
            fired = await self._router.fire_due_timers(session, now, self._batch)
        self.fired_total += fired
        return fired

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
