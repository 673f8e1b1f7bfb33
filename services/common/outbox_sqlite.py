"""The outbox's tables and rows, and their insert on the inline SQLite dialect.

The insert goes straight to the driver: SQLAlchemy's INSERT ... RETURNING through Core (parameter building, result
set-up, the rows' type processing) cost more than SQLite's insert of the rows.

The SQL is compiled once per table (a common.sqlprep Statement); the values come by column (`Columns`) and go as
tuples zipped in C, converted as the columns convert them (the blobs and texts as they are, created_at by
UtcDateTime's SQLite text). The rows go as one
executemany with their seqs given: the highest seq + 1 onwards, read first in the same transaction, which holds
SQLite's write lock (BEGIN IMMEDIATE), so no other writer can take one meanwhile. That is the seq SQLite would have
chosen itself (seq is the rowid, without AUTOINCREMENT: the highest + 1), and it is known without an INSERT ...
RETURNING per row (sqlite3's executemany cannot return rows, and a multi-row RETURNING's order is not one SQLite
promises): a row by row RETURNING cost ~4 us a row more. The rows handed back carry what was written, with the same
attributes as the rows the relay reads back."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import repeat
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    insert,
)
from sqlalchemy.engine import Dialect

from common import sqlprep
from common.db import InlineSQLiteDialect, UtcDateTime, sqlite_time_text
from common.envelope import Event, OutboxHeaders, dumps

_KEYS = ("event_id", "topic", "key", "headers", "value", "created_at")


class OutboxRow(NamedTuple):
    """An outbox row as written: read like a row of the relay's select (row.seq, row.topic, ...)."""

    seq: int
    event_id: str
    topic: str
    key: bytes | None
    headers: str
    value: bytes
    created_at: datetime
    # The Kafka headers `headers` holds as JSON, as the event gave them (rows read back from the table have none).
    kafka_headers: list[tuple[str, bytes]] | None = None


_new_row = functools.partial(tuple.__new__, OutboxRow)  # OutboxRow._make without its Python call


class Columns(NamedTuple):
    """A batch's outbox rows by column, in the events' order (every row of a call has the same created_at): the
    statement's tuples and the rows handed back are zipped from them in C, with no Python code a row."""

    event_ids: Sequence[str]
    topics: Sequence[str]
    keys: Sequence[bytes | None]
    headers: Sequence[str]
    values: Sequence[bytes]

    @classmethod
    def of(cls, events: Sequence[Event], topics: Sequence[str], headers: OutboxHeaders) -> Columns:
        """The rows of `events` (each value is the event's `value()`), given their topics and headers."""
        return cls([event.id for event in events], topics, headers.keys, headers.json, [dumps(e.data) for e in events])

    def rows(
        self, seqs: Iterable[int], created_at: datetime, kafka_headers: Sequence[list[tuple[str, bytes]]] | None
    ) -> list[OutboxRow]:
        """The rows written, given their seqs (and the Kafka headers each row's `headers` holds, if known)."""
        headers = kafka_headers if kafka_headers is not None else repeat(None)
        return list(map(_new_row, zip(seqs, *self, repeat(created_at), headers)))


def write_rows(
    raw: Any,
    dialect: Dialect,
    table: Table,
    columns: Columns,
    created_at: datetime,
    *,
    returning: bool,
    kafka_headers: Sequence[list[tuple[str, bytes]]] | None = None,
) -> list[OutboxRow]:
    """Write the rows through `raw`, the sqlite3 connection under the session's connection on the inline SQLite
    dialect (common.sqlprep_session.session_driver), in its transaction; the rows written (with their seq) when
    `returning`, else []. Errors are SQLAlchemy's DBAPIError, as for Core."""
    at = sqlite_time_text(created_at)
    statement = _insert(table, returning).compiled(dialect).sql
    count = len(columns.event_ids)
    try:
        if not returning:
            raw.executemany(statement, zip(*columns, repeat(at)))
            return []
        first = raw.execute(_highest_sql(table)).fetchone()[0] + 1
        seqs = range(first, first + count)
        raw.executemany(statement, zip(seqs, *columns, repeat(at)))
    except sqlite3.Error as exc:
        raise sqlprep.wrap_sqlite_error(exc, statement, dialect, many=count > 1) from exc
    return columns.rows(seqs, created_at, kafka_headers)


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table, declared on the service's own metadata so its migrations own it."""
    return Table(
        "outbox",
        metadata,
        # BigInteger on PostgreSQL, INTEGER PRIMARY KEY (the rowid) on SQLite: the publish order.
        Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("key", LargeBinary, nullable=True),
        Column("headers", Text, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
    )


def outbox_dead_table(metadata: MetaData) -> Table:
    """Outbox rows the broker refused for good (too large, topic unknown or forbidden), with the reason: parked here
    so later events keep flowing, until `handoff-outbox redrive` moves them back after a fix."""
    return Table(
        "outbox_dead",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("seq", BigInteger, nullable=False),  # its seq in the outbox, for the record
        Column("event_id", String(64), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("key", LargeBinary, nullable=True),
        Column("headers", Text, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("reason", String(64), nullable=False),
        Column("error", Text, nullable=False),
        Column("dead_at", UtcDateTime, nullable=False),
    )


_INSERTS: dict[tuple[Table, bool], sqlprep.Statement] = {}


def _insert(table: Table, with_seq: bool) -> sqlprep.Statement:
    """The outbox INSERT of this table (with its seq given, or SQLite's choice), declared once; its binds must be
    `_KEYS` in order (seq first when given), the values being handed over as they are (their types need no
    conversion on SQLite but created_at's, done)."""
    found = _INSERTS.get((table, with_seq))
    if found is None:
        keys = ("seq", *_KEYS) if with_seq else _KEYS

        def build(dialect: Dialect) -> Any:
            return insert(table).values({key: bindparam(key) for key in keys})

        found = _INSERTS[(table, with_seq)] = sqlprep.Statement(build)
        names = found.compiled(InlineSQLiteDialect()).names
        if names != keys:
            raise ValueError(f"outbox insert: unexpected bind order {names!r}")
    return found


def _highest_sql(table: Table) -> str:
    # The table's name comes from the service's own metadata; max() of the rowid is one look at the b-tree's end.
    return f"SELECT coalesce(max(seq), 0) FROM {table.name}"  # noqa: S608
