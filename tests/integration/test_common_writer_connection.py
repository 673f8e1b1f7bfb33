"""SQLite's write transactions on one kept connection (common.db): what stores see of a session is unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from common.db import Database

pytestmark = pytest.mark.integration


async def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'kept.db'}")
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY)"))
    return db


def _pool(db: Database) -> Any:
    return db.engine.sync_engine.pool  # a QueuePool: it counts its checked-out connections


async def _driver_connection(session: object) -> object:
    connection = await session.connection()  # type: ignore[attr-defined]
    return connection.sync_connection.connection.driver_connection


async def test_write_transactions_share_one_connection_and_sessions_stay_bound_to_the_engine(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    try:
        seen = []
        for i in range(3):
            async with db.transaction() as session:
                assert isinstance(session.sync_session.bind, Engine)  # the outbox and stores key their state on it
                assert session.get_bind() is db.engine.sync_engine
                await session.execute(text("INSERT INTO items (id) VALUES (:id)"), {"id": i})
                seen.append(await _driver_connection(session))
        assert seen[0] is seen[1] is seen[2]
        assert _pool(db).checkedout() == 1  # the kept one, not one per transaction
        async with db.read() as session:
            assert (await session.execute(text("SELECT count(*) FROM items"))).scalar_one() == 3
    finally:
        await db.dispose()
    assert _pool(db).checkedout() == 0


async def test_a_rolled_back_transaction_leaves_the_kept_connection_clean(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    try:
        with pytest.raises(RuntimeError):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO items (id) VALUES (1)"))
                raise RuntimeError("the unit of work fails")
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO items (id) VALUES (2)"))
        async with db.read() as session:
            assert (await session.execute(text("SELECT id FROM items"))).scalars().all() == [2]
    finally:
        await db.dispose()


async def test_an_invalidated_connection_is_replaced(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    try:
        async with db.transaction() as session:
            before = await _driver_connection(session)
            await session.execute(text("INSERT INTO items (id) VALUES (1)"))
        assert db._kept is not None
        await db._kept.invalidate()  # what SQLAlchemy does to a connection it takes for lost
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO items (id) VALUES (2)"))
            assert await _driver_connection(session) is not before
        async with db.read() as session:
            assert (await session.execute(text("SELECT count(*) FROM items"))).scalar_one() == 2
    finally:
        await db.dispose()


async def test_a_connection_sqlite_left_in_a_transaction_is_cleaned_before_the_next_unit_of_work(
    tmp_path: Path,
) -> None:
    """The pool's reset rolls back what SQLite held open: BEGIN IMMEDIATE on it would fail, every time after."""
    db = await _db(tmp_path)
    try:
        async with db.transaction() as session:
            before = await _driver_connection(session)
        before.execute("BEGIN")  # type: ignore[attr-defined]  # a transaction SQLAlchemy knows nothing of
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO items (id) VALUES (1)"))
        async with db.read() as session:
            assert (await session.execute(text("SELECT id FROM items"))).scalars().all() == [1]
    finally:
        await db.dispose()


async def test_a_failed_commit_leaves_no_write_lock_behind(tmp_path: Path) -> None:
    """Another writer (ingest's held connection, another process) must not wait for the failed one's lock."""
    db = await _db(tmp_path)
    engine = db.engine.sync_engine

    def refuse(_connection: Any) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(engine, "commit", refuse)
    try:
        with pytest.raises(OperationalError):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO items (id) VALUES (1)"))
    finally:
        event.remove(engine, "commit", refuse)
    other = sqlite3.connect(tmp_path / "kept.db", timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # at once: nothing holds the file's write lock
        other.execute("ROLLBACK")
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO items (id) VALUES (2)"))
        async with db.read() as session:
            assert (await session.execute(text("SELECT id FROM items"))).scalars().all() == [2]
    finally:
        other.close()
        await db.dispose()
