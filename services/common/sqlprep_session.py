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
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from common.sqlprep import INLINE_SQLITE, Statement, insert_many, insert_plan, run_sqlite

_T = TypeVar("_T")


async def in_one_hop(session: AsyncSession, work: Callable[[Connection], _T]) -> _T:
    """`work(connection)` on the session's connection, in its transaction: one greenlet switch for all it runs."""
    return await session.run_sync(lambda sync: work(cast(Session, sync).connection()))


# session.info key: (transaction, connection, dialect, sqlite3 connection or None)
_DRIVER = "common.sqlprep_session.driver"


async def _raw(session: AsyncSession) -> tuple[AsyncConnection, Dialect, Any]:
    """The session's connection, its dialect and, on the inline SQLite dialect, its sqlite3 connection (else None),
    asked of SQLAlchemy once per transaction (one greenlet switch) and kept in the session's info with the
    transaction they belong to: a later transaction of the same session asks again."""
    transaction = session.sync_session.get_transaction()
    found = session.info.get(_DRIVER)
    if found is not None and transaction is not None and found[0] is transaction:
        return found[1], found[2], found[3]
    connection = await session.connection()
    dialect = connection.dialect
    raw = None
    if dialect.driver == INLINE_SQLITE:
        # The session's connection is checked out by now: its driver connection is an attribute away, where
        # get_raw_connection() cost a greenlet switch of its own.
        sync = connection.sync_connection
        assert sync is not None
        raw = sync.connection.driver_connection
    session.info[_DRIVER] = (session.sync_session.get_transaction(), connection, dialect, raw)
    return connection, dialect, raw


async def session_driver(session: AsyncSession) -> tuple[AsyncConnection, Dialect, Any]:
    """The session's connection, its dialect and, on the inline SQLite dialect, its sqlite3 connection (else None),
    for a statement run at the driver in the session's transaction (asked of SQLAlchemy once per transaction)."""
    return await _raw(session)


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """`insert_many` in the session's transaction (on the inline SQLite dialect with no greenlet switch)."""
    if not rows:
        return
    connection, dialect, raw = await _raw(session)
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
    _connection, dialect, raw = await _raw(session)
    if raw is None:
        return None
    return cast(list[Any], run_sqlite(raw, dialect, sql, params, False, True))


async def sqlite_fetch(session: AsyncSession, statement: Statement, params: Mapping[str, Any]) -> list[Any] | None:
    """The rows of a Core statement written for SQLite (a JSON array of ids through `json_each`, where PostgreSQL
    runs an expanding IN), run at the inline SQLite driver without a greenlet switch; None on any other dialect,
    where the caller runs its own statement. Test such a pair on both stores."""
    _connection, dialect, raw = await _raw(session)
    if raw is None:
        return None
    compiled = statement.compiled(dialect)
    return cast(list[Any], run_sqlite(raw, dialect, compiled.sql, compiled.params(params), False, True))
