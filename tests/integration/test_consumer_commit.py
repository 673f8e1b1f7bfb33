"""The COMMIT ending a poll's transaction on SQLite (common.db): awaited at the driver, before anything learns of it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import String, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import Database, on_commit

pytestmark = pytest.mark.integration


class _Base(DeclarativeBase):
    pass


class _Note(_Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(20))


async def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'commit.db'}")
    async with db.transaction() as session:
        await session.run_sync(lambda sync: _Base.metadata.create_all(sync.connection()))
        await session.execute(text("CREATE TABLE leads (id INTEGER PRIMARY KEY)"))
        # Checked at COMMIT: the one way to make SQLite's COMMIT itself fail, and leave its transaction open.
        await session.execute(
            text("CREATE TABLE marks (id INTEGER REFERENCES leads (id) DEFERRABLE INITIALLY DEFERRED)")
        )
    return db


def _stored(tmp_path: Path, sql: str) -> list[tuple[int, ...]]:
    other = sqlite3.connect(tmp_path / "commit.db")
    try:
        return other.execute(sql).fetchall()
    finally:
        other.close()


async def test_callbacks_run_once_the_commit_is_on_disk_and_not_for_a_commit_that_failed(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    seen: list[object] = []
    db.on_commit(lambda _session: seen.append(("listener", _stored(tmp_path, "SELECT id FROM leads"))))
    try:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO leads (id) VALUES (1)"))
            on_commit(session, lambda: seen.append(("callback", _stored(tmp_path, "SELECT id FROM leads"))))
        # Another connection already reads the row when they run: they came after SQLite's COMMIT.
        assert seen == [("callback", [(1,)]), ("listener", [(1,)])]

        seen.clear()
        with pytest.raises(IntegrityError):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO leads (id) VALUES (2)"))
                await session.execute(text("INSERT INTO marks (id) VALUES (99)"))  # no such lead
                on_commit(session, lambda: seen.append("callback"))
        assert seen == [], "nothing learns of a transaction whose COMMIT failed"
        assert _stored(tmp_path, "SELECT id FROM leads") == [(1,)], "its effects were rolled back"

        other = sqlite3.connect(tmp_path / "commit.db", timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # at once: the failed COMMIT left no write lock behind
            other.execute("ROLLBACK")
        finally:
            other.close()
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO leads (id) VALUES (3)"))
        assert _stored(tmp_path, "SELECT id FROM leads ORDER BY id") == [(1,), (3,)]
    finally:
        await db.dispose()


async def test_a_session_with_orm_changes_to_flush_commits_them_and_one_without_statements_commits_nothing(
    tmp_path: Path,
) -> None:
    db = await _db(tmp_path)
    committed: list[int] = []
    db.on_commit(lambda _session: committed.append(1))
    try:
        async with db.transaction() as session:
            session.add(_Note(id=1, text="flushed at commit"))
        async with db.transaction() as session:
            pass
        async with db.read() as session:
            assert (await session.execute(select(_Note.text))).scalars().all() == ["flushed at commit"]
        assert committed == [1, 1]
        async with db.transaction() as session:  # the kept connection is still good for the next unit of work
            await session.execute(text("INSERT INTO leads (id) VALUES (4)"))
            transaction = session.sync_session.get_transaction()
            await session.connection()
            assert session.sync_session.get_transaction() is transaction
        assert _stored(tmp_path, "SELECT id FROM leads") == [(4,)]
    finally:
        await db.dispose()
