"""The group-commit writer's transaction on SQLite without an ORM session: one connection held for the writer's life.

Why: per batch, an AsyncSession (its construction, the pool's checkout and reset, the session transaction's state
machine, the close) cost the event loop ~0.25-0.35 ms, more than the batch's own statements. Here a batch is a Core
transaction on a connection the writer keeps (BEGIN IMMEDIATE through the engine's begin hook, COMMIT through the
dialect's commit thread, so the engine's events and SQLite's settings stay those of every other writer), its hot
statements (the repeat look-up, the row inserts) go straight to sqlite3 through common.sqlprep, and the rare ones
(Idempotency-Keys, platform ids) through Core on the same connection.

The outbox rows are written by common.outbox.add_events in the same transaction, given `BatchTransaction`, which
offers what it and the metrics helpers ask of a session (`info`, `sync_session.bind`, `connection()`, `execute()`);
once the transaction commits, the Session lifecycle listeners (the per-transaction on-commit callbacks, the outbox's
hand-off to the relay and its claimed deletes) and the database's own `on_commit` listeners run on it as they would
on a session, and on a rollback the Session's listeners for that.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import Connection, Dialect, Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from common import sqlprep
from common.db import Database, sqlite_time_text
from ingest.store.repository import (
    EARLIER_LEAD,
    EXTERNAL_LEADS,
    SIGHTINGS_SQLITE,
    earliest_sightings,
    external_lead_params,
    leads_by_key,
)
from ingest.store.tables import Base, IdempotencyRecord, IdentityRow, Lead, LeadIdentity, LeadRow

_KEYS = select(
    IdempotencyRecord.scope_key,
    IdempotencyRecord.request_hash,
    IdempotencyRecord.status_code,
    IdempotencyRecord.response,
    IdempotencyRecord.created_at,
).where(IdempotencyRecord.scope_key.in_(bindparam("keys", expanding=True)))
_DROP_KEYS = delete(IdempotencyRecord).where(IdempotencyRecord.scope_key.in_(bindparam("keys", expanding=True)))


# Core on the held connection through run_sync: the inline dialect never awaits inside a statement, which
# AsyncConnection.execute insists on (AwaitRequired); one greenlet switch either way.
def _execute(connection: Connection, statement: Any, params: Any) -> Any:
    return connection.execute(statement, params)


def _fetch(connection: Connection, statement: Any, params: Any) -> list[Any]:
    return list(connection.execute(statement, params).all())


_PLAIN: weakref.WeakKeyDictionary[Any, SQLCompiler | None] = weakref.WeakKeyDictionary()


def _plain_dml(statement: Any, dialect: Dialect) -> SQLCompiler | None:
    """The statement compiled for the inline SQLite dialect when it is a DELETE or UPDATE without RETURNING whose
    binds need no conversion (so its expanded values go to sqlite3 as they are); None for anything else."""
    try:
        return _PLAIN[statement]
    except (KeyError, TypeError):
        pass
    compiled = None
    if getattr(statement, "is_delete", False) or getattr(statement, "is_update", False):
        candidate = statement.compile(dialect=dialect)
        plain = all(b.type.bind_processor(dialect) is None for b in candidate.binds.values())
        if candidate.positional and not candidate.effective_returning and plain:
            compiled = candidate
    with contextlib.suppress(TypeError):
        _PLAIN[statement] = compiled
    return compiled


def _insert_sql(dialect: Dialect, model: type[Base], columns: tuple[str, ...]) -> str:
    """The INSERT of `columns` (in that order, every other column its default: none here), as common.sqlprep plans
    it; refuses a plan whose values would not be the row's own (constants, or binds in another order)."""
    table: Table = model.__table__  # type: ignore[assignment]
    plan = sqlprep.insert_plan(dialect, table, columns)
    if plan is None or plan.names != columns or plan.constants:
        raise RuntimeError(f"{table.name}: no plain insert of {columns}")
    return plan.sql


class _Outermost:
    parent = None  # what the listeners of `after_transaction_end` look at: this was no savepoint


class BatchTransaction:
    """One writer transaction: the questions `accept_batch` asks, and what common.outbox.add_events and the metrics
    helpers ask of a session."""

    def __init__(self, connection: AsyncConnection, raw: Any, bind: Any) -> None:
        self._connection = connection
        self._raw = raw  # the sqlite3 connection under `connection`
        self._dialect = connection.dialect
        self.info: dict[str, Any] = {}
        # common.outbox finds its relay by the engine; common.sqlprep_session keys its per-transaction driver look-up
        # by get_transaction(): this batch is that transaction.
        self.sync_session = SimpleNamespace(bind=bind, get_transaction=lambda: self)
        self.session = self  # what accept_batch hands to add_events and the metrics

    async def connection(self) -> AsyncConnection:
        return self._connection

    async def execute(self, statement: Any, params: Any = None) -> Any:
        """A statement in this transaction; a DELETE or UPDATE whose values need no conversion (the outbox's delete
        of published seqs, each batch) straight to sqlite3: Core's execution cost several times SQLite's delete."""
        compiled = _plain_dml(statement, self._dialect)
        if compiled is None or not isinstance(params, dict | None):
            return await self._connection.run_sync(_execute, statement, params)
        state = compiled.construct_expanded_state(params or {})
        values = state.positional_parameters
        touched = sqlprep.run_sqlite(self._raw, self._dialect, state.statement, values, False, False)
        return SimpleNamespace(rowcount=touched)

    async def _rows(self, statement: Any, params: Any) -> list[Any]:
        return await self._connection.run_sync(_fetch, statement, params)

    async def idempotency_many(self, scope_keys: Collection[str]) -> dict[str, Any]:
        if not scope_keys:
            return {}
        rows = await self._rows(_KEYS, {"keys": list(scope_keys)})
        return {row.scope_key: row for row in rows}

    async def drop_idempotency(self, scope_keys: Collection[str]) -> None:
        if scope_keys:
            await self.execute(_DROP_KEYS, {"keys": list(scope_keys)})

    async def leads_by_external_ids(
        self, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str | None, bool]]:
        if not keys:
            return {}
        rows = await self._rows(EXTERNAL_LEADS, external_lead_params(keys))
        return leads_by_key(rows, keys)

    async def first_leads_for(self, identities: Collection[str], since: datetime) -> dict[str, tuple[datetime, str]]:
        if not identities:
            return {}
        compiled = SIGHTINGS_SQLITE.compiled(self._dialect)
        params = compiled.params({"identities": orjson.dumps(list(identities)).decode(), "since": since})
        return earliest_sightings(sqlprep.run_sqlite(self._raw, self._dialect, compiled.sql, params, False, True))

    async def earlier_lead_for(self, identities: list[str], since: datetime) -> str | None:
        if not identities:
            return None
        rows = await self._rows(EARLIER_LEAD, {"identities": identities, "since": since})
        return rows[0][0] if rows else None

    async def insert_leads(self, leads: Sequence[LeadRow], identities: Sequence[IdentityRow]) -> None:
        """New leads and their identities, an executemany each, their values as sqlite3 takes them built here (the
        values common.sqlprep's column processors give: a test holds the two to the same rows), each time's text
        once per lead."""
        raw, dialect = self._raw, self._dialect
        texts: dict[datetime, str] = {}
        if leads:
            rows = []
            for lead_id, source_id, kind, external_id, is_test, duplicate_of, data, received_at, cid in leads:
                at = texts.get(received_at)
                if at is None:
                    at = texts[received_at] = sqlite_time_text(received_at)
                rows.append((lead_id, source_id, kind, external_id, 1 if is_test else 0, duplicate_of, data, at, cid))
            sqlprep.run_sqlite(raw, dialect, _insert_sql(dialect, Lead, LeadRow._fields), rows, True, False)
        if identities:
            seen = []
            for identity in identities:
                at = texts.get(identity.seen_at)
                if at is None:
                    at = texts[identity.seen_at] = sqlite_time_text(identity.seen_at)
                seen.append((identity.identity, identity.lead_id, at))
            sql = _insert_sql(dialect, LeadIdentity, IdentityRow._fields)
            sqlprep.run_sqlite(raw, dialect, sql, seen, True, False)

    async def insert_rows(self, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        table: Table = model.__table__  # type: ignore[assignment]
        plan = sqlprep.insert_plan(self._dialect, table, tuple(rows[0]))
        if plan is None:  # a column left out has a computed default: Core applies it
            await self._connection.run_sync(sqlprep.insert_many, table, rows)
            return
        sqlprep.run_sqlite(self._raw, self._dialect, plan.sql, plan.rows(rows), True, False)


class SQLiteBatches:
    """The writer's transactions on one held connection of `db`'s (inline SQLite) engine, queued with every other
    writer of the database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._connection: AsyncConnection | None = None
        self._raw: Any = None
        self._events = Session()  # the Session lifecycle listeners, run on each BatchTransaction

    @staticmethod
    def fits(db: Any) -> bool:
        """Whether `db` is a Database on common.db's inline SQLite dialect (statements at sqlite3 on the loop)."""
        return isinstance(db, Database) and db.is_sqlite and sqlprep.is_inline_sqlite(db.engine.dialect)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[BatchTransaction]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        # Database queues SQLite's writers on this lock (see common.db.Database.transaction): a BEGIN IMMEDIATE
        # while another writer holds the file would wait in SQLite's busy handler on the event loop's thread.
        async with self._db.writer_lock():
            connection = await self._connect()
            try:
                transaction = await connection.begin()  # BEGIN IMMEDIATE (common.db's begin hook)
            except BaseException:
                await self.close()  # a BEGIN that failed (the file locked past the busy wait): start afresh
                raise
            batch = BatchTransaction(connection, self._raw, self._db.engine.sync_engine)
            try:
                yield batch
                await transaction.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                self._events.dispatch.after_rollback(batch)
                self._events.dispatch.after_transaction_end(batch, _Outermost())
                await self._drop_if_broken(connection)
                raise
            self._events.dispatch.after_commit(batch)
            self._events.dispatch.after_transaction_end(batch, _Outermost())
            self._db.committed(batch)  # the database's own listeners, as its transactions run them

    async def close(self) -> None:
        connection, self._connection, self._raw = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _connect(self) -> AsyncConnection:
        if self._connection is None:
            connection = await self._db.engine.connect()
            self._raw = (await connection.get_raw_connection()).driver_connection
            self._connection = connection
        return self._connection

    async def _drop_if_broken(self, connection: AsyncConnection) -> None:
        # A connection left inside a transaction (its rollback failed) or invalidated is not used again.
        if connection.invalidated or connection.in_transaction() or self._raw.in_transaction:
            await self.close()
