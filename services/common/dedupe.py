"""The consumers' dedupe record: one mark per applied event id, written in the transaction of the event's effects."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Column, Insert, MetaData, String, Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import UtcDateTime, sqlite_time_text
from common.envelope import Event
from common.sqlprep_session import sqlite_rows


def processed_table(metadata: MetaData) -> Table:
    """Ids of events whose effects are committed: the consumer's dedupe record, written in the effect's transaction."""
    return Table(
        "processed_events",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("event_type", String(64), nullable=False),
        # Indexed for the retention purge, which deletes the oldest marks in batches.
        Column("processed_at", UtcDateTime, nullable=False, index=True),
    )


async def mark_processed(session: AsyncSession, table: Table, events: Sequence[Event]) -> set[str]:
    """Write the marks of `events` in one statement; returns the ids that had none (the events to apply now).

    INSERT ... ON CONFLICT DO NOTHING RETURNING answers with exactly the rows it inserted, on SQLite and on
    PostgreSQL; a mark another transaction holds uncommitted makes this one wait for it (PostgreSQL) or cannot
    exist (SQLite has one writer), so an id is never applied twice. `events` must not repeat an id.
    """
    if not events:
        return set()
    now = datetime.now(UTC)
    if len(events) == 1:  # a one-lead poll: its text at the inline SQLite driver (None on any other dialect)
        event = events[0]
        found = await sqlite_rows(session, _marks_sql(table.name, 1), (event.id, event.type, sqlite_time_text(now)))
        if found is not None:
            return {row[0] for row in found}
    # In id order, so two consumers inserting overlapping polls (a rebalance's redelivery) lock in the same order.
    ordered = sorted(events, key=_id)
    # A poll's marks as multi-row INSERTs of up to _SQLITE_ROWS at the inline SQLite driver (Core's executemany of a
    # poll past them cost ~5 us more an event, found at scoring's polls of 500).
    at = sqlite_time_text(now)
    fresh: set[str] = set()
    for start in range(0, len(ordered), _SQLITE_ROWS):
        chunk = ordered[start : start + _SQLITE_ROWS]
        params = [value for e in chunk for value in (e.id, e.type, at)]
        found = await sqlite_rows(session, _marks_sql(table.name, len(chunk)), params)
        if found is None:  # not the inline SQLite driver: Core's statement below
            break
        fresh.update(row[0] for row in found)
    else:
        return fresh
    statement = _marks(table, session.get_bind().dialect.name)
    # An executemany: SQLAlchemy sends it as one multi-row INSERT per 1,000 rows ("insertmanyvalues"), compiled once.
    rows = [{"event_id": e.id, "event_type": e.type, "processed_at": now} for e in ordered]
    result = await session.execute(statement, rows)
    return set(result.scalars())


@functools.lru_cache(maxsize=16)
def _marks(table: Table, dialect_name: str) -> Insert:
    """The marks' INSERT, built once per table and dialect: building it per call cost more than SQLite's insert of
    one mark (found in scoring's one-lead poll profile)."""
    insert = pg_insert if dialect_name == "postgresql" else sqlite_insert
    return insert(table).on_conflict_do_nothing(index_elements=[table.c.event_id]).returning(table.c.event_id)


# Marks per statement at the SQLite driver: three values each, under the 999 host parameters of SQLite before 3.32.
_SQLITE_ROWS = 300


@functools.lru_cache(maxsize=64)
def _marks_sql(table: str, n: int) -> str:
    """The SQLite text of `_marks` for n rows: Core's executemany of it costs ~0.3 ms a poll before SQLite's work."""
    # The table's name comes from the service's own metadata; every value is a parameter.
    values = ", ".join(["(?, ?, ?)"] * n)
    insert = f"INSERT INTO {table} (event_id, event_type, processed_at) VALUES {values} "  # noqa: S608
    return insert + "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"


def _id(event: Event) -> str:
    return event.id


async def purge_processed(session: AsyncSession, table: Table, before: datetime, limit: int) -> int:
    """Delete up to `limit` dedupe marks older than `before`; returns how many went.

    Safe once `before` is older than anything the topics still hold: an event can only be redelivered while its
    record is in the topic, so a mark older than the topics' retention dedupes nothing."""
    oldest = select(table.c.event_id).where(table.c.processed_at < before).limit(limit)
    result = await session.execute(delete(table).where(table.c.event_id.in_(oldest.scalar_subquery())))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
