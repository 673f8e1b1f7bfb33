"""Database setup: one async engine per service, transactions owned by the entrypoint (migrations: db_schema)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, MetaData, event, pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.util import await_
from sqlalchemy.util.concurrency import in_greenlet

from common import sqlprep
from common.db_commit import Committer, WriterAsyncSession, WriterSession, commit_at_driver
from common.db_types import UtcDateTime as UtcDateTime
from common.db_types import as_utc as as_utc
from common.db_types import json_column_dumps, json_column_loads
from common.db_types import sqlite_time as sqlite_time
from common.db_types import sqlite_time_text as sqlite_time_text
from common.db_wal import WalCheckpointer

log = structlog.get_logger(__name__)

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


# session.info key: callbacks to run once the session's current transaction commits.
_ON_COMMIT = "common.on_commit"


def on_commit(session: AsyncSession | Session, callback: Callable[[], None]) -> None:
    """Run `callback()` once the session's transaction commits; dropped if it rolls back.

    For effects that must not happen for a unit of work that did not persist (metrics counts, wake-ups). One
    listener on every Session runs them, so any session works, whoever opened it.
    """
    session.info.setdefault(_ON_COMMIT, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    for callback in session.info.pop(_ON_COMMIT, ()):
        try:
            callback()
        except Exception:  # the data is committed: a failed side effect must not turn that into an error
            log.exception("on_commit_callback_failed")


@event.listens_for(Session, "after_rollback")
def _drop_on_commit(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)


class _Cursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:
        """AsyncSession calls this on async drivers' cursors; rows here are read synchronously, so: nothing."""


class _Connection(sqlite3.Connection):
    # True while a transaction begun at the driver (common.db_commit.WriterSession.driver) is not SQLAlchemy's.
    at_driver = False

    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    """SQLite for the async engine without a thread hop per call: statements run on the event loop's thread.

    aiosqlite sends every cursor call (cursor, execute, fetch, close) to a worker thread and back, four event-loop
    wake-ups per statement, which cost more than the statement itself on a local file. Here only COMMIT, the one
    call that waits for the disk (fsync), goes to a thread, so the loop keeps serving while it waits. Writers never
    wait on each other inside SQLite: Database queues them on an asyncio lock, and WAL readers do not block.
    """

    driver = sqlprep.INLINE_SQLITE  # how common.sqlprep knows it
    is_async = True
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._committer = Committer()  # one dialect per engine

    def create_connect_args(self, url: URL) -> Any:
        args, kwargs = super().create_connect_args(url)
        kwargs["check_same_thread"] = False  # COMMIT runs in a worker thread, never concurrently with anything
        kwargs["factory"] = _Connection
        return args, kwargs

    def do_commit(self, dbapi_connection: Any) -> None:
        if not dbapi_connection.in_transaction:
            return  # committed at the driver already (Database.transaction), or nothing began: sqlite3 would do nothing
        if in_greenlet():
            await_(self._committer.run(dbapi_connection.commit))
        else:  # a session committed outside AsyncSession's greenlet (none of ours with an open transaction): inline
            dbapi_connection.commit()


registry.register("sqlite.handoff", __name__, "InlineSQLiteDialect")


def _engine_url(url: str) -> str:
    """SQLite URLs (any driver) run on the inline dialect; everything else as given."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+handoff").render_as_string(hide_password=False)
    return url


class Database:
    """The engine and session factory of one service, built in the lifespan and disposed on shutdown."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        echo: bool = False,
        sqlite_busy_timeout_s: float = 5.0,
        pg_statement_timeout_s: float | None = 15.0,
        pg_lock_timeout_s: float | None = 5.0,
        pool_size: int = 10,
        sqlite_checkpoint_pages: int = 1000,
        sqlite_wal_restart_pages: int = 4000,
    ) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        # Bound parameters are personal data (names, emails): never in an error's text, a log line or a header.
        kwargs: dict[str, Any] = {
            "echo": echo,
            "hide_parameters": True,
            "json_serializer": json_column_dumps,
            "json_deserializer": json_column_loads,
        }
        if self.is_sqlite:
            ensure_sqlite_folder(url)
            kwargs["connect_args"] = {"timeout": sqlite_busy_timeout_s}
        else:
            kwargs.update(
                pool_size=pool_size,
                max_overflow=10,
                pool_pre_ping=True,
                pool_recycle=1800,
            )
            server_settings = {}
            if pg_statement_timeout_s:
                server_settings["statement_timeout"] = str(int(pg_statement_timeout_s * 1000))
            if pg_lock_timeout_s:
                server_settings["lock_timeout"] = str(int(pg_lock_timeout_s * 1000))
            if server_settings and make_url(url).get_driver_name() == "asyncpg":
                kwargs["connect_args"] = {"server_settings": server_settings}
        self.engine: AsyncEngine = create_async_engine(_engine_url(url), **kwargs)
        self.read_engine = self.engine
        # SQLite's WAL checkpoint in a thread of its own instead of inside a writer's COMMIT (common.db_wal).
        self.checkpointer: WalCheckpointer | None = None
        self._committer: Committer | None = None
        if self.is_sqlite:
            self._committer = self.engine.sync_engine.dialect._committer  # type: ignore[attr-defined]
            busy_ms = int(sqlite_busy_timeout_s * 1000)
            database = make_url(url).database
            if database and database != ":memory:" and not database.startswith("file:"):
                self.checkpointer = WalCheckpointer(
                    database,
                    synchronous=sqlite_synchronous,
                    busy_ms=busy_ms,
                    wake_pages=sqlite_checkpoint_pages,
                    restart_pages=sqlite_wal_restart_pages,
                )
                dialect: Any = self.engine.sync_engine.dialect
                dialect._committer.after = self.checkpointer.committed
            _configure_sqlite(
                self.engine,
                sqlite_synchronous,
                begin="BEGIN IMMEDIATE",
                busy_ms=busy_ms,
                checkpointer=self.checkpointer,
            )
            # Readers get their own engine with deferred transactions: on WAL they never wait for the writer. Its pool
            # keeps `pool_size` connections (the requests served at once): past the pool, a connection is opened
            # and closed per checkout, which costs more than the query it serves.
            self.read_engine = create_async_engine(
                _engine_url(url), pool_size=pool_size, max_overflow=pool_size, **kwargs
            )
            _configure_sqlite(self.read_engine, sqlite_synchronous, begin="BEGIN", busy_ms=busy_ms)
        self.sessions = async_sessionmaker(
            self.engine,
            class_=WriterAsyncSession,
            expire_on_commit=False,
            autoflush=False,
            sync_session_class=WriterSession,
        )
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False, autoflush=False)
        # SQLite has one writer at a time; queueing writers here keeps them off SQLite's sleeping busy handler.
        self._sqlite_writer = asyncio.Lock() if self.is_sqlite else None
        self._kept: AsyncConnection | None = None  # SQLite's write connection, kept (`_kept_connection`)
        self._kept_sync: Connection | None = None  # its sync Connection and sqlite3 connection
        self._kept_raw: Any = None
        self._after_commit: list[Callable[[AsyncSession], None]] = []

    def _begin_at_driver(self, raw: Any) -> None:
        """BEGIN IMMEDIATE on the kept sqlite3 connection as the engine's begin hook runs it, for a transaction begun
        at the driver (common.db_commit.WriterSession.driver)."""
        _begin_sqlite(raw, "BEGIN IMMEDIATE", self.checkpointer, self.engine.sync_engine.dialect)
        raw.at_driver = True

    def on_commit(self, callback: Callable[[AsyncSession], None]) -> None:
        """Run `callback(session)` after every successful commit of this database, for a listener that lives as
        long as the service (the outbox relay's wake-up); one transaction's own effects use `on_commit(session)`."""
        self._after_commit.append(callback)

    def writer_lock(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Held by each write transaction: SQLite has one writer, so its writers take turns here rather than spin on
        the file's lock (PostgreSQL's writers need none). A writer that keeps its own connection takes it too."""
        return self._sqlite_writer or contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        lock = self.writer_lock()
        async with lock:
            session = self.sessions()
            if self.is_sqlite:
                sync = session.sync_session
                sync.kept = await self._kept_connection()
                sync.kept_raw, sync.begin_kept = self._kept_raw, self._begin_at_driver
            try:
                # Begun on the sync session: creating the transaction does no I/O (the connection and its BEGIN
                # come with the first statement), where AsyncSession.begin() cost a greenlet switch per transaction.
                # Begun here, not at the first statement, so that get_transaction() names this transaction from the
                # start (per-transaction caches key on it). Committed or rolled back as begin()'s block would.
                session.sync_session.begin()
                try:
                    yield session
                    if self._committer is not None:
                        await commit_at_driver(session, self._committer)
                    else:
                        await session.commit()
                except BaseException:
                    await session.rollback()
                    raise
                self.committed(session)
            finally:
                await _close(session)
                if self._kept is not None and self._kept_clean() is None:
                    await self._drop_kept()  # now, not at the next unit of work: it may hold the write lock

    async def _kept_connection(self) -> Connection:
        """The connection SQLite's write transactions take turns on (under the writer lock), kept for the Database's
        life: a pool checkout and checkin per transaction cost ~30-50 us of the loop's CPU."""
        sync = self._kept_clean()
        if sync is None:
            await self._drop_kept()
            kept = self._kept = await self.engine.connect()
            assert kept.sync_connection is not None
            sync = self._kept_sync = kept.sync_connection
            self._kept_raw = sync.connection.driver_connection
        return sync

    def _kept_clean(self) -> Connection | None:
        """The kept connection if a unit of work can begin on it: not invalidated by SQLAlchemy (a statement it took
        for a lost connection), in no transaction of SQLAlchemy's (a unit of work whose end was cancelled) nor of
        SQLite's (a COMMIT that failed: it would hold the file's write lock). A session must never join one."""
        kept, sync = self._kept, self._kept_sync
        if kept is None or sync is None or sync.invalidated or sync.closed or sync.in_transaction():
            return None
        # The sqlite3 connection read once per kept connection (SQLAlchemy's proxies cost ~10 us a read, twice a
        # transaction): a connection that is neither invalidated nor closed still holds the one it was made with.
        return sync if not self._kept_raw.in_transaction else None

    async def _drop_kept(self) -> None:
        """Let go of the kept connection: back to the pool, whose reset rolls back what SQLite still holds open (and
        with it the write lock). One still in SQLAlchemy's transaction stays with the session ending it."""
        kept, self._kept = self._kept, None
        self._kept_sync = self._kept_raw = None
        if kept is not None and not kept.in_transaction():
            with contextlib.suppress(Exception):
                await kept.close()

    def committed(self, session: Any) -> None:
        """The `on_commit` listeners, told of a transaction that committed (`session`, or what stands in for one: a
        writer that commits on a connection of its own calls this too)."""
        for callback in self._after_commit:
            callback(session)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session; on SQLite's WAL it never waits for the writer."""
        async with self.read_sessions() as session:
            yield session

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.read() as session:
            await session.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.close)  # waits for a checkpoint it may be running
        await self._drop_kept()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


async def _close(session: AsyncSession) -> None:
    """Close a session whose transaction block has ended. AsyncSession's own exit runs its close in a task of its
    own (shielded from a cancellation), a task and a turn of the event loop per transaction; once the transaction
    has committed or rolled back the session holds no connection and its close does no I/O, so it is done at once.
    A session still in a transaction (its block could not end it) is closed the shielded way."""
    if session.sync_session.get_transaction() is None:
        session.sync_session.close()
    else:
        await session.__aexit__(None, None, None)


def ensure_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(
    engine: AsyncEngine,
    synchronous: str,
    *,
    begin: str,
    busy_ms: int,
    checkpointer: WalCheckpointer | None = None,
) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if checkpointer is not None:  # the checkpointer's thread copies the WAL, not this connection's COMMITs
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()
        dbapi_connection.inline_checkpoint = False

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        raw = conn.connection.driver_connection
        if raw.at_driver:  # begun at the driver (common.db_commit.WriterSession.driver): SQLAlchemy's joins it
            raw.at_driver = False
            if raw.in_transaction:
                return
        _begin_sqlite(raw, begin, checkpointer, conn.dialect)


def _begin_sqlite(raw: Any, begin: str, checkpointer: WalCheckpointer | None, dialect: Any) -> None:
    """BEGIN on a sqlite3 connection, for SQLAlchemy's transactions (the engine's begin hook) and those begun at the
    driver. For writers, IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
    can fail with SQLITE_BUSY_SNAPSHOT instead of waiting when another connection committed in between.
    At the driver: exec_driver_sql's execution context and result cost several times SQLite's BEGIN, once per
    transaction (a consumer's poll, a request). Its error is SQLAlchemy's, as exec_driver_sql raised it."""
    try:
        if checkpointer is not None and raw.inline_checkpoint is not (overgrown := checkpointer.overgrown):
            # A long WAL: SQLite's own checkpoint in the COMMIT again, until the WAL starts over (db_wal).
            raw.execute(f"PRAGMA wal_autocheckpoint={checkpointer.wake_pages if overgrown else 0}")
            raw.inline_checkpoint = overgrown
        raw.execute(begin)
    except sqlite3.Error as exc:
        raise sqlprep.wrap_sqlite_error(exc, begin, dialect) from exc
