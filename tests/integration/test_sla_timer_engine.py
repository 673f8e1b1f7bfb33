"""The SLA timer engine on a real store (SQLite and PostgreSQL): a timer fires once whoever claims it (two
processes at the same moment, a process killed with SIGKILL holding its claim), the sweep fires what a dead
owner's partitions left overdue, and the open-timers counter follows every write."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text

from common.db import Database
from routing.store import RoutingRepository, SlaTimer
from routing.store.tables import SlaTimerCount
from routing.timers import Ownership, TimerLoop, partition_of
from routing.usecases import clock as clock_usecase
from tests.support.routing import Clock, Routing, routing_on, scored
from tests.support.stack import ROOT

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
HOUR = {"A": 60, "B": 60, "C": 60, "D": 60}


def real_time() -> datetime:
    return datetime.now(UTC)


async def _open_timer_ids(routing: Routing) -> list[int]:
    async with routing.db.read() as session:
        return list((await session.execute(select(SlaTimer.id).where(SlaTimer.fired_at.is_(None)))).scalars())


async def _fire_ids(routing: Routing, ids: list[int], now: datetime) -> int:
    async with routing.db.transaction() as session:
        return await clock_usecase.fire_timers(routing.router, session, ids, now)


async def test_two_processes_firing_the_same_due_timers_fire_each_once(database_url: str) -> None:
    clock = Clock(T0)
    async with (
        routing_on(database_url, clock, sla_minutes=HOUR) as one,
        routing_on(database_url, clock, sla_minutes=HOUR) as two,
    ):
        for _ in range(10):
            await one.route(scored(grade="A"))  # a warning at 30 minutes and a breach at 60 each
        ids = await _open_timer_ids(one)
        assert len(ids) == 20
        now = clock.advance(minutes=61)

        fired = await asyncio.gather(_fire_ids(one, ids, now), _fire_ids(two, ids, now))

        assert sum(fired) == 20
        assert await _fire_ids(one, ids, now) == 0  # nothing is left to fire
        notices = await one.events("lead.sla_warning", "lead.sla_breached")
        assert len(notices) == 20
        assert set(Counter((e.type, e.data["assignment_id"]) for e in notices).values()) == {1}


async def test_a_claim_held_by_another_transaction_is_skipped_not_waited_for(pg_database: str) -> None:
    """PostgreSQL: the conditional UPDATE claims through FOR UPDATE SKIP LOCKED, so a second process neither
    waits for the first one's transaction nor fires its timers twice."""
    clock = Clock(T0)
    async with (
        routing_on(pg_database, clock, sla_minutes=HOUR) as one,
        routing_on(pg_database, clock, sla_minutes=HOUR) as two,
    ):
        for _ in range(3):
            await one.route(scored(grade="A"))
        ids = await _open_timer_ids(one)
        now = clock.advance(minutes=61)
        async with one.db.transaction() as holding:
            assert await clock_usecase.fire_timers(one.router, holding, ids, now) == 6
            started = time.monotonic()
            assert await _fire_ids(two, ids, now) == 0  # skipped while the first transaction holds them
            assert time.monotonic() - started < 4.0  # not the 5 s lock_timeout: nobody waited
        assert await _fire_ids(two, ids, now) == 0  # and fired once the first one committed
        assert len(await one.events("lead.sla_breached")) == 3


_CLAIM_AND_HANG = """
import asyncio, sys
from datetime import datetime, UTC
from common.db import Database
from routing.handlers import Router
from routing.usecases import clock
from tests.support.routing import routing_settings

async def main():
    url, ids, now = sys.argv[1], [int(i) for i in sys.argv[2].split(",")], datetime.fromisoformat(sys.argv[3])
    db = Database(url)
    router = Router(routing_settings(url))
    async with db.transaction() as session:
        fired = await clock.fire_timers(router, session, ids, now)
        await session.flush()
        print("CLAIMED", fired, flush=True)
        await asyncio.sleep(120)  # killed here, before the commit

asyncio.run(main())
"""


async def test_a_process_killed_while_holding_its_claim_fires_nothing_and_the_next_fires_each_once(
    database_url: str,
) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=HOUR) as routing:
        for _ in range(4):
            await routing.route(scored(grade="A"))
        ids = await _open_timer_ids(routing)
        now = clock.advance(minutes=61)
        child = subprocess.Popen(
            [sys.executable, "-c", _CLAIM_AND_HANG, database_url, ",".join(map(str, ids)), now.isoformat()],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
            assert line.split() == ["CLAIMED", "8"], child.stderr.read() if child.stderr else line
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()

        assert await _fire_ids(routing, ids, now) == 8  # the killed claim never committed: all still due
        assert await _fire_ids(routing, ids, now) == 0
        breaches = Counter(e.data["assignment_id"] for e in await routing.events("lead.sla_breached"))
        assert len(breaches) == 4 and set(breaches.values()) == {1}


async def test_the_sweep_fires_a_dead_owners_overdue_timers_after_the_grace(database_url: str) -> None:
    """Two processes share the timers by partition; the owner of partition 1 is dead. The live one fires its
    own partition's timers at their due time and the dead one's through the sweep, each once."""
    clock = Clock(real_time())
    sla = {"A": 0.02, "B": 0.02, "C": 0.02, "D": 0.02}  # 1.2 s, a warning at 0.6 s; then the team queue
    async with routing_on(
        database_url, clock, sla_minutes=sla, escalation_max_reassignments=0, escalation_then="queue"
    ) as routing:
        routing.router.clock = real_time
        leads = [scored(grade="A") for _ in range(12)]
        for lead in leads:
            await routing.route(lead)
        orphaned = {lead.subject for lead in leads if partition_of(str(lead.subject), 2) == 1}
        assert 0 < len(orphaned) < len(leads)
        loop = TimerLoop(
            routing.db,
            routing.router,
            batch_size=50,
            max_sleep_s=0.1,
            sweep_s=0.2,
            sweep_grace_s=0.5,
            ownership=lambda: Ownership(2, frozenset({0})),
            clock=real_time,
        )
        task = asyncio.create_task(loop.run())
        try:
            deadline = time.monotonic() + 30
            while len(await routing.events("lead.sla_breached")) < len(leads):
                assert time.monotonic() < deadline, "timed out waiting for the breaches"
                await asyncio.sleep(0.1)
        finally:
            await loop.stop()
            await task

        breaches = await routing.events("lead.sla_breached")
        assert Counter(e.subject for e in breaches) == Counter({lead.subject: 1 for lead in leads})
        assert loop.swept_total >= 2 * len(orphaned)  # each orphaned lead's warning and breach, at least
        swept = [e for e in breaches if e.subject in orphaned]
        assert all(e.data["late_ms"] >= 500 for e in swept)  # the sweep waits out the owner's grace


async def _counted(db: Database) -> tuple[int, int]:
    """(the counter the triggers keep, a count of the table)."""
    async with db.read() as session:
        kept = await RoutingRepository(session).open_timers()
        counted = (await session.execute(select(func.count()).where(SlaTimer.fired_at.is_(None)))).scalar_one()
    return kept, int(counted)


async def test_the_open_timers_counter_follows_every_write(database_url: str) -> None:
    clock = Clock(T0)
    async with (
        routing_on(database_url, clock, sla_minutes=HOUR) as one,
        routing_on(database_url, clock, sla_minutes=HOUR) as two,
    ):
        leads = [scored(grade="A") for _ in range(4)]
        for lead in leads[:3]:
            await one.route(lead)
        await two.route(leads[3])  # another process (on PostgreSQL another server process) writes too
        assert await _counted(one.db) == (8, 8)
        await one.act(str(leads[0].subject), "touch", rep_id="r1")  # the clock stops: its timers are cancelled
        kept, counted = await _counted(one.db)
        assert kept == counted < 8
        clock.advance(minutes=31)
        assert await one.fire() == 3  # the three remaining warnings
        assert await _counted(one.db) == (counted - 3, counted - 3)

        await two.db.dispose()  # its server processes are gone: their rows fold into shard 0
        async with one.db.transaction() as session:
            await RoutingRepository(session).fold_timer_counts()
        assert await _counted(one.db) == (counted - 3, counted - 3)
        if one.db.engine.dialect.name == "postgresql":
            async with one.db.read() as session:
                shards = set((await session.execute(select(SlaTimerCount.shard))).scalars())
                live = set((await session.execute(text("SELECT pid FROM pg_stat_activity"))).scalars())
            assert shards - {0} <= live  # no row is left for a server process that is gone


async def test_the_horizon_takes_in_a_timer_written_after_it_was_read(database_url: str) -> None:
    """A timer this process writes inside the horizon (the watermark already passed its due time) is found by
    id after the commit and fired at its due time, not at the next sweep."""
    clock = Clock(real_time())
    async with routing_on(database_url, clock, sla_minutes={"A": 0.03}) as routing:
        routing.router.clock = real_time
        loop = TimerLoop(
            routing.db, routing.router, batch_size=50, max_sleep_s=0.25, refresh_s=60, sweep_s=60, clock=real_time
        )
        task = asyncio.create_task(loop.run())
        try:
            await asyncio.sleep(0.3)  # the horizon has been read (empty)
            await routing.route(scored(grade="A"))  # a warning at 0.9 s, a breach at 1.8 s
            deadline = time.monotonic() + 20
            while len(await routing.events("lead.sla_breached")) < 1:
                assert time.monotonic() < deadline, "timed out waiting for the breach"
                await asyncio.sleep(0.05)
        finally:
            await loop.stop()
            await task
        assert loop.swept_total == 0  # neither the sweep nor a periodic refill (a minute away) found it
        assert loop.fired_total >= 2


async def test_the_horizon_reads_past_thousands_of_timers_due_at_one_instant(database_url: str) -> None:
    """A refill reads a bounded number of rows; when more than that share one due time (a big batch routed at one
    instant) it still reads them all and moves on, so the timers after them are held too."""
    now = real_time()
    async with routing_on(database_url, Clock(now)) as routing:
        same, later = now + timedelta(seconds=30), now + timedelta(seconds=40)
        rows = [{"lead_id": f"lead-{k}", "assignment_id": 0, "kind": "breach", "due_at": same} for k in range(2_500)]
        async with routing.db.transaction() as session:
            await session.execute(insert(SlaTimer), [*rows, {**rows[0], "lead_id": "after", "due_at": later}])
        loop = TimerLoop(routing.db, routing.router, batch_size=50, max_sleep_s=0.25, horizon_s=60, clock=real_time)
        for _ in range(5):  # a few rounds' refills, firing nothing (all due in 30 s and more)
            await loop.tick()
        assert len(loop.horizon) == 2_501
        assert loop.horizon.watermark is not None and loop.horizon.watermark >= later


HOLD_ROSTER = """
teams:
  - {id: t, name: T, method: round_robin, timezone: UTC, hours: {mon-fri: "09:00-17:00"}}
reps:
  - {id: r1, name: Rep One, email: r1@example.com, team: t, timezone: UTC, hours: {mon-fri: "09:00-17:00"}}
"""
HOLD_RULES = """
fallback_team: t
defaults:
  outside_hours: hold
rules:
  - id: everyone
    action: {team: t, method: round_robin}
"""


async def test_a_held_lead_is_routed_when_its_hold_ends(database_url: str) -> None:
    """A hold timer fires without the routing lock, leaving its marker; the follow-up routes the lead."""
    saturday = datetime(2025, 3, 8, 12, 0, tzinfo=UTC)
    clock = Clock(saturday)
    async with routing_on(database_url, clock, roster=HOLD_ROSTER, rules=HOLD_RULES) as routing:
        lead = scored(grade="B")
        await routing.route(lead)
        (held,) = await routing.events("lead.assigned")
        assert held.data["rep"] is None  # held until Monday 09:00
        clock.now = datetime(2025, 3, 10, 9, 0, 1, tzinfo=UTC)
        assert await routing.fire() == 1
        (_held, assigned) = await routing.events("lead.assigned")
        assert assigned.subject == lead.subject and assigned.data["rep"]["id"] == "r1"
        async with routing.db.read() as session:
            pending = await RoutingRepository(session).pending_escalations(str(lead.subject))
        assert pending == []  # the marker went with the routing
