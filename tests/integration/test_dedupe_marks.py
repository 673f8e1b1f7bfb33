"""The consumers' dedupe marks on both stores: a poll's marks in one go, answering which events are new."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData, func, select

from common.db import Database
from common.dedupe import mark_processed, processed_table
from common.envelope import Event

pytestmark = pytest.mark.integration

metadata = MetaData()
processed = processed_table(metadata)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def _events(n: int, kind: str = "lead.scored") -> list[Event]:
    return [Event(type=kind, source="/tests", subject=f"lead-{i}", data={}) for i in range(n)]


# 1: the one-event path; 40: a poll; 301 and 650: more than one SQLite statement holds (two and three of them).
@pytest.mark.parametrize("size", [1, 40, 301, 650])
async def test_a_polls_marks_answer_which_events_are_new_and_are_stored_once(db: Database, size: int) -> None:
    seen, fresh = _events(size), _events(size)
    async with db.transaction() as session:
        assert await mark_processed(session, processed, seen) == {e.id for e in seen}
    mixed = seen[: size // 2 + 1] + fresh  # a redelivered half beside new events
    async with db.transaction() as session:
        assert await mark_processed(session, processed, mixed) == {e.id for e in fresh}
    async with db.read() as session:
        rows = (
            await session.execute(select(processed.c.event_id, processed.c.event_type, processed.c.processed_at))
        ).all()
        assert await session.scalar(select(func.count()).select_from(processed)) == 2 * size
    assert {r.event_id for r in rows} == {e.id for e in seen + fresh}
    assert {r.event_type for r in rows} == {"lead.scored"}
    assert all(abs((r.processed_at - datetime.now(UTC)).total_seconds()) < 60 for r in rows), "stored as UTC times"


async def test_marks_written_in_a_transaction_that_rolls_back_are_not_kept(db: Database) -> None:
    events = _events(5)
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await mark_processed(session, processed, events)
            raise RuntimeError("the batch's effects failed")
    async with db.transaction() as session:
        assert await mark_processed(session, processed, events) == {e.id for e in events}
