"""The relay hands the broker one batch per topic partition: against the real broker, each record lands in the
partition Kafka's default partitioner names for its key, a key's records keep their order, and a topic the broker
does not have parks only its own rows while the rest of the round is published."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import select

from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from common.kafka import ensure_topics, new_producer
from common.outbox import OutboxRelay, add_events, backlog
from common.settings import ServiceSettings
from routing.app import MIGRATIONS
from routing.store import Base, outbox, outbox_dead
from tests.support.stack import read_topic, wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

_PARTITIONS = 6


def _settings(bootstrap: str, namespace: str) -> ServiceSettings:
    return ServiceSettings(
        service_name="plumbing",
        env="test",
        kafka_bootstrap=bootstrap,
        topic_namespace=namespace,
        topic_partitions=_PARTITIONS,
        outbox_poll_interval_s=0.05,
        kafka_send_timeout_s=3,
    )  # type: ignore[call-arg]


def _event(subject: str, n: int, topic: str) -> Event:
    return Event(type="thing.happened", source="/tests", subject=subject, data={"n": n, "topic": topic})


async def _relay_until_empty(settings: ServiceSettings, db: Database) -> None:
    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=lambda: new_producer(settings))
    task = asyncio.create_task(relay.run())
    try:
        await wait_until_async(lambda: _empty(db), timeout=30, what="outbox emptied")
    finally:
        await relay.stop()
        await task


async def _empty(db: Database) -> bool:
    return await backlog(db, outbox) == 0


async def _published(bootstrap: str, settings: ServiceSettings, topic: str) -> dict[bytes, list[tuple[int, int]]]:
    """Per key, its records' (partition, n) in offset order."""
    records = await read_topic(bootstrap, settings.topic(topic), timeout=3)
    by_key: dict[bytes, list[tuple[int, int]]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = Event.from_record(record.key, record.value, record.headers)
        by_key.setdefault(record.key, []).append((record.partition, event.data["n"]))
    return by_key


async def test_each_key_keeps_the_default_partitioners_partition_and_its_order(
    database_url: str, kafka_bootstrap: str, namespace: str
) -> None:
    settings = _settings(kafka_bootstrap, namespace)
    topics = ["things.v1", "others.v1"]
    await ensure_topics(settings, topics)
    db = Database(database_url)
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    keys = [f"lead-{i}" for i in range(40)]
    try:
        for n in range(4):  # each key's events interleaved with the others', one transaction per step
            events = [_event(key, n, topics[i % 2]) for i, key in enumerate(keys)]
            async with db.transaction() as session:
                await add_events(session, outbox, settings, events, lambda e: str(e.data["topic"]))
        await _relay_until_empty(settings, db)
    finally:
        await db.dispose()
    default = DefaultPartitioner()
    everything = list(range(_PARTITIONS))
    published = {**await _published(kafka_bootstrap, settings, "things.v1")}
    published.update(await _published(kafka_bootstrap, settings, "others.v1"))
    assert sorted(published) == sorted(key.encode() for key in keys)
    for key, records in published.items():
        partition = default(key, everything, everything)
        assert records == [(partition, n) for n in range(4)], key
    assert len({records[0][0] for records in published.values()}) > 1  # the round did span several partitions


async def test_a_topic_the_broker_lacks_parks_only_its_rows_and_the_round_publishes_the_rest(
    database_url: str, kafka_bootstrap: str, namespace: str
) -> None:
    settings = _settings(kafka_bootstrap, namespace)
    await ensure_topics(settings, ["things.v1"])  # not "gone.v1"
    db = Database(database_url)
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    events = [
        _event("lead-a", 0, "things.v1"),
        _event("lead-b", 0, "things.v1"),
        _event("lead-g", 0, "gone.v1"),
        _event("lead-a", 1, "things.v1"),
        _event("lead-g", 1, "gone.v1"),
        _event("lead-b", 1, "things.v1"),
    ]
    try:
        async with db.transaction() as session:  # one transaction: one round
            await add_events(session, outbox, settings, events, lambda e: str(e.data["topic"]))
        await _relay_until_empty(settings, db)
        async with db.read() as session:
            dead = (await session.execute(select(outbox_dead).order_by(outbox_dead.c.seq))).all()
    finally:
        await db.dispose()
    assert [(row.event_id, row.reason) for row in dead] == [
        (e.id, "unknown_topic") for e in events if e.subject == "lead-g"
    ]
    published = await _published(kafka_bootstrap, settings, "things.v1")
    assert {key: [n for _, n in records] for key, records in published.items()} == {
        b"lead-a": [0, 1],
        b"lead-b": [0, 1],
    }
