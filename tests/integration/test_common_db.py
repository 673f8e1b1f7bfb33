"""The shared database chassis on SQLite and PostgreSQL: UTC columns read back aware, after-commit hooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, Table, select

from common.db import Database, UtcDateTime, new_metadata, on_commit
from common.metrics import after_commit

pytestmark = pytest.mark.integration

_metadata = new_metadata()
_moments = Table(
    "moments", _metadata, Column("id", Integer, primary_key=True), Column("at", UtcDateTime, nullable=True)
)


@pytest.fixture
async def db(database_url: str) -> Database:
    database = Database(database_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)  # a test table of the column type itself, not a service schema
    yield database  # type: ignore[misc]
    await database.dispose()


async def test_utc_columns_come_back_aware_in_utc_whatever_zone_was_written(db: Database) -> None:
    written = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
    in_paris = written.astimezone(timezone(timedelta(hours=2)))
    async with db.transaction() as session:
        await session.execute(
            _moments.insert(),
            [
                {"id": 1, "at": written},
                {"id": 2, "at": in_paris},
                {"id": 3, "at": written.replace(tzinfo=None)},
                {"id": 4, "at": None},
            ],
        )
    async with db.read() as session:
        rows = dict((await session.execute(select(_moments.c.id, _moments.c.at))).tuples().all())
        # A comparison binds through the same type: an aware bound finds the rows on SQLite's stored text too.
        later = await session.execute(select(_moments.c.id).where(_moments.c.at < written + timedelta(seconds=1)))
        found = sorted(later.scalars().all())

    assert rows[4] is None
    for key in (1, 2, 3):
        value = rows[key]
        assert value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert value == written
    assert found == [1, 2, 3]


async def test_after_commit_hooks_run_once_on_commit_and_never_for_a_rollback(db: Database) -> None:
    ran: list[str] = []
    async with db.transaction() as session:
        on_commit(session, lambda: ran.append("committed"))
        after_commit(session, lambda: ran.append("counted"))  # the metrics helper is the same hook
        assert ran == []
    assert ran == ["committed", "counted"]

    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            on_commit(session, lambda: ran.append("rolled back"))
            raise RuntimeError("the unit of work fails")
    async with db.transaction() as session:
        on_commit(session, lambda: ran.append("next"))
    assert ran == ["committed", "counted", "next"]


async def test_a_transaction_block_names_one_transaction_from_its_start_to_its_end(db: Database) -> None:
    """Per-transaction caches (routing's locks, the driver connection) key on get_transaction(): it must name the
    block's transaction before its first statement as after it, and a new block a new one."""
    seen = []
    for _ in range(2):
        async with db.transaction() as session:
            before = session.sync_session.get_transaction()
            await session.execute(select(1))
            after = session.sync_session.get_transaction()
            assert before is not None and before is after
            seen.append(before)
    assert seen[0] is not seen[1]
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await session.execute(select(1))
            raise RuntimeError("rolled back")
    assert session.sync_session.get_transaction() is None  # ended, and the session closed
