"""Routing's SLA clock on a real store (SQLite and PostgreSQL): warnings, breaches, the escalation ladder,
touches that stop the clock, rep outcomes, metrics, and timers fired once by two loops at the same time."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy import select

from routing import metrics
from routing.store import AssignmentRow, LeadRow, SlaTimer, TimelineRow
from routing.timers import TimerLoop
from tests.support.routing import Clock, Routing, routing_on, scored

pytestmark = pytest.mark.integration

# A Tuesday morning, so business-hours arithmetic is not needed to read the tests.
T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
FIVE_MINUTES = {"A": 5, "B": 5, "C": 5, "D": 5}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_breach_reassigns_to_another_rep_with_a_fresh_clock_then_goes_to_the_manager(
    database_url: str,
) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=FIVE_MINUTES) as routing:
        breaches_before = _sample("handoff_sla_breaches_total", team="t")
        lead = scored(grade="A")
        await routing.route(lead)
        (first,) = await routing.events("lead.assigned")
        assert first.data["rep"]["id"] == "r1"
        assert first.data["sla"]["due_at"] == (T0 + timedelta(minutes=5)).isoformat()

        clock.advance(minutes=2.5)
        assert await routing.fire() == 1
        (warning,) = await routing.events("lead.sla_warning")
        assert warning.data["rep_id"] == "r1" and warning.data["fraction"] == 0.5

        clock.advance(minutes=2.5)
        await routing.fire()
        assert await routing.fire() == 0  # nothing fires twice
        (breach,) = await routing.events("lead.sla_breached")
        (second,) = await routing.events("lead.reassigned")
        assert breach.data["assignment_id"] == first.data["assignment_id"]
        assert second.data["rep"]["id"] == "r2" and second.data["previous_rep_id"] == "r1"
        assert second.data["reassign_reason"] == "sla_breach"
        # A fresh clock: the new deadline counts from the reassignment, not from the first assignment.
        assert second.data["sla"]["due_at"] == (clock.now + timedelta(minutes=5)).isoformat()
        excluded = {c["rep_id"]: c["excluded_because"] for c in second.data["candidates"]}
        assert excluded["r1"] == ["already_tried"]

        for expected in ("r3", "m"):  # the second reassignment, then the ladder's last step: the manager
            clock.advance(minutes=5)
            await routing.fire()
            latest = (await routing.events("lead.reassigned"))[-1]
            assert latest.data["rep"]["id"] == expected
        assert latest.data["rule_id"] == "escalation:manager"
        assert _sample("handoff_sla_breaches_total", team="t") - breaches_before == 3

        async with routing.db.read() as session:
            assignments = (
                (
                    await session.execute(
                        select(AssignmentRow).where(AssignmentRow.lead_id == lead.subject).order_by(AssignmentRow.id)
                    )
                )
                .scalars()
                .all()
            )
        assert [a.rep_id for a in assignments] == ["r1", "r2", "r3", "m"]
        assert [a.end_reason for a in assignments] == ["sla_breach", "sla_breach", "sla_breach", None]
        breaches = Counter(e.data["assignment_id"] for e in await routing.events("lead.sla_breached"))
        assert sorted(breaches.values()) == [1, 1, 1]


async def test_breaches_due_together_fire_in_batches_each_once_and_a_touched_lead_not_at_all(
    database_url: str,
) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=FIVE_MINUTES) as routing:
        leads = [scored(grade="A") for _ in range(9)]
        for lead in leads:
            await routing.route(lead)
        assigned = {e.subject: e.data["assignment_id"] for e in await routing.events("lead.assigned")}
        await routing.act(leads[0].subject, "touch")

        clock.advance(minutes=5)  # every warning and every breach is due now
        assert await routing.fire(limit=4) == 4  # a batch smaller than what is due: the rest waits its turn
        while await routing.fire(limit=4):
            pass

        warned = Counter(e.subject for e in await routing.events("lead.sla_warning"))
        breached = Counter(e.subject for e in await routing.events("lead.sla_breached"))
        waiting = {lead.subject for lead in leads[1:]}
        assert warned == dict.fromkeys(waiting, 1) and breached == dict.fromkeys(waiting, 1)
        assert {e.subject: e.data["assignment_id"] for e in await routing.events("lead.sla_breached")} == {
            lead_id: assigned[lead_id] for lead_id in waiting
        }
        reassigned = Counter(e.subject for e in await routing.events("lead.reassigned"))
        assert reassigned == dict.fromkeys(waiting, 1)
        async with routing.db.read() as session:
            timeline = (await session.execute(select(TimelineRow.lead_id, TimelineRow.kind))).all()
            touched_timers = (
                (await session.execute(select(SlaTimer).where(SlaTimer.lead_id == leads[0].subject))).scalars().all()
            )
        kinds = Counter((lead_id, kind) for lead_id, kind in timeline if kind.startswith("sla_"))
        assert kinds == {(lead_id, kind): 1 for lead_id in waiting for kind in ("sla_warning", "sla_breached")}
        assert touched_timers and all(t.cancelled for t in touched_timers)


async def test_a_touch_stops_the_clock_and_records_time_to_first_touch_raw_and_in_working_time(
    database_url: str,
) -> None:
    # Rep works 09:00-17:00 London; the lead arrives Friday 16:58 and is touched Monday 09:05 (7 working minutes).
    roster = """
teams:
  - {id: t, name: T, method: round_robin, timezone: Europe/London, hours: {mon-fri: "09:00-17:00"}}
reps:
  - {id: r1, name: Rep One, email: r1@example.com, team: t, timezone: Europe/London, hours: {mon-fri: "09:00-17:00"}}
"""
    friday = datetime(2025, 3, 7, 16, 58, tzinfo=UTC)
    clock = Clock(friday)
    async with routing_on(
        database_url, clock, roster=roster, sla_business_hours=True, sla_minutes={"B": 60}
    ) as routing:
        touches_before = _sample("handoff_time_to_first_touch_seconds_count")
        lead = scored(grade="B")
        await routing.route(lead)
        (assigned,) = await routing.events("lead.assigned")
        assert assigned.data["sla"]["business_hours"] is True
        assert assigned.data["sla"]["due_at"] == datetime(2025, 3, 10, 9, 58, tzinfo=UTC).isoformat()

        clock.now = datetime(2025, 3, 10, 9, 5, tzinfo=UTC)
        await routing.fire()  # the half-way warning (Monday 09:28) is not due yet
        result = await routing.act(lead.subject, "touch")
        assert result["time_to_first_touch_s"] == (clock.now - friday).total_seconds()
        assert result["working_minutes"] == 7.0
        assert result["within_sla"] is True

        clock.now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)  # long past the deadline
        await routing.fire()
        assert await routing.events("lead.sla_warning", "lead.sla_breached") == []
        (touched,) = await routing.events("lead.touched")
        assert touched.data["working_minutes"] == 7.0
        assert _sample("handoff_time_to_first_touch_seconds_count") - touches_before == 1
        async with routing.db.read() as session:
            timers = (await session.execute(select(SlaTimer))).scalars().all()
            row = await session.get(LeadRow, lead.subject)
        assert timers and all(t.cancelled for t in timers)
        assert row is not None and row.status == "touched" and row.first_touch_at is not None


async def test_rep_outcomes_are_emitted_for_scoring_with_their_reasons(database_url: str) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock) as routing:
        won, lost, rejected = scored(), scored(), scored()
        for event in (won, lost, rejected):
            await routing.route(event)
        await routing.act(won.subject, "accept")
        await routing.act(won.subject, "convert", reason="signed")
        await routing.act(lost.subject, "disqualify", reason="student")
        await routing.act(rejected.subject, "reject", reason="wrong_territory")

        (converted,) = await routing.events("lead.converted")
        (disqualified,) = await routing.events("lead.disqualified")
        assert (converted.subject, converted.data["reason"], converted.data["rep_id"]) == (won.subject, "signed", "r1")
        assert (disqualified.subject, disqualified.data["reason"]) == (lost.subject, "student")
        (reassigned,) = await routing.events("lead.reassigned")
        assert reassigned.subject == rejected.subject and reassigned.data["reassign_reason"] == "rejected"
        assert reassigned.data["rep"]["id"] != reassigned.data["previous_rep_id"] == "r3"
        # Outcome events carry no personal data.
        for event in await routing.events("lead.converted", "lead.disqualified", "lead.rejected"):
            assert "example.org" not in str(event.data)
        with pytest.raises(ValueError, match="already converted"):
            await routing.act(won.subject, "disqualify", reason="late")


async def test_metrics_count_decisions_and_never_carry_personal_data(database_url: str) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=FIVE_MINUTES) as routing:
        assigned_before = _sample("handoff_leads_assigned_total", outcome="assigned")
        latency_before = _sample("handoff_lead_assignment_latency_seconds_count", since="received")
        lead = scored(received_at=T0 - timedelta(seconds=3), email="secret.person@private-domain.test")
        await routing.route(lead)
        assert _sample("handoff_leads_assigned_total", outcome="assigned") - assigned_before == 1
        assert _sample("handoff_lead_assignment_latency_seconds_count", since="received") - latency_before == 1
        clock.advance(minutes=5)
        await routing.fire()
        text = generate_latest().decode()
        assert 'handoff_sla_breaches_total{team="t"}' in text
        assert "secret.person" not in text and "private-domain" not in text and lead.subject not in text


async def test_a_rolled_back_decision_is_not_counted(database_url: str) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock) as routing:
        before = _sample("handoff_leads_assigned_total", outcome="assigned")
        with pytest.raises(RuntimeError):
            async with routing.db.transaction() as session:
                await routing.router.on_scored(session, scored())
                raise RuntimeError("the consumer batch failed")
        assert _sample("handoff_leads_assigned_total", outcome="assigned") == before


async def _run_loops(
    routings: list[Routing],
    until: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> list[TimerLoop]:
    """Each routing's TimerLoop on the real clock, as in its own process, while `meanwhile` runs and until
    `until()` holds."""
    loops = []
    for routing in routings:
        routing.router.clock = real_time
        loops.append(TimerLoop(routing.db, routing.router, batch_size=7, max_sleep_s=0.25, clock=real_time))
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:
        if meanwhile is not None:
            await meanwhile()
        deadline = time.monotonic() + timeout
        while not await until():
            assert time.monotonic() < deadline, "timed out waiting for the timers"
            await asyncio.sleep(0.1)
    finally:
        for loop in loops:
            await loop.stop()
        await asyncio.gather(*tasks)
    return loops


async def _late_ms(routing: Routing, kind: str) -> list[int]:
    async with routing.db.read() as session:
        rows = (await session.execute(select(TimelineRow).where(TimelineRow.kind == kind))).scalars()
        return sorted(row.detail["late_ms"] for row in rows)


def real_time() -> datetime:
    return datetime.now(UTC)


async def test_two_timer_loops_on_one_store_fire_each_timer_once(database_url: str) -> None:
    """Two routing processes' loops race for the same due timers; each warning and breach happens once."""
    clock = Clock(real_time())
    leads = 20
    sla = {"A": 0.02, "B": 0.02, "C": 0.02, "D": 0.02}  # 1.2 s: the whole ladder runs within seconds
    async with (
        routing_on(database_url, clock, sla_minutes=sla, escalation_then="queue") as one,
        routing_on(database_url, clock, sla_minutes=sla, escalation_then="queue") as two,
    ):
        one.router.clock = real_time

        async def route_all() -> None:
            for _ in range(leads):
                await one.route(scored())

        async def all_queued() -> bool:  # the ladder's end: r1, r2, r3 each missed, then the team queue
            async with one.db.read() as session:
                current = await session.execute(select(AssignmentRow).where(AssignmentRow.ended_at.is_(None)))
                return all(a.outcome == "queued" for a in current.scalars())

        loops = await _run_loops([one, two], all_queued, timeout=90, meanwhile=route_all)

        breaches = Counter(e.data["assignment_id"] for e in await one.events("lead.sla_breached"))
        warnings = Counter(e.data["assignment_id"] for e in await one.events("lead.sla_warning"))
        assert len(breaches) == leads * 3 and set(breaches.values()) == {1}
        assert set(warnings.values()) == {1} and set(warnings) == set(breaches)
        assert loops[0].fired_total > 0 and loops[1].fired_total > 0, "both loops took part"
        async with one.db.read() as session:
            fired = (await session.execute(select(SlaTimer).where(SlaTimer.cancelled.is_(False)))).scalars().all()
        # Each missed deadline is one breach timer fired; the queue's own deadlines (an hour away) still wait.
        assert sum(1 for t in fired if t.kind == "breach" and t.fired_at is not None) == leads * 3
        late = await _late_ms(one, "sla_breached")
        print(f"two loops, {len(late)} breaches in bursts: p50 {late[len(late) // 2]} ms, max {late[-1]} ms")


async def test_timers_of_leads_arriving_over_time_each_fire_once_and_never_early(database_url: str) -> None:
    """Timers written while the loop runs are picked up and fire once each, never before they are due.

    How late they fire is the loop's speed, measured by `bench.timers`, not asserted here (a timed assertion fails
    on a loaded machine, not on a slow loop)."""
    clock = Clock(real_time())
    sla = {"A": 0.03, "B": 0.03, "C": 0.03, "D": 0.03}  # 1.8 s; one breach each, then the team queue
    async with routing_on(
        database_url, clock, sla_minutes=sla, escalation_max_reassignments=0, escalation_then="queue"
    ) as routing:
        routing.router.clock = real_time
        leads = 6

        async def arrive() -> None:
            for _ in range(leads):
                await routing.route(scored())
                await asyncio.sleep(0.15)  # leads arrive over time, as they do, not all in the same millisecond

        async def breached() -> bool:
            return len(await routing.events("lead.sla_breached")) == leads

        await _run_loops([routing], breached, timeout=30, meanwhile=arrive)
        late = await _late_ms(routing, "sla_warning") + await _late_ms(routing, "sla_breached")
        print(f"{len(late)} timers: p50 {sorted(late)[len(late) // 2]} ms, max {max(late)} ms")
        assert len(late) == 2 * leads  # a warning and a breach per lead, none twice
        async with routing.db.read() as session:
            timers = (await session.execute(select(SlaTimer))).scalars().all()
        fired = [t for t in timers if t.fired_at is not None]
        assert len(fired) >= 2 * leads
        assert all(t.fired_at >= t.due_at for t in fired)  # none before its due time


async def test_the_timer_loop_publishes_how_many_timers_are_open(database_url: str) -> None:
    clock = Clock(real_time())
    async with routing_on(database_url, clock, sla_minutes={"A": 60}) as routing:
        routing.router.clock = real_time
        for _ in range(3):
            await routing.route(scored(grade="A"))  # each: a warning and a breach timer, an hour away
        async with routing.db.read() as session:
            pending = (await session.execute(select(SlaTimer).where(SlaTimer.fired_at.is_(None)))).scalars().all()
        assert len(pending) == 6
        metrics.SLA_OPEN_TIMERS.set(-1)  # whatever an earlier test left there

        async def gauge_shows_them() -> bool:
            return REGISTRY.get_sample_value("handoff_sla_open_timers") == len(pending)

        await _run_loops([routing], gauge_shows_them, timeout=10)
