"""The shared delivery machinery against the real broker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import select, text

from common.consumer import ConsumerLoop
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from common.kafka import ensure_topics, new_producer
from common.outbox import OutboxRelay, add_events, backlog
from common.settings import ServiceSettings
from routing.app import MIGRATIONS
from routing.store import Base, Setting, outbox, processed
from tests.support.stack import ADMIN_TOKEN, produce_raw, read_topic, wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


def _settings(bootstrap: str, namespace: str, **overrides: object) -> ServiceSettings:
    values: dict[str, object] = {
        "service_name": "plumbing",
        "env": "test",
        "kafka_bootstrap": bootstrap,
        "topic_namespace": namespace,
        "topic_partitions": 2,
        "outbox_poll_interval_s": 0.05,
        "consumer_max_attempts": 2,
        "consumer_retry_backoff_s": 0.01,
        "kafka_send_timeout_s": 3,
    }
    values.update(overrides)
    return ServiceSettings(**values)  # type: ignore[arg-type]


async def _database(url: str) -> Database:
    db = Database(url)
    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)
    return db


def _event(subject: str, n: int, **kw: object) -> Event:
    return Event(type="thing.happened", source="/tests", subject=subject, data={"n": n}, **kw)  # type: ignore[arg-type]


async def test_relay_publishes_committed_events_in_order_and_never_rolled_back_ones(
    database_url: str, kafka_bootstrap: str, namespace: str
) -> None:
    settings = _settings(kafka_bootstrap, namespace)
    await ensure_topics(settings, ["things.v1"])
    db = await _database(database_url)
    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=lambda: new_producer(settings))
    task = asyncio.create_task(relay.run())
    try:
        committed = [_event("lead-1", n, correlation_id="corr-1") for n in range(5)]
        async with db.transaction() as session:
            await add_events(session, outbox, settings, committed, lambda _e: "things.v1")
        with contextlib.suppress(RuntimeError):
            async with db.transaction() as session:
                await add_events(session, outbox, settings, [_event("lead-1", 99)], lambda _e: "things.v1")
                raise RuntimeError("the state change failed, so its events must not leave")

        records = []

        async def all_published() -> bool:
            records[:] = await read_topic(kafka_bootstrap, settings.topic("things.v1"), timeout=2)
            return len(records) >= 5

        await wait_until_async(all_published, timeout=20, what="5 records published")
        values = [Event.from_record(r.key, r.value, r.headers) for r in records]
        assert [e.data["n"] for e in values] == [0, 1, 2, 3, 4]  # one key, one partition, commit order
        assert [e.id for e in values] == [e.id for e in committed]
        assert all(e.correlation_id == "corr-1" and e.subject == "lead-1" for e in values)
        assert {r.key for r in records} == {b"lead-1"}
        await wait_until_async(lambda: _is_zero(backlog(db, outbox)), timeout=10, what="outbox emptied")
    finally:
        await relay.stop()
        await task
        await db.dispose()


async def _is_zero(value: object) -> bool:
    return (await value) == 0  # type: ignore[misc]


async def test_relay_keeps_rows_while_the_broker_is_unreachable_then_publishes_them(
    database_url: str, kafka_bootstrap: str, namespace: str
) -> None:
    good = _settings(kafka_bootstrap, namespace)
    down = _settings("127.0.0.1:1", namespace, kafka_send_timeout_s=1)
    await ensure_topics(good, ["things.v1"])
    db = await _database(database_url)
    async with db.transaction() as session:
        await add_events(session, outbox, good, [_event(f"lead-{i}", i) for i in range(3)], lambda _e: "things.v1")

    relay = OutboxRelay(settings=down, db=db, table=outbox, producer_factory=lambda: new_producer(down))
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(2.5)  # let it fail a few times against a port where nothing listens
    await relay.stop()
    await task
    assert await backlog(db, outbox) == 3, "nothing may be dropped while Kafka is unreachable"

    relay = OutboxRelay(settings=good, db=db, table=outbox, producer_factory=lambda: new_producer(good))
    task = asyncio.create_task(relay.run())
    try:
        await wait_until_async(lambda: _is_zero(backlog(db, outbox)), timeout=20, what="backlog published")
        records = await read_topic(kafka_bootstrap, good.topic("things.v1"))
        assert sorted(Event.from_record(r.key, r.value, r.headers).data["n"] for r in records) == [0, 1, 2]
    finally:
        await relay.stop()
        await task
        await db.dispose()


async def test_one_relay_publishes_per_service_on_postgres_and_a_stopped_one_hands_over(
    pg_database: str, kafka_bootstrap: str, namespace: str
) -> None:
    settings = _settings(kafka_bootstrap, namespace)
    await ensure_topics(settings, ["things.v1"])
    first_db = await _database(pg_database)
    second_db = Database(pg_database)  # another process's engine, with its own connections

    first = OutboxRelay(settings=settings, db=first_db, table=outbox, producer_factory=lambda: new_producer(settings))
    first_task = asyncio.create_task(first.run())
    await wait_until_async(lambda: _holds_lock(first_db), timeout=10, what="first relay leads")
    await first.stop()
    await first_task
    assert not await _holds_lock(second_db), "a stopped relay must not leave its lock on a pooled connection"

    # The first engine stays open with its pooled connections, as a process whose relay stopped on shutdown would.
    second = OutboxRelay(settings=settings, db=second_db, table=outbox, producer_factory=lambda: new_producer(settings))
    second_task = asyncio.create_task(second.run())
    try:
        async with first_db.transaction() as session:
            await add_events(session, outbox, settings, [_event("lead-h", 1)], lambda _e: "things.v1")
        await wait_until_async(lambda: _is_zero(backlog(first_db, outbox)), timeout=10, what="handed-over publish")
    finally:
        await second.stop()
        await second_task
        await first_db.dispose()
        await second_db.dispose()


async def _holds_lock(db: Database) -> bool:
    async with db.read() as session:
        held = await session.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
        return bool(held.scalar_one())


async def _count(db: Database, subject: str) -> int:
    async with db.read() as session:
        row = (await session.execute(select(Setting).where(Setting.key == f"count:{subject}"))).scalar_one_or_none()
        return row.value if row else 0


async def test_consumer_applies_each_event_once_dead_letters_poison_and_commits_after_effects(
    database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, namespace)
    await ensure_topics(settings, ["things.v1", "deadletter.plumbing.v1"])
    db = await _database(database_url)

    async def count_it(session, event: Event) -> None:  # type: ignore[no-untyped-def]
        row = await session.get(Setting, f"count:{event.subject}")
        if row is None:
            session.add(Setting(key=f"count:{event.subject}", value=1))
        else:
            row.value += 1
        await session.flush()
        if event.subject == "boom":
            raise RuntimeError("this handler always fails after writing")

    def loop() -> ConsumerLoop:
        return ConsumerLoop(
            settings=settings,
            db=db,
            processed=processed,
            topics=["things.v1"],
            handlers={"thing.happened": count_it},
        )

    topic = settings.topic("things.v1")
    first, second = _event("a", 1), _event("b", 2)
    producer = new_producer(settings)
    await producer.start()
    try:
        for event in (
            first,
            second,
            first,
            _event("boom", 3),
        ):  # `first` twice: a redelivery with the same id
            await producer.send_and_wait(topic, event.value(), key=event.key(), headers=event.headers())
        await produce_raw(kafka_bootstrap, topic, b"{not json", key=b"a", headers=first.headers())
        after = _event("c", 4)
        await producer.send_and_wait(topic, after.value(), key=after.key(), headers=after.headers())
    finally:
        await producer.stop()

    consumer = loop()
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until_async(lambda: _count(db, "c"), timeout=30, what="the good event after the poison")
        assert await _count(db, "a") == 1
        assert await _count(db, "b") == 1
        assert await _count(db, "boom") == 0, "a failed handler's partial effect must roll back"
        dead = await read_topic(kafka_bootstrap, settings.topic("deadletter.plumbing.v1"))
        reasons = sorted(dict(r.headers)["dlq_reason"].decode() for r in dead)
        assert reasons == ["handler_failed", "invalid_envelope"]
        assert any(r.value == b"{not json" for r in dead)
        await wait_until_async(lambda: consumer.lag == 0, timeout=10, what="consumer caught up")
    finally:
        await consumer.stop()
        await task

    # Offsets were committed after the effects: a new consumer of the group starts past everything.
    probe = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=settings.consumer_group, enable_auto_commit=False
    )
    await probe.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (probe.partitions_for_topic(topic) or {0, 1})]
        committed = {tp: await probe.committed(tp) for tp in partitions}
        ends = await probe.end_offsets(partitions)
        assert all(committed[tp] == ends[tp] for tp in partitions), (committed, ends)
    finally:
        await probe.stop()

    # Replaying the topic from the start (a new group) changes nothing: every id is already processed.
    replay_settings = _settings(kafka_bootstrap, namespace, service_name="plumbing-replay")
    await ensure_topics(replay_settings, ["deadletter.plumbing-replay.v1"])
    replay = ConsumerLoop(
        settings=replay_settings,
        db=db,
        processed=processed,
        topics=["things.v1"],
        handlers={"thing.happened": count_it},
    )
    task = asyncio.create_task(replay.run())
    try:
        await wait_until_async(
            lambda: replay.running and replay.lag == 0 and replay._positions,
            timeout=30,
            what="replay caught up",
        )
        assert (await _count(db, "a"), await _count(db, "b"), await _count(db, "c")) == (1, 1, 1)
    finally:
        await replay.stop()
        await task
        await db.dispose()


async def test_a_consumer_stuck_with_work_waiting_reports_itself_stalled(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, namespace, consumer_stall_s=1.5)
    await ensure_topics(settings, ["things.v1", "deadletter.plumbing.v1"])
    db = await _database(f"sqlite+aiosqlite:///{tmp_path / 'stuck.db'}")
    release = asyncio.Event()

    async def hang(session, event: Event) -> None:  # type: ignore[no-untyped-def]
        await release.wait()  # a handler wedged on something that never answers

    consumer = ConsumerLoop(
        settings=settings, db=db, processed=processed, topics=["things.v1"], handlers={"thing.happened": hang}
    )
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until_async(lambda: consumer.running, timeout=30, what="consumer running")
        assert not consumer.health()["stalled"]
        event = _event("stuck", 1)
        await produce_raw(kafka_bootstrap, settings.topic("things.v1"), event.value(), event.key(), event.headers())
        await wait_until_async(lambda: consumer.health()["stalled"], timeout=30, what="stall detected")
        assert consumer.health()["lag"] >= 1
        release.set()
        await wait_until_async(lambda: not consumer.health()["stalled"], timeout=30, what="recovered")
    finally:
        release.set()
        await consumer.stop()
        await task
        await db.dispose()


async def test_a_row_committed_after_a_later_seq_is_published_not_deleted_on_postgres(
    pg_database: str, kafka_bootstrap: str, namespace: str
) -> None:
    """Writers commit out of seq order: the row whose commit lands while the relay publishes must still leave."""
    settings = _settings(kafka_bootstrap, namespace)
    await ensure_topics(settings, ["things.v1"])
    db = await _database(pg_database)
    async with db.transaction() as session:  # seq 1, committed
        await add_events(session, outbox, settings, [_event("early", 1)], lambda _e: "things.v1")

    inserted, commit_now, committed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:  # takes seq 2, then holds its transaction open
        async with db.transaction() as session:
            await add_events(session, outbox, settings, [_event("slow", 2)], lambda _e: "things.v1")
            inserted.set()
            await commit_now.wait()
        committed.set()

    writer = asyncio.create_task(slow_writer())
    await inserted.wait()
    async with db.transaction() as session:  # seq 3, committed while seq 2 is still open
        await add_events(session, outbox, settings, [_event("late", 3)], lambda _e: "things.v1")

    def producer() -> AIOKafkaProducer:
        # The slow writer commits while the relay publishes what it read (seqs 1 and 3), before it deletes them.
        real = new_producer(settings)
        send_batch = real.send_batch

        async def send_after_the_slow_commit(*args: object, **kwargs: object) -> object:
            commit_now.set()
            await committed.wait()
            return await send_batch(*args, **kwargs)  # type: ignore[arg-type]

        real.send_batch = send_after_the_slow_commit  # type: ignore[method-assign]
        return real

    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=producer)
    task = asyncio.create_task(relay.run())
    try:
        await writer
        records: list[object] = []

        async def all_published() -> bool:
            records[:] = await read_topic(kafka_bootstrap, settings.topic("things.v1"), timeout=2)
            return len(records) >= 3

        await wait_until_async(all_published, timeout=20, what="3 records published")
        subjects = sorted(Event.from_record(r.key, r.value, r.headers).subject for r in records)  # type: ignore[attr-defined]
        assert subjects == ["early", "late", "slow"]
        await wait_until_async(lambda: _is_zero(backlog(db, outbox)), timeout=10, what="outbox emptied")
    finally:
        await relay.stop()
        await task
        await db.dispose()


async def test_a_store_error_is_dead_lettered_with_its_type_and_no_parameter_values(
    database_url: str, kafka_bootstrap: str, namespace: str
) -> None:
    canary = "Canarina Vogelsang"
    settings = _settings(kafka_bootstrap, namespace, admin_token="a-test-admin-token-of-32-characters")
    await ensure_topics(settings, ["things.v1", "deadletter.plumbing.v1"])
    db = await _database(database_url)

    async def store_twice(session, event: Event) -> None:  # type: ignore[no-untyped-def]
        # A duplicate key whose value is a name: the statement's parameters carry it into SQLAlchemy's error text.
        session.add(Setting(key=canary, value=1))
        await session.flush()
        session.add(Setting(key=canary, value=2))
        await session.flush()

    event = _event("poison", 1)
    producer = new_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("things.v1"), event.value(), key=event.key(), headers=event.headers()
        )
    finally:
        await producer.stop()
    consumer = ConsumerLoop(
        settings=settings, db=db, processed=processed, topics=["things.v1"], handlers={"thing.happened": store_twice}
    )
    task = asyncio.create_task(consumer.run())
    try:
        dead = await wait_until_async(
            lambda: read_topic(kafka_bootstrap, settings.topic("deadletter.plumbing.v1"), timeout=2),
            timeout=30,
            what="the poison event dead-lettered",
        )
    finally:
        await consumer.stop()
        await task
        await db.dispose()
    headers = dict(dead[0].headers)
    assert headers["dlq_reason"] == b"handler_failed"
    assert headers["dlq_error"].startswith(b"IntegrityError: ")
    assert all(canary.encode() not in value for value in headers.values()), headers


def _outbox_cli(url: str, settings: ServiceSettings, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "handoff-outbox"
    assert executable.exists(), "the handoff-outbox entry point is installed with the package"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "ROUTING_"))}
    env.update(
        HANDOFF_ENV="test",
        HANDOFF_ADMIN_TOKEN=ADMIN_TOKEN,
        HANDOFF_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        HANDOFF_TOPIC_NAMESPACE=settings.topic_namespace,
    )
    return subprocess.run(
        [str(executable), "--database-url", url, *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_rows_the_broker_refuses_are_dead_lettered_the_next_is_published_and_redrive_republishes(
    database_url: str, kafka_bootstrap: str, namespace: str
) -> None:
    settings = _settings(kafka_bootstrap, namespace)
    await ensure_topics(settings, ["things.v1"])  # not "gone.v1": the broker creates no topic by itself
    db = await _database(database_url)
    too_large = Event(type="thing.happened", source="/tests", subject="big", data={"blob": "x" * 1_100_000})
    gone, good = _event("gone", 1), _event("good", 2)
    async with db.transaction() as session:
        await add_events(session, outbox, settings, [too_large], lambda _e: "things.v1")
        await add_events(session, outbox, settings, [gone], lambda _e: "gone.v1")
        await add_events(session, outbox, settings, [good], lambda _e: "things.v1")

    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=lambda: new_producer(settings))
    task = asyncio.create_task(relay.run())
    try:
        await wait_until_async(lambda: _is_zero(backlog(db, outbox)), timeout=30, what="outbox emptied")
        records = await read_topic(kafka_bootstrap, settings.topic("things.v1"))
        assert [Event.from_record(r.key, r.value, r.headers).id for r in records] == [good.id]

        listed = _outbox_cli(database_url, settings, "list", "--service", "routing")
        assert listed.returncode == 0, listed.stderr
        dead = {row["event_id"]: row for row in map(json.loads, listed.stdout.splitlines())}
        assert dead[too_large.id]["reason"] == "record_too_large"
        assert dead[gone.id]["reason"] == "unknown_topic"
        assert dead[gone.id]["topic"] == settings.topic("gone.v1")

        # The fix: the topic is created. Redrive that row; the running relay publishes it.
        await ensure_topics(settings, ["gone.v1"])
        moved = _outbox_cli(database_url, settings, "redrive", "--service", "routing", "--id", str(dead[gone.id]["id"]))
        assert moved.returncode == 0, moved.stderr

        async def redriven() -> bool:
            found = await read_topic(kafka_bootstrap, settings.topic("gone.v1"), timeout=2)
            return [Event.from_record(r.key, r.value, r.headers).id for r in found] == [gone.id]

        await wait_until_async(redriven, timeout=30, what="the redriven row published")
        left = _outbox_cli(database_url, settings, "list", "--service", "routing")
        assert [json.loads(line)["event_id"] for line in left.stdout.splitlines()] == [too_large.id]
    finally:
        await relay.stop()
        await task
        await db.dispose()


async def test_redrive_topic_republishes_consumer_dead_letters_to_their_original_topic(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, namespace, service_name="routing")
    await ensure_topics(settings, ["things.v1", "deadletter.routing.v1"])
    event = _event("parked", 7)
    letter_headers = [
        *event.headers(),
        ("dlq_reason", b"handler_failed"),
        ("dlq_error", b"RuntimeError: fixed since"),
        ("dlq_topic", settings.topic("things.v1").encode()),
    ]
    await produce_raw(
        kafka_bootstrap, settings.topic("deadletter.routing.v1"), event.value(), event.key(), letter_headers
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    first = _outbox_cli(url, settings, "redrive-topic", "--service", "routing")
    assert first.returncode == 0 and "redriven 1" in first.stdout, first.stderr
    again = _outbox_cli(url, settings, "redrive-topic", "--service", "routing")
    assert again.returncode == 0 and "redriven 0" in again.stdout, "a second run resends nothing"

    records = await read_topic(kafka_bootstrap, settings.topic("things.v1"))
    assert len(records) == 1
    assert Event.from_record(records[0].key, records[0].value, records[0].headers).id == event.id
    assert not [k for k, _v in records[0].headers if k.startswith("dlq_")]
