"""The consumer loop's share of the event loop and of the broker.

A busy consumer leaves its relay the loop between polls: the events a poll wrote leave for the broker (their produce
request is sent) before the next poll's apply starts, even when that apply holds the event loop as SQLite's inline
statements do. Before this, the consumer yielded 1 ms between polls; each step of the relay's round (the produce
request, the broker's answer) then waited for a whole apply, and under load the relay's topic lagged seconds behind.
The broker's answer is not waited for: it needs no turn of the loop to come, and is read at the consumer's next await.

An idle consumer's fetches wait longer at the broker (fewer empty fetches); a record brings the short wait back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from common import consumer as consumer_module
from common.consumer import ConsumerLoop
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from common.kafka import FETCH_WAIT_MS, IDLE_FETCH_WAIT_MS, ensure_topics, new_producer
from common.outbox import OutboxRelay, add_events, backlog
from common.settings import ServiceSettings
from routing.app import MIGRATIONS
from routing.store import Base, outbox, processed
from tests.support.stack import wait_until_async

pytestmark = pytest.mark.integration

_POLLS = 6


class _PolledConsumer:
    """Hands out one prepared poll per getmany, at once (as aiokafka does with records already fetched)."""

    def __init__(self, polls: list[dict[TopicPartition, list[ConsumerRecord]]]) -> None:
        self.polls = polls
        self.tp = TopicPartition("t.in.v1", 0)

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[ConsumerRecord]]:
        if self.polls:
            return self.polls.pop(0)
        await asyncio.sleep(0.01)  # nothing left: a long poll that finds nothing
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    async def committed(self, tp: TopicPartition) -> int:
        return 0


async def _relay_store(tmp_path: Path, kafka_bootstrap: str, name: str) -> tuple[ServiceSettings, Database]:
    """Routing's store on SQLite and an out topic; the relay's table reads are left to the hand-off alone."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    settings = ServiceSettings(
        service_name=name,
        env="test",
        kafka_bootstrap=kafka_bootstrap,
        topic_namespace=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=1,
        outbox_poll_interval_s=3600,  # the hand-off alone brings the rows
    )
    await ensure_topics(settings, ["out.v1"])
    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)
    return settings, Database(url)


async def _stop(
    loop: ConsumerLoop, consuming: asyncio.Task[None], relay: OutboxRelay, relay_task: asyncio.Task[None], db: Database
) -> None:
    await loop.stop()
    await consuming
    await relay.stop()
    await relay_task
    await db.dispose()


async def test_a_busy_consumer_lets_the_relay_publish_a_polls_events_before_the_next_poll_is_applied(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound on the relay's share is generous here: a loaded machine must not turn a slow broker into a failure.
    monkeypatch.setattr(consumer_module, "_RELAY_SHARE_S", 30.0)
    settings, db = await _relay_store(tmp_path, kafka_bootstrap, "relayshare")
    acknowledged: set[str] = set()
    requested: set[str] = set()  # in a produce request the producer's sender has begun to send

    def producer() -> AIOKafkaProducer:
        # The relay hands the producer one batch per partition: note the keys each batch takes, and acknowledge
        # them when its delivery is confirmed.
        real = new_producer(settings)
        create_batch, send_batch = real.create_batch, real.send_batch
        keys_of: dict[int, list[str]] = {}

        def noting_create_batch() -> Any:
            batch = create_batch()
            append = batch.append

            def noting_append(**kwargs: Any) -> Any:
                appended = append(**kwargs)
                if appended is not None:
                    keys_of.setdefault(id(batch), []).append(kwargs["key"].decode())
                return appended

            batch.append = noting_append  # type: ignore[method-assign]
            return batch

        async def noting_send_batch(batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
            future = await send_batch(batch, topic, partition=partition)
            keys = keys_of.get(id(batch), [])

            def note(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    acknowledged.update(keys)

            future.add_done_callback(note)
            return future

        send_request = real._sender._send_produce_req

        async def noting_send_request(node_id: int, batches: dict[Any, Any]) -> None:
            for message_batch in batches.values():  # aiokafka's MessageBatch around the relay's BatchBuilder
                requested.update(keys_of.get(id(message_batch._builder), []))
            await send_request(node_id, batches)

        real._sender._send_produce_req = noting_send_request  # type: ignore[method-assign]
        real.create_batch = noting_create_batch  # type: ignore[method-assign]
        real.send_batch = noting_send_batch  # type: ignore[method-assign]
        return real

    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=producer)
    relay_task = asyncio.create_task(relay.run())
    seen_at_apply: list[set[str]] = []

    async def handle(session: AsyncSession, events: Sequence[Event]) -> None:
        seen_at_apply.append(set(requested))
        await add_events(session, outbox, settings, list(events), lambda _e: "out.v1")
        time.sleep(0.05)  # the apply's statements: they hold the event loop, as the inline SQLite driver does

    events = [Event(type="thing.happened", source="/tests", subject=f"lead-{i}", data={}) for i in range(_POLLS)]
    tp = TopicPartition("t.in.v1", 0)
    polls = [
        {tp: [ConsumerRecord(tp.topic, 0, i, 0, 0, e.key(), e.value(), None, 0, 0, e.headers())]}
        for i, e in enumerate(events)
    ]
    loop = ConsumerLoop(
        settings=settings, db=db, processed=processed, topics=["in.v1"], batch_handlers={"thing.happened": handle}
    )
    fake = _PolledConsumer(polls)
    consuming = asyncio.create_task(loop._poll_forever(fake))
    try:
        async with asyncio.timeout(15):
            while len(seen_at_apply) < _POLLS or len(acknowledged) < _POLLS:
                await asyncio.sleep(0.05)
    finally:
        await _stop(loop, consuming, relay, relay_task, db)
    # Each poll's apply started only after the events of every earlier poll were in a produce request under way
    # (and every event was acknowledged: the wait above).
    for n, seen in enumerate(seen_at_apply):
        assert {e.subject for e in events[:n]} <= seen, f"poll {n} began before earlier events were sent"


async def test_a_consumer_does_not_wait_for_the_brokers_answer_to_its_relays_produce_request(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker's answers to the relay are held back until the second poll was applied: a consumer that waited for
    # them between polls (within a generous share) would never get there.
    monkeypatch.setattr(consumer_module, "_RELAY_SHARE_S", 30.0)
    settings, db = await _relay_store(tmp_path, kafka_bootstrap, "relayanswer")
    applied_all = asyncio.Event()
    requests: list[Any] = []

    def producer() -> AIOKafkaProducer:
        real = new_producer(settings)
        send = real.client.send

        async def held_send(node_id: int, request: Any, **kwargs: Any) -> Any:
            produce = type(request).__name__.startswith("ProduceRequest")
            if produce:
                requests.append(request)
            response = await send(node_id, request, **kwargs)
            if produce:
                await applied_all.wait()  # the answer is here; the producer learns of it only now
            return response

        real.client.send = held_send  # type: ignore[method-assign]
        return real

    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=producer)
    relay_task = asyncio.create_task(relay.run())
    polls_seen: list[int] = []

    async def handle(session: AsyncSession, events: Sequence[Event]) -> None:
        await add_events(session, outbox, settings, list(events), lambda _e: "out.v1")
        polls_seen.append(len(requests))
        if len(polls_seen) == 2:
            applied_all.set()

    events = [Event(type="thing.happened", source="/tests", subject=f"lead-{i}", data={}) for i in range(2)]
    tp = TopicPartition("t.in.v1", 0)
    loop = ConsumerLoop(
        settings=settings, db=db, processed=processed, topics=["in.v1"], batch_handlers={"thing.happened": handle}
    )
    fake = _PolledConsumer(
        [
            {tp: [ConsumerRecord(tp.topic, 0, i, 0, 0, e.key(), e.value(), None, 0, 0, e.headers())]}
            for i, e in enumerate(events)
        ]
    )
    consuming = asyncio.create_task(loop._poll_forever(fake))
    try:
        async with asyncio.timeout(20):
            await applied_all.wait()
            await relay.published.wait_settled(20)
            while await backlog(db, outbox):  # every row acknowledged, then deleted
                relay.published.hurry()
                await asyncio.sleep(0.05)
    finally:
        await _stop(loop, consuming, relay, relay_task, db)
    # The second poll was applied after the first poll's request went out and before its answer was read; one request
    # a poll (a consumer that waited would have gone on only when the relay gave the round up and sent it again).
    assert polls_seen == [0, 1]
    assert len(requests) == 2


async def test_an_idle_consumer_long_polls_and_a_record_brings_the_short_fetch_wait_back(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "_IDLE_AFTER_S", 0.3)
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    settings = ServiceSettings(
        service_name="idlefetch",
        env="test",
        kafka_bootstrap=kafka_bootstrap,
        topic_namespace=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=1,
    )
    await ensure_topics(settings, ["in.v1"])
    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)
    db = Database(url)
    waits_at_apply: list[int] = []
    loop: ConsumerLoop

    async def handle(session: AsyncSession, events: Sequence[Event]) -> None:
        waits_at_apply.append(_fetch_wait(loop))

    loop = ConsumerLoop(
        settings=settings, db=db, processed=processed, topics=["in.v1"], batch_handlers={"thing.happened": handle}
    )
    task = asyncio.create_task(loop.run())
    producer = new_producer(settings)
    await producer.start()
    try:
        await wait_until_async(
            lambda: loop.running and _fetch_wait(loop) == IDLE_FETCH_WAIT_MS, timeout=30, what="idle"
        )
        event = Event(type="thing.happened", source="/tests", subject="lead-1", data={})
        await producer.send_and_wait(
            settings.topic("in.v1"), value=event.value(), key=event.key(), headers=event.headers()
        )
        await wait_until_async(lambda: waits_at_apply, timeout=30, what="the record applied")
    finally:
        await producer.stop()
        await loop.stop()
        await task
        await db.dispose()
    assert waits_at_apply == [FETCH_WAIT_MS]  # the record woke the idle long poll; the short wait is back


def _fetch_wait(loop: ConsumerLoop) -> int:
    client = loop._consumer
    fetcher = getattr(client, "_fetcher", None)
    return int(fetcher._fetch_max_wait_ms) if fetcher is not None else -1


async def test_a_one_event_poll_applies_each_event_id_once(database_url: str) -> None:
    """A one-event poll takes the driver's path to its dedupe mark on SQLite (Core elsewhere): same answer."""
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    db = Database(database_url)
    applied: list[str] = []

    async def handle(session: AsyncSession, events: Sequence[Event]) -> None:
        applied.extend(event.subject for event in events)

    loop = ConsumerLoop(
        settings=ServiceSettings(service_name="onemark", env="test"),
        db=db,
        processed=processed,
        topics=["in.v1"],
        batch_handlers={"thing.happened": handle},
    )
    first, second = (Event(type="thing.happened", source="/tests", subject=s, data={}) for s in ("one", "two"))
    try:
        for n, event in enumerate([first, first, second, first]):  # "first" redelivered twice
            record = ConsumerRecord("t.in.v1", 0, n, 0, 0, event.key(), event.value(), None, 0, 0, event.headers())
            async with db.transaction() as session:
                await loop._apply(session, [(record, event)])
        async with db.read() as session:
            marks = sorted((await session.execute(select(processed.c.event_id))).scalars())
    finally:
        await db.dispose()
    assert applied == ["one", "two"]
    assert marks == sorted([first.id, second.id])
