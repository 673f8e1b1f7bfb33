"""A poll's transaction whose statements run at the SQLite driver (common.sqlprep_session): begun there, without
SQLAlchemy's transaction on the connection until something asks for it; committed, rolled back and joined as one."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from common.db import Database, on_commit
from common.sqlprep_session import session_driver, sqlite_rows
from tests.integration.test_consumer_commit import _Note

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'driver.db'}")
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE leads (id INTEGER PRIMARY KEY)"))
        await session.execute(
            text("CREATE TABLE marks (id INTEGER REFERENCES leads (id) DEFERRABLE INITIALLY DEFERRED)")
        )
    yield database
    await database.dispose()


async def _insert(session: Any, lead: int, table: str = "leads") -> list[Any] | None:
    return await sqlite_rows(session, f"INSERT INTO {table} (id) VALUES (?) RETURNING id", (lead,))


def _stored(tmp_path: Path) -> list[tuple[int, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "driver.db")) as other:
        return other.execute("SELECT id FROM leads ORDER BY id").fetchall()


def _no_write_lock(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "driver.db", timeout=0, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # at once: nothing holds SQLite's write lock
        other.execute("ROLLBACK")


async def test_driver_statements_commit_before_callbacks_and_without_sqlalchemys_transaction(
    db: Database, tmp_path: Path
) -> None:
    seen: list[object] = []
    db.on_commit(lambda _session: seen.append(("listener", _stored(tmp_path))))
    async with db.transaction() as session:
        assert await _insert(session, 1) == [(1,)]
        assert await sqlite_rows(session, "SELECT count(*) FROM leads", ()) == [(1,)]
        kept: Any = session.sync_session.kept  # type: ignore[attr-defined]
        assert not kept.in_transaction(), "SQLite's transaction begun at the driver, not through SQLAlchemy"
        assert _stored(tmp_path) == [], "not visible before the COMMIT"
        on_commit(session, lambda: seen.append(("callback", _stored(tmp_path))))
    assert seen == [("callback", [(1,)]), ("listener", [(1,)])]
    _no_write_lock(tmp_path)


async def test_a_block_that_raises_rolls_back_what_ran_at_the_driver(db: Database, tmp_path: Path) -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await _insert(session, 1)
            on_commit(session, lambda: seen.append("callback"))
            raise RuntimeError("handler failed")
    assert seen == []
    assert _stored(tmp_path) == []
    _no_write_lock(tmp_path)
    async with db.transaction() as session:  # the kept connection serves the next unit of work
        await _insert(session, 2)
    assert _stored(tmp_path) == [(2,)]


async def test_a_failed_commit_of_driver_statements_raises_and_leaves_nothing(db: Database, tmp_path: Path) -> None:
    seen: list[str] = []
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await _insert(session, 1)
            await _insert(session, 99, "marks")  # no such lead
            on_commit(session, lambda: seen.append("callback"))
    assert seen == [], "nothing learns of a transaction whose COMMIT failed"
    assert _stored(tmp_path) == []
    _no_write_lock(tmp_path)
    async with db.transaction() as session:
        await _insert(session, 3)
    assert _stored(tmp_path) == [(3,)]


async def test_sqlalchemy_statements_after_driver_ones_join_the_same_transaction(db: Database, tmp_path: Path) -> None:
    async with db.transaction() as session:
        await _insert(session, 1)
        await session.execute(text("INSERT INTO leads (id) VALUES (2)"))  # joins: no second BEGIN
        assert (await session.execute(text("SELECT count(*) FROM leads"))).scalar() == 2
        await _insert(session, 3)
    assert _stored(tmp_path) == [(1,), (2,), (3,)]

    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await _insert(session, 4)
            await session.execute(text("INSERT INTO leads (id) VALUES (5)"))
            raise RuntimeError("handler failed")
    assert _stored(tmp_path) == [(1,), (2,), (3,)], "both kinds rolled back together"
    _no_write_lock(tmp_path)


async def test_session_driver_connection_joins_when_used(db: Database, tmp_path: Path) -> None:
    async with db.transaction() as session:
        connection, _dialect, raw = await session_driver(session)
        raw.execute("INSERT INTO leads (id) VALUES (1)")
        kept: Any = session.sync_session.kept  # type: ignore[attr-defined]
        assert not kept.in_transaction()
        sync = connection.sync_connection  # what routing's stores run Core statements on
        assert sync is kept and kept.in_transaction()
        sync.execute(text("INSERT INTO leads (id) VALUES (2)"))
        again, _dialect, _raw = await session_driver(session)
        assert again.sync_connection is sync
        assert session.sync_session.get_transaction() is not None
    assert _stored(tmp_path) == [(1,), (2,)]
    assert not kept.in_transaction()
    _no_write_lock(tmp_path)


async def test_a_handlers_own_commit_and_rollback_reach_driver_statements(db: Database, tmp_path: Path) -> None:
    async with db.transaction() as session:
        await _insert(session, 1)
        await session.commit()
        assert _stored(tmp_path) == [(1,)], "the session's commit committed SQLite's transaction"
        await _insert(session, 2)
        await session.rollback()
        await _insert(session, 3)
    assert _stored(tmp_path) == [(1,), (3,)]
    _no_write_lock(tmp_path)


async def test_orm_flushes_and_savepoints_after_driver_statements_use_the_kept_connection(db: Database) -> None:
    async with db.transaction() as session:
        await session.run_sync(lambda sync: _Note.metadata.create_all(sync.connection()))
    async with db.transaction() as session:  # a flush right after a mark: on the kept connection, not the pool's
        await _insert(session, 1)
        session.add(_Note(id=1, text="first"))
        await session.flush()
        async with session.begin_nested():
            session.add(_Note(id=2, text="second"))
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await _insert(session, 2)
            async with session.begin_nested():  # a savepoint first thing after the mark
                session.add(_Note(id=3, text="third"))
            raise RuntimeError("handler failed")
    async with db.read() as session:
        assert (await session.execute(text("SELECT id FROM notes ORDER BY id"))).all() == [(1,), (2,)]
        assert (await session.execute(text("SELECT id FROM leads ORDER BY id"))).all() == [(1,)]
