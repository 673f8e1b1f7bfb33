"""A routing poll's reads (session 12): on SQLite the roster, rules and accounts held from the version last read
are confirmed by the version read with the batch's state, so another process's roster change is seen by the very
next poll (through the store, no time bound); the batch's questions in one statement answer what a statement each
answers; the assignment ids read, not bumped, stay distinct with a repeat's one-lead path in the same poll; the
rotation's rows are updated in place, and a team whose state dropped a rep has that rep's row removed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from sqlalchemy import select, text

from common.db import Database
from routing.handlers import Router
from routing.store import AssignmentRow, RotationRow, batch_state
from tests.support.routing import Clock, Routing, routing_on, routing_settings, scored

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
TEAM = """
teams:
  - {id: a, name: Team A, method: round_robin, hours: always}
reps:
  - {id: a1, name: A One, email: a1@example.com, team: a, hours: always}
  - {id: a2, name: A Two, email: a2@example.com, team: a, hours: always}
"""
NEW_TEAM = """
teams:
  - {id: a, name: Team A, method: round_robin, hours: always}
reps:
  - {id: a1, name: A One, email: a1@example.com, team: a, hours: always, status: left}
  - {id: a2, name: A Two, email: a2@example.com, team: a, hours: always, status: left}
  - {id: a3, name: A Three, email: a3@example.com, team: a, hours: always}
"""
RULES = """
fallback_team: a
rules:
  - id: everyone
    action: {team: a, method: round_robin}
"""


async def _poll(routing: Routing, *events: Any) -> None:
    async with routing.db.transaction() as session:
        await routing.router.on_scored_batch(session, list(events))


async def _rows(routing: Routing, model: type[Any]) -> list[Any]:
    async with routing.db.read() as session:
        return list((await session.execute(select(model))).scalars())


async def test_another_process_changing_the_roster_is_seen_by_the_next_poll(database_url: str) -> None:
    async with routing_on(database_url, Clock(T0), roster=TEAM, rules=RULES) as routing:
        first = scored()
        await _poll(routing, first)  # this router now holds the roster, rules and accounts of this version
        await _poll(routing, scored())
        assert {(r.team_id, r.rep_id) for r in await _rows(routing, RotationRow)} == {("a", "a1"), ("a", "a2")}

        other_db = Database(database_url)  # another routing process on the same store
        try:
            other = Router(routing_settings(database_url), clock=Clock(T0))
            async with other_db.transaction() as session:
                await other.replace_roster(session, yaml.safe_load(NEW_TEAM))
        finally:
            await other_db.dispose()

        late = scored()
        await _poll(routing, late)
        assignments = {a.lead_id: a for a in await _rows(routing, AssignmentRow)}
        assert assignments[late.subject].rep_id == "a3"
        assert assignments[first.subject].rep_id in ("a1", "a2")
        # The rotation dropped the reps who left: their rows go, the new rep's row is there.
        assert {(r.team_id, r.rep_id) for r in await _rows(routing, RotationRow)} == {("a", "a3")}


async def test_rotation_rows_are_updated_in_place_as_the_state_moves(database_url: str) -> None:
    async with routing_on(database_url, Clock(T0), roster=TEAM, rules=RULES) as routing:
        for _ in range(5):
            await _poll(routing, scored(), scored(), scored())
        reps = [a.rep_id for a in sorted(await _rows(routing, AssignmentRow), key=lambda a: a.id)]
        assert reps == ["a1", "a2"] * 7 + ["a1"]  # round robin across polls, as before
        rows = {(r.team_id, r.rep_id): r.current for r in await _rows(routing, RotationRow)}
        assert rows == {("a", "a1"): -1, ("a", "a2"): 1}  # nginx's counters after 15 picks over two reps


async def test_ids_read_not_bumped_stay_distinct_with_a_repeat_in_the_same_poll(database_url: str) -> None:
    async with routing_on(database_url, Clock(T0), roster=TEAM, rules=RULES) as routing:
        one, two, three = scored(), scored(), scored()
        repeat = scored(duplicate_of=one.subject)
        await _poll(routing, one, repeat, two, three)  # a batch, the one-lead path, a batch: one transaction
        await _poll(routing, scored(), scored())
        ids = [a.id for a in await _rows(routing, AssignmentRow)]
        assert len(ids) == len(set(ids)) >= 5


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_one_statement_read_answers_as_a_statement_each(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with routing_on(database_url, Clock(T0), roster=TEAM, rules=RULES) as routing:
        routed = [scored() for _ in range(3)]
        await _poll(routing, *routed)
        async with routing.db.transaction() as session:
            await session.execute(
                text("INSERT INTO erased_leads (lead_id, erased_at) VALUES ('gone', :at)"), {"at": T0}
            )
            await session.execute(text("INSERT INTO rep_worked_counts (rep_id, shard, worked) VALUES ('a1', 0, 2)"))
        asked = [routed[0].subject, routed[2].subject, "gone", "new-1", "new-2"]

        async def read(one: bool, **flags: bool) -> batch_state.BatchState:
            monkeypatch.setattr(batch_state, "_ONE_READ", 64 if one else -1)
            async with routing.db.transaction() as session:
                return await session.run_sync(
                    lambda sync: batch_state.read_batch(sync.connection(), lead_ids=asked, **flags)
                )

        for flags in (
            {"state": True, "worked": True, "version": True},
            {"state": True, "worked": False, "version": False},
            {"state": False, "worked": False, "version": True},
        ):
            together, each = await read(True, **flags), await read(False, **flags)
            assert together == each
        assert together.routed == {routed[0].subject, routed[2].subject} and together.erased == {"gone"}
        assert len(together.ids) == 3 and together.version is not None and together.version > 0
        full = await read(True, state=True, worked=True, version=True)
        assert full.worked == {"a1": 2} and full.loads is not None and set(full.loads) == {"a1", "a2"}
