"""On SQLite a firing batch's claim and clock facts go to the driver with the ids as one JSON array (Core statements
of their own in routing/store/timers.py, run by common.sqlprep); they must answer exactly as the Core statements
PostgreSQL runs: the same timers claimed once, the same marks, the same facts, times as aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from routing.store import RoutingRepository, SlaTimer
from routing.store.timers import _SQLITE_CLAIM, TimerRepository
from tests.support.routing import Clock, routing_on, scored

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


async def _core_only(self: TimerRepository, statement: str, params: object) -> None:
    return None  # as on PostgreSQL: the Core statements run


async def _claim_and_facts(url: str, monkeypatch: pytest.MonkeyPatch, *, core: bool) -> tuple[Any, ...]:
    clock = Clock(T0)
    async with routing_on(url, clock, sla_minutes={"A": 60, "B": 60}) as routing:
        for grade in ("A", "B", "A"):
            await routing.route(scored(grade=grade))
        async with routing.db.read() as session:
            ids = list((await session.execute(select(SlaTimer.id).order_by(SlaTimer.id))).scalars())
        now = clock.advance(minutes=61)
        driven: list[str] = []
        to_driver = TimerRepository._sqlite_rows

        async def spy(self: TimerRepository, statement: Any, params: Any) -> Any:
            rows = await to_driver(self, statement, params)
            driven.extend([] if rows is None else ["UPDATE" if statement is _SQLITE_CLAIM else "SELECT"])
            return rows

        monkeypatch.setattr(TimerRepository, "_sqlite_rows", _core_only if core else spy)
        async with routing.db.transaction() as session:
            repo = RoutingRepository(session)
            claimed = await repo.claim_timers([*ids, 999_999], now)  # an unknown id is no claim
            again = await repo.claim_timers(ids, now)  # claimed already: nothing
            facts = await repo.clock_facts({t.lead_id for t in claimed} | {"no-such-lead"})
        async with routing.db.read() as session:
            rows = (await session.execute(select(SlaTimer.id, SlaTimer.fired_at, SlaTimer.escalate_at))).all()
        monkeypatch.undo()
    assert driven == ([] if core else ["UPDATE", "UPDATE", "SELECT"])
    return claimed, again, facts, sorted(map(tuple, rows))


async def test_the_driver_claim_and_facts_answer_as_the_core_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await _claim_and_facts(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", monkeypatch, core=False)
    core = await _claim_and_facts(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", monkeypatch, core=True)

    claimed, again, facts, rows = driver
    assert len(claimed) == 6 and again == []  # a warning and a breach per lead, each claimed once
    assert [t.kind for t in claimed] == ["warning"] * 3 + ["breach"] * 3  # in due order
    assert all(t.due_at.tzinfo is UTC for t in claimed)
    assert len(facts) == 3 and all(f.sla_due_at is not None and f.sla_due_at.tzinfo is UTC for f in facts.values())
    now = T0 + timedelta(minutes=61)
    assert {(fired, mark) for _id, fired, mark in rows} == {(now, None), (now, now)}  # breaches marked

    # Both stores were filled the same way: the answers differ only in the random lead ids.
    def shape(answer: tuple[Any, ...]) -> object:
        claimed, again, facts, rows = answer
        return (
            [(t.id, t.assignment_id, t.kind, t.fraction, t.due_at) for t in claimed],
            again,
            sorted(f[1:] for f in facts.values()),
            rows,
        )

    assert shape(driver) == shape(core)
