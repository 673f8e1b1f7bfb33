"""The rows add_events hands to its relay at commit are the rows the relay would read back from the table: same
seq, values and types (SQLite writes them through the driver, PostgreSQL through Core)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError

from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event, dumps
from common.outbox import OutboxRelay, _row_columns, add_events
from common.outbox_deletes import HANDED
from routing.app import MIGRATIONS
from routing.store import Base, outbox
from tests.integration.test_outbox_pipelining import _FakeProducer, _settings

pytestmark = [pytest.mark.integration]


async def test_handed_rows_are_the_rows_the_relay_reads_back(database_url: str) -> None:
    db = Database(database_url)
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    settings = _settings()
    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=lambda: _FakeProducer([], [], set()))
    events = [
        Event(type="thing.happened", source="/tests", subject=f"lead-{i}", data={"n": i, "é": 1}) for i in range(3)
    ]
    handed: list[Any] = []
    try:
        for batch in ([events[0]], events[1:]):  # one event, and several in one transaction
            async with db.transaction() as session:
                await add_events(session, outbox, settings, batch, lambda _e: "things.v1")
                assert session.info[HANDED][0] is relay
                handed.extend(session.info[HANDED][1])
        async with db.read() as session:
            statement = select(*_row_columns(outbox)).order_by(outbox.c.seq)  # the relay's read
            stored = (await session.execute(statement)).all()
    finally:
        await db.dispose()
    assert len(stored) == 3
    for mine, theirs in zip(handed, stored, strict=True):
        for name in ("seq", "event_id", "topic", "key", "headers", "value", "created_at"):
            assert getattr(mine, name) == getattr(theirs, name), name
            assert type(getattr(mine, name)) is type(getattr(theirs, name)), name
        assert mine.created_at.utcoffset() is not None
    assert [row.key for row in handed] == [b"lead-0", b"lead-1", b"lead-2"]


async def test_rows_and_kafka_headers_are_each_events_own_to_the_byte(database_url: str) -> None:
    """add_events builds a batch's headers from what its events share: the stored headers JSON, value and key, and
    the Kafka headers handed to the relay, are what each event's own methods give."""
    db = Database(database_url)
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    settings = _settings()
    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=lambda: _FakeProducer([], [], set()))
    now = datetime.now(UTC)
    events = [
        Event(
            type=("lead.scored", "lead.assigned")[i % 2],
            source="/handoff/scoring",
            subject=f"lead-{i}-Zoë" if i % 3 else f'lead-"{i}"',
            data={"n": i, "é": "✓", "at": now},
            time=now if i < 4 else datetime.now(UTC),
            correlation_id=f"corr-{i}" if i % 2 else None,
        )
        for i in range(7)
    ]
    try:
        async with db.transaction() as session:
            await add_events(session, outbox, settings, events, lambda e: e.type)
            handed = list(session.info[HANDED][1])
        async with db.read() as session:
            stored = (await session.execute(select(*_row_columns(outbox)).order_by(outbox.c.seq))).all()
    finally:
        await db.dispose()
    assert relay is not None
    expected = [
        (event.id, settings.topic(event.type), event.key(), dumps(event.header_texts()).decode(), event.value())
        for event in events
    ]
    assert [(r.event_id, r.topic, r.key, r.headers, r.value) for r in stored] == expected
    assert [(r.event_id, r.topic, r.key, r.headers, r.value) for r in handed] == expected
    assert [row.kafka_headers for row in handed] == [event.headers() for event in events]


async def test_seqs_handed_over_after_the_newest_rows_were_deleted_are_the_stored_ones(database_url: str) -> None:
    """On SQLite the seqs are given by the writer (the highest + 1 on), as SQLite would choose them: also once the
    rows holding the highest seqs are gone (published and deleted), and when the table is empty."""
    db = Database(database_url)
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    settings = _settings()
    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=lambda: _FakeProducer([], [], set()))

    def events(n: int) -> list[Event]:
        return [Event(type="thing.happened", source="/tests", subject=f"lead-{i}", data={}) for i in range(n)]

    handed: list[Any] = []
    try:
        for batch, delete_after in ((events(4), 2), (events(3), 0), (events(2), None)):
            async with db.transaction() as session:
                await add_events(session, outbox, settings, batch, lambda _e: "things.v1")
                assert session.info[HANDED][0] is relay
                handed.extend(session.info[HANDED][1])
            if delete_after is not None:  # the newest rows go (all of them for 0)
                async with db.transaction() as session:
                    newest = sorted(row.seq for row in handed)[delete_after:]
                    await session.execute(delete(outbox).where(outbox.c.seq.in_(newest)))
                handed = [row for row in handed if row.seq not in newest]
        async with db.read() as session:
            stored = (await session.execute(select(outbox.c.seq, outbox.c.event_id).order_by(outbox.c.seq))).all()
    finally:
        await db.dispose()
    assert [(row.seq, row.event_id) for row in handed] == [tuple(row) for row in stored]
    assert len(stored) == 2


async def test_a_failed_insert_surfaces_as_sqlalchemys_error(database_url: str) -> None:
    db = Database(database_url)  # no schema: the outbox table is missing
    settings = _settings()
    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=lambda: _FakeProducer([], [], set()))
    event = Event(type="thing.happened", source="/tests", subject="lead-0", data={})
    try:
        with pytest.raises(DBAPIError, match="outbox"):
            async with db.transaction() as session:
                await add_events(session, outbox, settings, [event], lambda _e: "things.v1")
    finally:
        await db.dispose()
    assert relay._handed == []
