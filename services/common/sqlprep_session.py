"""common.sqlprep inside an AsyncSession's transaction: the session's connection (and, on the inline SQLite dialect,
its sqlite3 connection) asked of SQLAlchemy once per transaction, so a store's driver-level statements cost no
greenlet switch on SQLite. The statements themselves are declared with common.sqlprep.

Why a module of its own: sqlprep is the synchronous mechanism (compile once, values as tuples, run on a Connection);
this is how an async store reaches it, and keeping the two apart keeps each under the project's 400 lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Dialect, Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from common.db_commit import WriterSession
from common.sqlprep import INLINE_SQLITE, Statement, insert_many, insert_plan, run_sqlite

_T = TypeVar("_T")


async def in_one_hop(session: AsyncSession, work: Callable[[Connection], _T]) -> _T:
    """`work(connection)` on the session's connection, in its transaction: one greenlet switch for all it runs."""
    return await session.run_sync(lambda sync: work(cast(Session, sync).connection()))


# session.info key: (transaction, connection, dialect, sqlite3 connection or None)
_DRIVER = "common.sqlprep_session.driver"


class _JoinedOnUse(AsyncConnection):
    """The kept connection as `session_driver` answers for a transaction begun at the driver: SQLAlchemy's
    transaction on it (RootTransaction, events) is begun by the session only when something asks for the Connection
    (`sync_connection`, and through it everything else), so a caller that runs its statements on the sqlite3
    connection alone (the outbox's rows) costs none of it."""

    __slots__ = ("_joined", "_session")

    def __init__(self, session: AsyncSession, kept: Connection) -> None:  # not AsyncConnection's: no proxy registered
        self.engine = AsyncEngine._retrieve_proxy_for_target(kept.engine)
        self.sync_engine = kept.engine
        self._session = session
        self._joined: Connection | None = None

    @property
    def sync_connection(self) -> Connection:  # type: ignore[override]
        if self._joined is None:  # the session's transaction takes SQLite's over (WriterSession._join_driver)
            self._joined = self._session.sync_session.connection()
        return self._joined


async def session_driver(session: AsyncSession) -> tuple[AsyncConnection, Dialect, Any]:
    """The session's connection, its dialect and, on the inline SQLite dialect, its sqlite3 connection (else None),
    for a statement run at the driver in the session's transaction; asked once per transaction and kept in the
    session's info with the transaction they belong to (a later transaction of the same session asks again). A write
    transaction on the Database's kept SQLite connection is begun at the driver if nothing began it yet
    (common.db_commit.WriterSession.driver), without SQLAlchemy's own transaction on the connection (its
    RootTransaction and events, ~20 us a transaction): the session joins it when a statement or its commit needs the
    connection. Any other session asks SQLAlchemy (one greenlet switch)."""
    sync = session.sync_session
    transaction = sync.get_transaction()
    found = session.info.get(_DRIVER)
    if found is not None and transaction is not None and found[0] is transaction:
        return found[1], found[2], found[3]
    if transaction is not None and isinstance(sync, WriterSession) and sync.kept_raw is not None:
        kept = sync.kept
        assert kept is not None
        connection: AsyncConnection = _JoinedOnUse(session, kept)
        dialect, raw = kept.dialect, sync.driver()
    else:
        connection = await session.connection()
        dialect = connection.dialect
        raw = None
        if dialect.driver == INLINE_SQLITE:
            # The session's connection is checked out by now: its driver connection is an attribute away, where
            # get_raw_connection() cost a greenlet switch of its own.
            sync_connection = connection.sync_connection
            assert sync_connection is not None
            raw = sync_connection.connection.driver_connection
    session.info[_DRIVER] = (sync.get_transaction(), connection, dialect, raw)
    return connection, dialect, raw


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """`insert_many` in the session's transaction (on the inline SQLite dialect with no greenlet switch)."""
    if not rows:
        return
    connection, dialect, raw = await session_driver(session)
    if raw is None:
        await connection.run_sync(insert_many, table, rows)
        return
    plan = insert_plan(dialect, table, tuple(rows[0]))
    if plan is None:
        await session.execute(insert(table), list(rows))
        return
    run_sqlite(raw, dialect, plan.sql, plan.rows(rows), True, False)


async def sqlite_rows(session: AsyncSession, sql: str, params: Sequence[Any]) -> list[Any] | None:
    """The rows of hand-written SQLite SQL in the session's transaction, straight from sqlite3 (values as SQLite
    holds them: times as text); None on any other dialect, where the caller runs its Core statement instead. For
    what Core cannot say as cheaply (an id list as one JSON array: `json_each(?)`); test such SQL on both stores."""
    _connection, dialect, raw = await session_driver(session)
    if raw is None:
        return None
    return cast(list[Any], run_sqlite(raw, dialect, sql, params, False, True))


async def sqlite_fetch(session: AsyncSession, statement: Statement, params: Mapping[str, Any]) -> list[Any] | None:
    """The rows of a Core statement written for SQLite (a JSON array of ids through `json_each`, where PostgreSQL
    runs an expanding IN), run at the inline SQLite driver without a greenlet switch; None on any other dialect,
    where the caller runs its own statement. Test such a pair on both stores."""
    _connection, dialect, raw = await session_driver(session)
    if raw is None:
        return None
    compiled = statement.compiled(dialect)
    return cast(list[Any], run_sqlite(raw, dialect, compiled.sql, compiled.params(params), False, True))
