"""The consumer loop working a whole poll as one batch, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from common.consumer import ConsumerLoop
from common.db import Database
from common.dedupe import processed_table
from common.envelope import Event
from common.kafka import ensure_topics, new_producer, stop_quietly
from common.settings import ServiceSettings
from tests.support.stack import read_topic, wait_until_async

pytestmark = pytest.mark.integration

metadata = MetaData()
processed = processed_table(metadata)
# What the handlers under test do: one row per application, so an event applied twice shows as two rows.
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
)


def _settings(bootstrap: str = "127.0.0.1:1", namespace: str = "t.", **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "service_name": "batches",
        "env": "test",
        "kafka_bootstrap": bootstrap,
        "topic_namespace": namespace,
        "topic_partitions": 2,
        "consumer_max_attempts": 2,
        "consumer_retry_backoff_s": 0.01,
        "kafka_send_timeout_s": 3,
    }
    values.update(overrides)
    return ServiceSettings(**values)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def _event(subject: str, kind: str = "thing.happened", **kw: Any) -> Event:
    return Event(type=kind, source="/tests", subject=subject, data={"subject": subject}, **kw)


def _record(event: Event, partition: int, offset: int, topic: str = "t.things.v1") -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 0, 0, event.key(), event.value(), None, 0, 0, event.headers())


async def _write(session: AsyncSession, events: Sequence[Event], kind: str) -> None:
    await session.execute(insert(effects), [{"event_id": e.id, "subject": e.subject, "kind": kind} for e in events])


async def _applied(db: Database) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(select(effects.c.subject, func.count()).group_by(effects.c.subject))
        return {subject: int(n) for subject, n in rows}


class FakeConsumer:
    """The two calls the loop makes of a consumer after a poll; each commit notes what the database held then."""

    def __init__(self, db: Database, partitions: Sequence[TopicPartition]) -> None:
        self.db = db
        self.partitions = set(partitions)
        self.commits: list[tuple[dict[TopicPartition, int], dict[str, int]]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.partitions

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append((dict(offsets), await _applied(self.db)))


async def test_a_poll_is_deduped_in_one_go_applied_by_type_and_committed_once_before_its_offsets(
    db: Database,
) -> None:
    already = _event("old")
    async with db.transaction() as session:  # applied by an earlier poll: its mark is stored
        await session.execute(
            insert(processed), [{"event_id": already.id, "event_type": already.type, "processed_at": already.time}]
        )
    a, b, c = _event("a"), _event("b"), _event("c")
    note_a, note_b = _event("a", "note.added"), _event("b", "note.added")
    unknown = _event("x", "nobody.cares")
    batch_calls: list[list[str]] = []
    plain_calls: list[str] = []

    async def things(session: AsyncSession, events: Sequence[Event]) -> None:
        batch_calls.append([e.subject for e in events])
        await _write(session, events, "thing")

    async def note(session: AsyncSession, event: Event) -> None:
        plain_calls.append(event.subject)
        await _write(session, [event], "note")

    commits: list[int] = []
    db.on_commit(lambda _session: commits.append(1))
    loop = ConsumerLoop(
        settings=_settings(),
        db=db,
        processed=processed,
        topics=["things.v1"],
        handlers={"note.added": note},
        batch_handlers={"thing.happened": things},
    )
    p0, p1 = TopicPartition("t.things.v1", 0), TopicPartition("t.things.v1", 1)
    consumer = FakeConsumer(db, [p0, p1])
    polled = {
        p0: [_record(e, 0, n) for n, e in enumerate([a, note_a, already, a, unknown])],  # `a` twice: one id
        p1: [_record(e, 1, n + 10) for n, e in enumerate([b, note_b, c])],
    }
    await loop._process(consumer, polled)

    assert batch_calls == [["a", "b", "c"]], "one call with the poll's fresh events of the type, in order"
    assert plain_calls == ["a", "b"]
    assert await _applied(db) == {"a": 2, "b": 2, "c": 1}, "the duplicate and the known id were not applied"
    assert commits == [1], "one transaction for the whole poll"
    assert consumer.commits == [({p0: 5, p1: 13}, {"a": 2, "b": 2, "c": 1})], "offsets after the effects committed"
    async with db.read() as session:
        marks = set((await session.execute(select(processed.c.event_id))).scalars())
    assert marks == {already.id, a.id, b.id, c.id, note_a.id, note_b.id}, "the unknown type leaves no mark"


@pytest.mark.kafka
async def test_a_poison_event_is_isolated_and_dead_lettered_while_the_others_commit_once(
    db: Database, kafka_bootstrap: str, namespace: str
) -> None:
    settings = _settings(kafka_bootstrap, namespace)
    await ensure_topics(settings, ["things.v1", "deadletter.batches.v1"])
    calls: list[list[str]] = []

    async def things(session: AsyncSession, events: Sequence[Event]) -> None:
        calls.append([e.subject for e in events])
        await _write(session, events, "thing")  # the poison's batch writes, then fails: all of it rolls back
        if any(e.subject == "boom" for e in events):
            raise RuntimeError("this event can never be applied")

    loop = ConsumerLoop(
        settings=settings, db=db, processed=processed, topics=["things.v1"], batch_handlers={"thing.happened": things}
    )
    topic = settings.topic("things.v1")
    tp = TopicPartition(topic, 0)
    consumer = FakeConsumer(db, [tp])
    boom = _event("boom")
    events = [_event("a"), _event("b"), boom, _event("c")]
    try:
        await loop._process(consumer, {tp: [_record(e, 0, n, topic) for n, e in enumerate(events)]})
    finally:
        await stop_quietly(loop._dlq_producer)  # started by the dead-lettering; run() stops it on its way out

    assert calls == [["a", "b", "boom", "c"], ["a"], ["b"], ["boom"], ["boom"], ["c"]]
    assert await _applied(db) == {"a": 1, "b": 1, "c": 1}
    assert consumer.commits == [({tp: 4}, {"a": 1, "b": 1, "c": 1})]
    dead = await read_topic(kafka_bootstrap, settings.topic("deadletter.batches.v1"))
    assert [(Event.from_record(r.key, r.value, r.headers).id, dict(r.headers)["dlq_reason"]) for r in dead] == [
        (boom.id, b"handler_failed")
    ]
    async with db.read() as session:
        marked = set((await session.execute(select(processed.c.event_id))).scalars())
    assert boom.id not in marked and len(marked) == 3


async def test_one_subjects_events_keep_their_order_across_types(db: Database) -> None:
    order: list[str] = []

    async def received(session: AsyncSession, events: Sequence[Event]) -> None:
        order.extend(f"received:{e.subject}" for e in events)

    async def erased(session: AsyncSession, events: Sequence[Event]) -> None:
        order.extend(f"erased:{e.subject}" for e in events)

    loop = ConsumerLoop(
        settings=_settings(),
        db=db,
        processed=processed,
        topics=["things.v1"],
        batch_handlers={"lead.received": received, "lead.erased": erased},
    )
    tp = TopicPartition("t.things.v1", 0)
    # `2` is erased before it is received (the erasure overtook it): grouping by type alone would reverse them.
    events = [
        _event("1", "lead.received"),
        _event("2", "lead.erased"),
        _event("2", "lead.received"),
        _event("3", "lead.received"),
        _event("1", "lead.erased"),
    ]
    await loop._process(FakeConsumer(db, [tp]), {tp: [_record(e, 0, n) for n, e in enumerate(events)]})
    assert order == ["received:1", "erased:2", "received:2", "received:3", "erased:1"]


@pytest.mark.kafka
async def test_the_running_loop_applies_a_backlog_in_batches_once_each_and_commits_its_offsets(
    db: Database, kafka_bootstrap: str, namespace: str
) -> None:
    settings = _settings(kafka_bootstrap, namespace)
    await ensure_topics(settings, ["things.v1", "deadletter.batches.v1"])
    sizes: list[int] = []

    async def things(session: AsyncSession, events: Sequence[Event]) -> None:
        sizes.append(len(events))
        await _write(session, events, "thing")
        if any(e.subject == "boom" for e in events):
            raise RuntimeError("poison")

    topic = settings.topic("things.v1")
    events = [_event(f"lead-{n}") for n in range(40)]
    events[7] = _event("boom")
    producer = new_producer(settings)
    await producer.start()
    try:
        for event in [*events, events[3]]:  # events[3] again: a redelivery with the same id
            await producer.send(topic, event.value(), key=event.key(), headers=event.headers())
        await producer.flush()
    finally:
        await producer.stop()

    loop = ConsumerLoop(
        settings=settings, db=db, processed=processed, topics=["things.v1"], batch_handlers={"thing.happened": things}
    )
    assert loop.owned_partitions(topic) is None  # not running: partition-owned work (SLA timers) takes everything
    task = asyncio.create_task(loop.run())
    try:
        await wait_until_async(lambda: _total(db, 39), timeout=30, what="every good event applied")
        await wait_until_async(lambda: loop.running and loop.lag == 0, timeout=30, what="caught up")
        # The only member of its group holds every partition of the topic (what routing's timer engine reads).
        held = loop.owned_partitions(topic)
        assert held is not None and held[1] >= 1 and held[0] == frozenset(range(held[1]))
    finally:
        await loop.stop()
        await task
    assert set((await _applied(db)).values()) == {1} and "boom" not in await _applied(db)
    assert max(sizes) > 1, "the loop hands the handler more than one event at a time"
    dead = await read_topic(kafka_bootstrap, settings.topic("deadletter.batches.v1"))
    assert [Event.from_record(r.key, r.value, r.headers).subject for r in dead] == ["boom"]

    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=settings.consumer_group)
    await probe.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (probe.partitions_for_topic(topic) or {0, 1})]
        ends = await probe.end_offsets(partitions)
        assert {tp: await probe.committed(tp) for tp in partitions} == ends
    finally:
        await probe.stop()


async def test_polls_within_the_commit_interval_share_one_offset_commit_made_after_their_effects(
    db: Database,
) -> None:
    # An offset commit costs the broker more CPU than a produce request: a busy consumer commits once a second.
    now = [100.0]

    async def things(session: AsyncSession, events: Sequence[Event]) -> None:
        await _write(session, events, "thing")

    loop = ConsumerLoop(
        settings=_settings(consumer_commit_interval_s=1.0),
        db=db,
        processed=processed,
        topics=["things.v1"],
        batch_handlers={"thing.happened": things},
        clock=lambda: now[0],
    )
    p0, p1 = TopicPartition("t.things.v1", 0), TopicPartition("t.things.v1", 1)
    consumer = FakeConsumer(db, [p0, p1])
    a, b, c, d = (_event(s) for s in "abcd")
    await loop._process(consumer, {p0: [_record(a, 0, 0)]})
    await loop._process(consumer, {p0: [_record(b, 0, 1)]})
    now[0] += 0.5
    await loop._process(consumer, {p1: [_record(c, 1, 0)]})
    assert consumer.commits == [({p0: 1}, {"a": 1})], "the first poll commits; the next two wait for the interval"
    assert loop.lag == 0, "applied events are not counted as waiting"
    now[0] += 0.5
    await loop._process(consumer, {p0: [_record(d, 0, 2)]})
    assert consumer.commits[1:] == [({p0: 3, p1: 1}, {"a": 1, "b": 1, "c": 1, "d": 1})], "every applied offset at once"


async def _total(db: Database, n: int) -> bool:
    return sum((await _applied(db)).values()) >= n
