"""SQLite's WAL checkpoint in its own thread (common.db_wal): the WAL stays bounded, commits stay durable."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import Database
from common.db_wal import WalCheckpointer
from common.sqlprep_session import session_driver

pytestmark = pytest.mark.integration

ROW = "INSERT INTO items (id, body) VALUES (:id, randomblob(3000))"  # a leaf page and an overflow page a row


def wal_pages(path: Path) -> int:
    """Frames the WAL file has room for: its high-water mark, what it costs on disk."""
    wal = Path(f"{path}-wal")
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    return max(wal.stat().st_size - 32, 0) // (page + 24) if wal.exists() else 0


def checkpoint_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "sqlite-checkpoint"]


async def autocheckpoint(session: AsyncSession) -> int:
    """The writer connection's own wal_autocheckpoint: 0 while the thread checkpoints."""
    _connection, _dialect, raw = await session_driver(session)
    return int(raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


async def new_database(path: Path, **kwargs: int) -> Database:
    db = Database(f"sqlite:///{path}", **kwargs)  # type: ignore[arg-type]
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body BLOB)"))
    return db


async def test_the_wal_stays_bounded_under_sustained_writes_with_a_reader_holding_a_snapshot_part_of_the_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bounded.db"
    db = await new_database(path, sqlite_checkpoint_pages=50, sqlite_wal_restart_pages=200)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        for i in range(1500):
            if i % 500 == 100:  # a long read: no checkpoint can copy past its snapshot, nor the WAL start over
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM items").fetchone()
            elif i % 500 == 200:
                reader.execute("COMMIT")
            async with db.transaction() as session:
                await session.execute(text(ROW), {"id": i})
        assert db.checkpointer is not None and db.checkpointer.checkpoints > 0  # the thread copied pages
        # ~3 frames a commit: 4,500 written, yet the file holds the bound and the 100 commits of a pinned snapshot
        assert wal_pages(path) <= 200 + 100 * 4 + 50
        async with db.read() as session:
            assert (await session.execute(text("SELECT count(*) FROM items"))).scalar_one() == 1500
    finally:
        reader.close()
        await db.dispose()


async def test_writers_leave_the_checkpoint_to_the_thread_until_the_wal_must_start_over(tmp_path: Path) -> None:
    path = tmp_path / "inline.db"
    db = await new_database(path, sqlite_checkpoint_pages=1000, sqlite_wal_restart_pages=4000)
    try:
        async with db.transaction() as session:
            assert await autocheckpoint(session) == 0
        assert db.checkpointer is not None
        db.checkpointer.overgrown = True  # what the commit thread says past restart_pages
        async with db.transaction() as session:
            assert await autocheckpoint(session) == 1000
    finally:
        await db.dispose()


async def test_the_checkpointer_stops_with_the_database(tmp_path: Path) -> None:
    db = await new_database(tmp_path / "stops.db", sqlite_checkpoint_pages=20, sqlite_wal_restart_pages=10_000)
    for i in range(60):
        async with db.transaction() as session:
            await session.execute(text(ROW), {"id": i})
    assert db.checkpointer is not None
    for _ in range(200):  # woken by a commit thread: give it the moment to start
        if db.checkpointer.checkpoints:
            break
        await asyncio.sleep(0.01)
    assert db.checkpointer.checkpoints > 0 and checkpoint_threads()
    await db.dispose()
    assert checkpoint_threads() == []
    db.checkpointer.wake()  # a commit thread's late wake-up after dispose starts nothing
    assert checkpoint_threads() == []


async def test_two_databases_on_one_file_share_the_wal(tmp_path: Path) -> None:
    """Ingest's two workers: each process has its own checkpointer on the same file."""
    path = tmp_path / "shared.db"
    first = await new_database(path, sqlite_checkpoint_pages=50, sqlite_wal_restart_pages=200)
    second = await new_database(path, sqlite_checkpoint_pages=50, sqlite_wal_restart_pages=200)
    try:
        for i in range(800):
            async with (first if i % 2 else second).transaction() as session:
                await session.execute(text(ROW), {"id": i})
        assert wal_pages(path) <= 200 + 50 * 4
        async with second.read() as session:
            assert (await session.execute(text("SELECT count(*) FROM items"))).scalar_one() == 800
    finally:
        await first.dispose()
        await second.dispose()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy import text
    from common.db import Database

    async def main() -> None:
        db = Database("sqlite:///" + sys.argv[1], sqlite_checkpoint_pages=30, sqlite_wal_restart_pages=120)
        async with db.transaction() as session:
            await session.execute(text("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body BLOB)"))
        for i in range(1_000_000):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO items (id, body) VALUES (:id, randomblob(3000))"), {"id": i})
            print(i, flush=True)  # acknowledged: committed

    asyncio.run(main())
    """
)


async def test_every_acknowledged_row_is_there_after_a_kill_9_mid_stream_and_the_next_process_works(
    tmp_path: Path,
) -> None:
    path = tmp_path / "killed.db"
    process = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acknowledged: list[int] = []
    try:
        assert process.stdout is not None
        while len(acknowledged) < 600:  # several checkpoints and WAL restarts in, then killed mid-stream
            line = await asyncio.to_thread(process.stdout.readline)
            assert line, "the writer ended early"
            acknowledged.append(int(line))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert acknowledged == list(range(len(acknowledged)))
    db = await new_database(path, sqlite_checkpoint_pages=30, sqlite_wal_restart_pages=120)
    try:
        async with db.read() as session:
            stored = set((await session.execute(text("SELECT id FROM items"))).scalars().all())
        assert set(acknowledged) <= stored
        for i in range(1_000_000, 1_000_300):
            async with db.transaction() as session:
                await session.execute(text(ROW), {"id": i})
        assert wal_pages(path) <= 120 + 30 * 4 + 50  # the killed process kept the same bound
        async with db.read() as session:
            count = (await session.execute(text("SELECT count(*) FROM items"))).scalar_one()
        assert count == len(stored) + 300
    finally:
        await db.dispose()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_postgresql_has_no_checkpointer(pg_database: str) -> None:
    db = Database(pg_database)
    try:
        assert db.checkpointer is None
    finally:
        await db.dispose()


def test_without_a_readable_wal_index_writers_keep_sqlites_own_checkpoint(tmp_path: Path) -> None:
    checkpointer = WalCheckpointer(str(tmp_path / "none.db"), synchronous="FULL", busy_ms=1000)
    checkpointer.committed()
    assert checkpointer.overgrown
    assert checkpoint_threads() == []
    os.close(os.open(tmp_path / "none.db-shm", os.O_CREAT | os.O_WRONLY))  # empty: not a wal-index either
    checkpointer.committed()
    assert checkpointer.overgrown
    checkpointer.close()


def test_a_commit_thread_reading_the_wal_index_while_the_database_closes_never_fails_nor_reopens_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "closing.db"
    with sqlite3.connect(path) as conn:  # a live wal-index to read
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        keep = sqlite3.connect(path)
        keep.execute("SELECT * FROM t").fetchall()
    for _ in range(50):
        checkpointer = WalCheckpointer(str(path), synchronous="FULL", busy_ms=1000)
        assert checkpointer.wal_frames() is not None
        failures: list[BaseException] = []

        def read(checkpointer: WalCheckpointer = checkpointer, failures: list[BaseException] = failures) -> None:
            try:
                for _ in range(2_000):
                    checkpointer.committed()
            except BaseException as exc:  # what the commit thread would have hit
                failures.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        checkpointer.close()
        reader.join()
        assert failures == []
        assert checkpointer.wal_frames() is None  # closed: the wal-index is not opened again
        assert checkpointer._shm is None
    keep.close()
