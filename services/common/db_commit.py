"""SQLite's COMMIT (the wait for fsync) off the event loop, on one thread per engine (common.db's dialect), and the
write transactions' sessions on the Database's kept connection, which commit at the driver."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from common.sqlprep import wrap_sqlite_error

log = structlog.get_logger(__name__)


class Committer:
    """One thread that runs an engine's COMMITs (the wait for fsync) off the event loop: a queue put and one loop
    wake-up per commit, where the default executor (`asyncio.to_thread`) adds a work item, two chained futures and a
    context copy, about twice the loop's CPU per commit. An idle thread ends; the next commit starts another.

    One thread per engine is enough: its writers commit one at a time (Database queues them), and on WAL a COMMIT
    never waits for another connection's lock (the writer took it at BEGIN IMMEDIATE)."""

    IDLE_S = 30.0

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], None], asyncio.AbstractEventLoop, asyncio.Future[None]]]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False
        # Called on the commit thread after each COMMIT that succeeded, once its caller was told (common.db_wal's
        # look at the WAL's length): whatever it costs, no transaction waits for it.
        self.after: Callable[[], None] | None = None

    def run(self, call: Callable[[], None]) -> asyncio.Future[None]:
        """`call()` on the commit thread; the future settles on the caller's loop once it returned or raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._queue.put((call, loop, future))
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name="sqlite-commit", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            try:
                call, loop, future = self._queue.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            error: BaseException | None = None
            try:
                call()
            except BaseException as exc:  # handed to the waiting coroutine, raised there
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for this commit
                loop.call_soon_threadsafe(_settle, future, error)
            if error is None and self.after is not None:
                try:
                    self.after()
                except Exception:  # the commit stands; a failed look at the WAL must not end the commit thread
                    log.exception("after_commit_failed")


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class WriterSession(Session):
    """A Session whose transactions run on `kept`, the Database's kept SQLite write connection, when it has one. Its
    bind stays the Engine: stores and the outbox key their per-engine state on `session.bind` (a session bound to the
    connection itself would answer with the connection)."""

    kept: Connection | None = None
    # Its sqlite3 connection, and how a transaction begins on it at the driver (Database: BEGIN IMMEDIATE, as the
    # engine's begin hook runs it), for the statements common.sqlprep_session runs there.
    kept_raw: Any = None
    begin_kept: Callable[[Any], None] | None = None

    def driver(self) -> Any:
        """The kept sqlite3 connection, in a transaction: begun here at the driver if none is (SQLAlchemy's own
        transaction on the Connection, its RootTransaction and events, is left for a statement that needs it), for a
        transaction whose statements all run at the driver (a consumer's dedupe mark, common.sqlprep_session). The
        session joins it (`_join_driver`) as soon as anything asks SQLAlchemy for the connection. None without one."""
        raw = self.kept_raw
        if raw is not None and not raw.in_transaction:
            assert self.begin_kept is not None
            self.begin_kept(raw)
        return raw

    def _join_driver(self) -> None:
        """A transaction begun at the driver taken over by the session's: `connection()` begins SQLAlchemy's on the
        kept connection, whose begin hook finds SQLite's already begun (common.db) and runs no BEGIN of its own."""
        raw = self.kept_raw
        if raw is not None and raw.at_driver and raw.in_transaction:
            self.connection()

    def _end_driver(self) -> None:
        """A transaction begun at the driver and never joined, rolled back there (what SQLAlchemy's rollback of the
        connection would have run)."""
        raw = self.kept_raw
        if raw is not None and raw.at_driver:
            raw.at_driver = False
            if raw.in_transaction:
                try:
                    raw.rollback()
                except sqlite3.Error as exc:
                    assert self.kept is not None
                    raise wrap_sqlite_error(exc, "ROLLBACK", self.kept.dialect) from exc

    # The session's own commit reaches SQLite's transaction through its connection (joined first: ORM changes are
    # flushed on it, the connection's commit events run); its rollback and close roll SQLite's back.
    def commit(self) -> None:
        self._join_driver()
        super().commit()

    # A flush and a savepoint ask the session's transaction for a connection directly (not `_connection_for_bind`
    # below): joined first, or they would check another one out of the pool and wait for the kept one's lock.
    def flush(self, objects: Any = None) -> None:
        self._join_driver()
        super().flush(objects)

    def begin_nested(self) -> Any:
        self._join_driver()
        return super().begin_nested()

    def rollback(self) -> None:
        self._end_driver()
        super().rollback()

    def close(self) -> None:
        self._end_driver()
        super().close()

    def _connection_for_bind(self, engine: Any, execution_options: Any = None, **kw: Any) -> Connection:
        kept = self.kept
        if kept is not None and engine is kept.engine:
            engine = kept  # the session begins and ends its own transaction on it, as on a pooled one
        return super()._connection_for_bind(engine, execution_options, **kw)


class WriterAsyncSession(AsyncSession):
    """The write transactions' AsyncSession. On the kept SQLite connection `connection()` is answered without a
    greenlet: the inline dialect's BEGIN (everything but COMMIT) runs synchronously on the loop's thread anyway, so
    AsyncSession's greenlet switch there and back bought nothing (once a transaction: common.sqlprep_session asks
    for the connection to reach the driver)."""

    sync_session: WriterSession

    async def connection(self, bind_arguments: Any = None, execution_options: Any = None, **kw: Any) -> AsyncConnection:
        if self.sync_session.kept is None or bind_arguments is not None or execution_options is not None or kw:
            return await super().connection(bind_arguments, execution_options, **kw)
        return AsyncConnection._retrieve_proxy_for_target(self.sync_session.connection())


async def commit_at_driver(session: AsyncSession, committer: Committer) -> None:
    """Commit a write transaction on the kept SQLite connection: SQLite's COMMIT on the commit thread, awaited here,
    then the session's own commit (its events, the `on_commit` callbacks: after the COMMIT, as before), which finds
    SQLite's transaction ended and has nothing left to wait for. Saves AsyncSession.commit()'s greenlet and its
    switches around the wait, once a transaction. The usual AsyncSession.commit() for a session with ORM changes to
    flush (they go before the COMMIT) or listeners on the connection's commit (they run before it there)."""
    sync = session.sync_session
    kept = getattr(sync, "kept", None)
    if kept is None or kept.dispatch.commit or sync.new or sync.deleted or sync.dirty:
        await session.commit()
        return
    # SQLite's transaction: SQLAlchemy's on the connection, or one begun at the driver that it never joined.
    raw = getattr(sync, "kept_raw", None) or kept.connection.driver_connection
    if raw.in_transaction and (raw.at_driver or kept.in_transaction()):
        try:
            await committer.run(raw.commit)
        except sqlite3.Error as exc:  # as SQLAlchemy raises a failed COMMIT; the caller rolls back
            raise wrap_sqlite_error(exc, "COMMIT", kept.dialect) from exc
        raw.at_driver = False
    sync.commit()
