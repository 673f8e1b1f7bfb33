"""The SLA clock's entrypoint: the timer engine. The timers due in the next few minutes are held in memory, by
the partition of routing's consumer that owns their lead, and fired at their due time, each claimed by id in
the transaction that marks it fired; a sweep fires what no owner took; escalations follow in their own
transactions."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.partitioner import murmur2

from common.db import Database
from common.poll import poll_until
from routing import metrics
from routing.handlers import Router
from routing.store import RoutingRepository
from routing.usecases import clock as clock_usecase

# For this long after this process writes a timer due inside the horizon, each commit makes the loop look.
_LOOK_AFTER_WRITE_S = 2.0
_ESCALATION_STARVE_S = 2.0
_REFILL_STEP = timedelta(seconds=60)
# Rows read by due time per refill: one refill never holds the loop for long (a few tens of ms), so firing what
# is due goes first and a horizon still filling (a restart, millions of open timers) catches up round by round.
_REFILL_ROWS = 2_000


@dataclass(frozen=True)
class Ownership:
    """Which partitions of the lead-keyed topic this process owns, out of `count`."""

    count: int
    owned: frozenset[int]


def partition_of(lead_id: str, count: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed by this lead id (murmur2, as aiokafka)."""
    return (murmur2(lead_id.encode()) & 0x7FFFFFFF) % count


def consumer_ownership(runtime: Any, topic: str) -> Callable[[], Ownership | None]:
    """This process's share of the timers: the partitions of `topic` its consumer holds now. None (every timer)
    while the consumer holds none or is not running (a broker outage must not stop the clock; claims stay
    exactly once whoever fires)."""

    def owned() -> Ownership | None:
        loop = getattr(runtime, "consumer", None)
        held = loop.owned_partitions(topic) if loop is not None else None
        if held is None:
            return None
        mine, count = held
        return Ownership(count, mine) if mine and count else None

    return owned


class Horizon:
    """The open timers due by `watermark`, in a heap per owned partition (partition 0 when the process owns
    every timer). Refilled from the store: by due time as the watermark moves on, and by id for rows written
    after the watermark had passed their due time (this process's writes, or another's)."""

    def __init__(self, ownership: Ownership | None) -> None:
        self.ownership = ownership
        self.heaps: dict[int, list[tuple[float, int]]] = {}
        self.known: set[int] = set()
        self.watermark: datetime | None = None  # None: nothing read yet
        self.id_mark = 0  # every row with a smaller id due by the watermark has been read

    def __len__(self) -> int:
        return len(self.known)

    def add(self, rows: list[Any]) -> None:
        ownership = self.ownership
        for timer_id, lead_id, due in rows:
            if timer_id in self.known:
                continue
            part = 0 if ownership is None else partition_of(lead_id, ownership.count)
            if ownership is not None and part not in ownership.owned:
                continue
            self.known.add(timer_id)
            heapq.heappush(self.heaps.setdefault(part, []), (due.timestamp(), timer_id))

    def next_due(self) -> float | None:
        heads = [heap[0][0] for heap in self.heaps.values() if heap]
        return min(heads) if heads else None

    def pop_due(self, now: float, limit: int) -> list[int]:
        """Up to `limit` ids due by `now`, earliest first across the partitions."""
        out: list[int] = []
        heaps = [heap for heap in self.heaps.values() if heap]
        if len(heaps) == 1:  # one partition (or every timer): no choosing between heads, ~1 us a timer less
            heap, pop = heaps[0], heapq.heappop
            while heap and heap[0][0] <= now and len(out) < limit:
                out.append(pop(heap)[1])
            self.known.difference_update(out)
            return out
        while len(out) < limit and heaps:
            heap = min(heaps, key=lambda h: h[0][0])  # a handful of partitions: a scan beats a merge
            if heap[0][0] > now:
                break
            _due, timer_id = heapq.heappop(heap)
            self.known.discard(timer_id)
            out.append(timer_id)
            if not heap:
                heaps.remove(heap)
        return out


class TimerLoop:
    """Fires each timer at its due time from the in-memory horizon (horizon_s ahead, refilled every refresh_s
    and when this process writes a timer due inside it), sweeps the store every sweep_s for timers overdue by
    more than sweep_grace_s that no owner fired (a crashed process's partitions, a row written out of order),
    and escalates detected breaches in small transactions between firings.

    Exactly once: a timer fires only in the transaction whose conditional UPDATE marks it fired, whichever
    process, owner or sweep, gets there first. No routing lock is taken to fire; only escalations take it.
    The open-timers gauge reads the counter the writes keep (migration 0013), never counts the table.
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
        horizon_s: float | None = None,
        horizon_cap: int = 200_000,
        sweep_s: float | None = None,
        sweep_grace_s: float | None = None,
        ownership: Callable[[], Ownership | None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._router = router
        self._batch = batch_size
        self._escalation_batch = escalation_batch_size or router.settings.timer_escalation_batch_size
        self._max_sleep = max_sleep_s
        settings = router.settings
        self._refresh = refresh_s if refresh_s is not None else settings.timer_refresh_s
        horizon_s = horizon_s if horizon_s is not None else settings.timer_horizon_s
        self._span = timedelta(seconds=max(horizon_s, self._refresh * 2))
        self._cap = horizon_cap
        self._sweep_every = sweep_s if sweep_s is not None else settings.timer_sweep_s
        self._grace = timedelta(seconds=sweep_grace_s if sweep_grace_s is not None else settings.timer_sweep_grace_s)
        self._ownership = ownership
        self._gauge_every = gauge_every_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.in_service = asyncio.Event()  # set when the first round is done: the horizon read, the first due fired
        self.horizon = Horizon(ownership())
        self._refill_at = 0.0  # monotonic times of the next scheduled look at the store
        self._sweep_at = 0.0
        self._gauge_at = 0.0
        self._written_at = -1e9  # monotonic time this process last wrote a timer due inside the horizon
        self._look = False  # a commit since: look for new rows by id
        self._firing: Any = None  # the session of the firing batch in progress (its commit writes no new timer)
        self._escalations = True  # markers may wait (at start: a crash may have left some)
        self._escalated_at = time.monotonic()  # since when escalations have waited (or the last batch ran)
        self.fired_total = 0
        self.swept_total = 0
        self.escalated_total = 0
        router.on_timer_written = self._timer_written
        db.on_commit(self._committed)

    def _timer_written(self, due: datetime) -> None:
        """A timer written in this process, inside a transaction not yet committed: if it falls due inside the
        horizon, the commits of the next seconds each make the loop look for new rows by id."""
        watermark = self.horizon.watermark
        if watermark is not None and due <= watermark:
            self._written_at = time.monotonic()

    def _committed(self, session: Any) -> None:
        # Which commit carries the write is not known here, so every commit soon after one looks (two cheap
        # queries by primary key); a write committed later than that is read by the next refill (refresh_s).
        # The loop's own firing batches write no timer: during a burst they would each cost a look.
        if session is not self._firing and time.monotonic() - self._written_at < _LOOK_AFTER_WRITE_S:
            self._look = True
            self._wake.set()

    async def run(self) -> None:
        """Fire due timers until stopped; errors are logged and retried, never fatal."""
        await poll_until(
            self._stop, self._work, interval_s=self._max_sleep, name="sla_timers", wake=self._wake, error_pause_s=1.0
        )

    async def _work(self) -> float:
        try:
            sleep = await self._round()
            self.in_service.set()
            return sleep
        except Exception:
            self.horizon = Horizon(self._ownership())  # read the store afresh after a failure
            raise

    async def _round(self) -> float:
        """One round: look at the store when due, fire what is due, sweep, escalate, refresh the gauge; returns
        how long to sleep (0: go again at once)."""
        mono = time.monotonic()
        ownership = self._ownership()
        if ownership != self.horizon.ownership:
            self.horizon = Horizon(ownership)  # a rebalance: the new share is read from the store
        if self._look and self.horizon.watermark is not None:
            await self._refill(full=False)  # rows just committed: cheap reads by id, so a burst is seen at once
        # What is due fires first: refills, the sweep, escalations and the gauge wait for a round with nothing due.
        if await self._fire_due():
            return 0.0
        if self.horizon.watermark is None or mono >= self._refill_at:
            await self._refill(full=True)
            if await self._fire_due():
                return 0.0
        if mono >= self._sweep_at and await self.sweep():
            return 0.0
        now = self._clock()
        head = self.horizon.next_due()
        gap = self._max_sleep if head is None else head - now.timestamp()
        # Escalations wait for a gap between firings, so a burst is detected first; never more than
        # _ESCALATION_STARVE_S, so a steady stream of due timers cannot hold them back for good.
        starved = mono - self._escalated_at >= _ESCALATION_STARVE_S
        if self._escalations and (gap > 0.05 or starved) and await self._escalate():
            return 0.0
        if mono - self._gauge_at >= self._gauge_every:
            await self._refresh_gauge()
        return max(0.0, min(self._max_sleep, gap, self._refill_at - mono, self._sweep_at - mono))

    async def _refill(self, *, full: bool) -> None:
        """Read what the horizon lacks: rows written since the last look that are due by the watermark (by id),
        and with `full` the timers falling due between the watermark and now + horizon_s (by due time)."""
        horizon = self.horizon
        self._look = False
        now = self._clock()
        # The watermark moves at most _REFILL_STEP a refill: at start what is due in the next minute (and anything
        # overdue) is read first, so a restarted process is in service at once; the rest follows second by second.
        until = min(now + self._span, max(horizon.watermark or now, now) + _REFILL_STEP)
        async with self._db.read() as session:
            repo = RoutingRepository(session)
            top = await repo.last_timer_id()
            if horizon.watermark is not None and top > horizon.id_mark:
                horizon.add(await repo.timers_written_since(horizon.id_mark, top, horizon.watermark))
            if full:
                limit = max(1, min(_REFILL_ROWS, self._cap - len(horizon)))
                rows = await repo.timers_due_between(horizon.watermark, until, limit)
                shortened = len(rows) >= limit and rows[0][2] == rows[-1][2]
                if shortened:
                    # Every row read shares one due time (a big batch routed at one instant): read them all, or
                    # the watermark could never move past that time.
                    until, limit = rows[-1][2], self._cap
                    rows = await repo.timers_due_between(horizon.watermark, until, limit)
                horizon.add(rows)
                capped = len(rows) >= limit
                # A capped read stops just short of its last due time, so rows sharing it are read next time; the
                # next round reads on at once (after firing what is due) unless the horizon holds its cap already.
                horizon.watermark = until if not capped else rows[-1][2] - timedelta(microseconds=1)
                behind = (capped or shortened) and len(horizon) < self._cap
                self._refill_at = time.monotonic() + (0.0 if behind else self._refresh)
        horizon.id_mark = max(horizon.id_mark, top)

    async def _fire_due(self) -> int:
        """Fire one batch of the horizon's due timers; returns how many fired here."""
        ids = self.horizon.pop_due(self._clock().timestamp(), self._batch)
        if not ids:
            return 0
        try:
            async with self._db.transaction() as session:
                self._firing = session
                fired = await clock_usecase.fire_timers(self._router, session, ids, self._clock())
        finally:
            self._firing = None
        self.fired_total += fired
        self._note_escalations(fired)
        return len(ids)

    async def sweep(self) -> int:
        """Fire timers overdue by more than the grace that no owner fired; returns how many."""
        self._sweep_at = time.monotonic() + self._sweep_every
        due_by = self._clock() - self._grace
        async with self._db.read() as session:
            earliest = await RoutingRepository(session).next_due()
        if earliest is None or earliest > due_by:
            return 0  # the idle path writes nothing
        async with self._db.transaction() as session:
            swept = await clock_usecase.detect_due_timers(
                self._router, session, self._clock(), self._batch, due_by=due_by
            )
        self.swept_total += swept
        self.fired_total += swept
        self._note_escalations(swept)
        return swept

    def _note_escalations(self, fired: int) -> None:
        if fired and not self._escalations:
            self._escalations, self._escalated_at = True, time.monotonic()

    async def _escalate(self) -> int:
        """One small batch of escalations (reassignments under the routing lock); returns how many."""
        self._escalated_at = time.monotonic()
        async with self._db.read() as session:
            waiting = await RoutingRepository(session).escalation_due(self._clock())
        if not waiting:
            self._escalations = False
            return 0
        async with self._db.transaction() as session:
            escalated = await self._router.escalate_due(session, self._clock(), self._escalation_batch)
        self.escalated_total += escalated
        return escalated

    async def _refresh_gauge(self) -> None:
        """The open-timers gauge from the counter the writes keep (a few rows, not a count of the table)."""
        self._gauge_at = time.monotonic()
        async with self._db.read() as session:
            metrics.SLA_OPEN_TIMERS.set(await RoutingRepository(session).open_timers())
        if self._db.engine.dialect.name == "postgresql":
            async with self._db.transaction() as session:
                await RoutingRepository(session).fold_timer_counts()

    async def tick(self) -> int:
        """Look at the store and fire one batch of what is due, as a round would (tools and the bench)."""
        await self._refill(full=True)
        return await self._fire_due()

    async def stop(self) -> None:
        """Let the current round finish and end the loop."""
        self._stop.set()
        self._wake.set()
