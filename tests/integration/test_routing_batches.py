"""Routing a consumer poll at once (issue 13 items 2-3), on a real store (SQLite and PostgreSQL): every lead of
the batch decided once, in order, with its assignment, clock, timeline entry and event, exactly as one at a time;
on PostgreSQL decisions lock their team only, so another team's decisions go on while one team's wait."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text

from common.db import Database
from common.envelope import Event
from routing.store import AssignmentRow, LeadRow, RepLoadRow, RotationRow, SlaTimer, TimelineRow
from routing.usecases.shared import lock, lock_teams
from tests.support.routing import Clock, Routing, routing_on, scored

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
TWO_TEAMS = """
teams:
  - {id: a, name: Team A, method: round_robin, hours: always}
  - {id: b, name: Team B, method: round_robin, hours: always}
reps:
  - {id: a1, name: A One, email: a1@example.com, team: a, hours: always}
  - {id: a2, name: A Two, email: a2@example.com, team: a, hours: always}
  - {id: b1, name: B One, email: b1@example.com, team: b, hours: always}
  - {id: b2, name: B Two, email: b2@example.com, team: b, hours: always}
"""
BY_COUNTRY = """
fallback_team: a
rules:
  - id: german
    when: {lead.country: DE}
    action: {team: a, method: round_robin}
  - id: others
    action: {team: b, method: round_robin}
"""


async def route_batch(routing: Routing, events: list[Event]) -> None:
    async with routing.db.transaction() as session:
        await routing.router.on_scored_batch(session, events)


async def _all(routing: Routing, model: type[Any]) -> list[Any]:
    async with routing.db.read() as session:
        return list((await session.execute(select(model))).scalars())


async def test_a_batch_is_routed_once_each_in_order_with_its_clock_timeline_and_event(database_url: str) -> None:
    async with routing_on(database_url, Clock(T0), roster=TWO_TEAMS, rules=BY_COUNTRY) as routing:
        events = [scored(grade="B", country="DE" if i % 3 else "FR") for i in range(30)]
        again = Event(type="lead.scored", source="/tests", subject=events[4].subject, data=events[4].data)
        await route_batch(routing, [*events[:15], again, *events[15:]])

        assignments = await _all(routing, AssignmentRow)
        assert sorted(a.lead_id for a in assignments) == sorted(e.subject for e in events)  # a re-publish: once
        assert len({a.id for a in assignments}) == 30
        by_team = Counter((a.team_id, a.rep_id) for a in assignments)
        # Round robin per team across the batch: the decisions saw each other's rotation.
        assert by_team == {("a", "a1"): 10, ("a", "a2"): 10, ("b", "b1"): 5, ("b", "b2"): 5}
        loads = {row.rep_id: (row.open_leads, row.assigned_today) for row in await _all(routing, RepLoadRow)}
        assert loads == {"a1": (10, 10), "a2": (10, 10), "b1": (5, 5), "b2": (5, 5)}
        assert {(r.team_id, r.rep_id) for r in await _all(routing, RotationRow)} == set(by_team)

        assigned = await routing.events("lead.assigned")
        assert [e.subject for e in assigned] == [e.subject for e in events]  # in the batch's order
        # The data as the one-lead path writes it (tests/unit/test_schemas.py holds assignment_data to its schema).
        assert all(e.data["outcome"] == "assigned" and e.data["rep"]["id"] for e in assigned)
        ids = {a.lead_id: a.id for a in assignments}
        assert all(e.data["assignment_id"] == ids[e.subject] for e in assigned)
        timers = await _all(routing, SlaTimer)
        assert {t.lead_id for t in timers if t.kind == "breach"} == set(ids)
        assert all(t.assignment_id == ids[t.lead_id] for t in timers)
        timeline = [t for t in await _all(routing, TimelineRow) if t.kind == "assigned"]
        assert sorted(t.lead_id for t in timeline) == sorted(ids)
        assert all(t.detail["assignment_id"] == ids[t.lead_id] for t in timeline)

        # The same poll redelivered after a crash (new event ids): nothing is routed twice.
        redelivered = [Event(type=e.type, source=e.source, subject=e.subject, data=e.data) for e in events]
        await route_batch(routing, redelivered)
        assert len(await _all(routing, AssignmentRow)) == 30


async def test_a_repeat_in_the_same_batch_joins_the_lead_routed_before_it(database_url: str) -> None:
    async with routing_on(database_url, Clock(T0)) as routing:
        original, other = scored(grade="B"), scored(grade="B")
        repeat = scored(grade="A", duplicate_of=original.subject)
        await route_batch(routing, [original, repeat, other])

        leads = {lead.lead_id: lead for lead in await _all(routing, LeadRow)}
        assert (leads[repeat.subject].status, leads[repeat.subject].merged_into) == ("merged", original.subject)
        assert leads[original.subject].grade == "A"  # the hotter repeat raised it
        routed = sorted(a.lead_id for a in await _all(routing, AssignmentRow))
        assert routed == sorted([original.subject, other.subject])
        assert [e.type for e in await routing.events("lead.assigned", "lead.resubmitted")] == [
            "lead.assigned",
            "lead.resubmitted",
            "lead.assigned",
        ]


async def _waiting_for_lock(db: Database) -> int:
    async with db.read() as session:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        return int((await session.execute(text(query))).scalar_one())


async def _wait_until_waiting(db: Database, count: int) -> None:
    for _ in range(600):
        if await _waiting_for_lock(db) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} transaction(s) never waited for a lock")


async def test_team_locks_let_other_teams_decide_and_a_roster_change_waits_for_all(pg_database: str) -> None:
    async with routing_on(pg_database, Clock(T0), roster=TWO_TEAMS, rules=BY_COUNTRY) as routing:
        db = routing.db
        async with db.transaction() as holder:
            await lock_teams(holder, ["a"])

            async with db.transaction() as other_team:  # team b: not held up by team a's lock
                await lock_teams(other_team, ["b"])
                await other_team.execute(text("SELECT 1"))

            same_team_locked = asyncio.Event()

            async def same_team() -> None:
                async with db.transaction() as session:
                    await lock_teams(session, ["b", "a"])
                    same_team_locked.set()

            async def roster_change() -> None:
                async with db.transaction() as session:
                    await lock(session)

            waiting = [asyncio.create_task(same_team()), asyncio.create_task(roster_change())]
            await _wait_until_waiting(db, 2)
            assert not same_team_locked.is_set()
        await asyncio.gather(*waiting)  # both go on once team a's holder commits
        assert same_team_locked.is_set()


CAPPED_A = TWO_TEAMS.replace("team: a, hours: always}", "team: a, hours: always, max_open: 2}")  # a1, a2
OVERFLOW = """
fallback_team: b
rules:
  - id: all
    action: {team: a, method: round_robin, fallback: {team: b, method: round_robin}}
"""


async def test_a_full_team_overflows_mid_batch_to_a_team_locked_then_with_its_state_read_again(
    database_url: str,
) -> None:
    """Team a fills after four leads: the rest of the batch goes to its fallback team b, whose lock (PostgreSQL)
    is taken mid-batch; the decisions after it still see each other's rotation and loads."""
    async with routing_on(database_url, Clock(T0), roster=CAPPED_A, rules=OVERFLOW) as routing:
        events = [scored(grade="B", country="FR") for _ in range(10)]
        await route_batch(routing, events)

        assignments = await _all(routing, AssignmentRow)
        assert [a.lead_id for a in sorted(assignments, key=lambda a: a.id)] == [e.subject for e in events]
        by_rep = Counter(a.rep_id for a in assignments)
        assert by_rep == {"a1": 2, "a2": 2, "b1": 3, "b2": 3}
        loads = {row.rep_id: row.open_leads for row in await _all(routing, RepLoadRow)}
        assert loads == {"a1": 2, "a2": 2, "b1": 3, "b2": 3}
        assert [e.data["team_id"] for e in await routing.events("lead.assigned")] == ["a"] * 4 + ["b"] * 6
