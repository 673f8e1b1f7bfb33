"""The outbox relay pipelines a batch: every send issued before any delivery is awaited, one bound for the batch.

A fake producer stands in for Kafka (what it is asked, and when, is the point); the outbox is a real database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from common.outbox import OutboxRelay, add_events, backlog
from common.settings import ServiceSettings
from routing.app import MIGRATIONS
from routing.store import Base, outbox
from tests.support.stack import wait_until_async

pytestmark = [pytest.mark.integration]


class _Delivery(asyncio.Future[Any]):
    """A delivery future that notes in the shared log when the relay first waits on it."""

    def __init__(self, log: list[str], on_awaited: Callable[[], None]) -> None:
        super().__init__()
        self._log = log
        self._on_awaited = on_awaited

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        self._log.append("await")
        self._on_awaited()
        super().add_done_callback(fn, context=context)


class _FakeBatch:
    """What the relay appends to a partition's batch (aiokafka's BatchBuilder, as far as the relay uses it)."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def append(self, *, timestamp: int | None, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> object:
        self.keys.append(key)
        return key


class _FakeCluster:
    def __init__(self, partitions: int) -> None:
        self._partitions = set(range(partitions))

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


class _FakeProducer:
    """Delivers nothing until the relay awaits a delivery; then delivers every batch handed over so far, except
    those holding a `stalled` key. Each key has a partition of its own, so a stall holds that key's rows only."""

    _max_request_size = 1_048_576

    def __init__(self, log: list[str], delivered: list[bytes], stalled: set[bytes]) -> None:
        self.log = log
        self.delivered = delivered
        self.stalled = stalled
        self._pending: list[tuple[list[bytes], _Delivery]] = []
        self._keys: dict[bytes, int] = {}
        self.client = SimpleNamespace(cluster=_FakeCluster(64))

    def _partitioner(self, key: bytes, all_partitions: list[int], available: list[int]) -> int:
        return all_partitions[self._keys.setdefault(key, len(self._keys)) % len(all_partitions)]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return self.client.cluster.partitions_for_topic(topic)

    def create_batch(self) -> _FakeBatch:
        return _FakeBatch()

    async def send_batch(self, batch: _FakeBatch, topic: str, *, partition: int) -> _Delivery:
        self.log.extend(f"send {key.decode()}" for key in batch.keys)
        future = _Delivery(self.log, self._deliver)
        self._pending.append((batch.keys, future))
        return future

    def _deliver(self) -> None:
        for keys, future in self._pending:
            if not self.stalled.intersection(keys) and not future.done():
                self.delivered.extend(keys)
                future.set_result(None)


def _settings(**overrides: object) -> ServiceSettings:
    values: dict[str, object] = {
        "service_name": "plumbing",
        "env": "test",
        "kafka_bootstrap": "127.0.0.1:1",  # never dialled: the producer is a fake
        "outbox_poll_interval_s": 0.05,
        "kafka_send_timeout_s": 0.3,
    }
    values.update(overrides)
    return ServiceSettings(**values)  # type: ignore[arg-type]


async def _outbox_with(url: str, settings: ServiceSettings, n: int) -> tuple[Database, list[Event]]:
    db = Database(url)
    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)
    events = [Event(type="thing.happened", source="/tests", subject=f"lead-{i}", data={"n": i}) for i in range(n)]
    async with db.transaction() as session:
        await add_events(session, outbox, settings, events, lambda _e: "things.v1")
    return db, events


async def _run_until_empty(relay: OutboxRelay, db: Database) -> None:
    task = asyncio.create_task(relay.run())
    try:
        await wait_until_async(lambda: _empty(db), timeout=20, what="outbox emptied")
    finally:
        await relay.stop()
        await task


async def _empty(db: Database) -> bool:
    return await backlog(db, outbox) == 0


def _relay(
    settings: ServiceSettings, db: Database, delivered: list[bytes], log: list[str] | None = None
) -> OutboxRelay:
    """A relay over the test outbox whose producer records what it sends in `log` and what it delivers."""
    return OutboxRelay(
        settings=settings,
        db=db,
        table=outbox,
        producer_factory=lambda: _FakeProducer([] if log is None else log, delivered, set()),
    )


async def test_a_batch_is_sent_whole_before_the_first_delivery_is_awaited(database_url: str) -> None:
    settings = _settings()
    db, events = await _outbox_with(database_url, settings, 20)
    log: list[str] = []
    delivered: list[bytes] = []
    relay = _relay(settings, db, delivered, log)
    try:
        await _run_until_empty(relay, db)
    finally:
        await db.dispose()
    first_wait = log.index("await")
    assert log[:first_wait] == [f"send lead-{i}" for i in range(20)]  # all 20 issued, in outbox order
    assert delivered == [e.key() for e in events]


async def test_a_stalled_delivery_keeps_only_its_own_row_the_delivered_ones_are_not_sent_again(
    database_url: str,
) -> None:
    """One bound for the batch: when a delivery is still unconfirmed at the bound, the rows the broker did confirm
    are deleted, and only the unconfirmed one goes out again (no duplicates of the rest)."""
    settings = _settings()
    db, events = await _outbox_with(database_url, settings, 5)
    log: list[str] = []
    delivered: list[bytes] = []
    producers: list[_FakeProducer] = []

    def producer() -> _FakeProducer:
        # The first producer never confirms lead-2 (a broker stall); its successor, after the restart, does.
        producers.append(_FakeProducer(log, delivered, {b"lead-2"} if not producers else set()))
        return producers[-1]

    relay = OutboxRelay(settings=settings, db=db, table=outbox, producer_factory=producer)  # type: ignore[arg-type]
    try:
        await _run_until_empty(relay, db)
    finally:
        await db.dispose()
    assert len(producers) == 2
    assert sorted(delivered) == sorted(e.key() for e in events)  # each exactly once
    assert [line for line in log if line.startswith("send")][5:] == ["send lead-2"]


async def _woken_by(writer_url: str | None, database_url: str) -> list[bytes]:
    """Run a relay whose fallback poll is an hour, then commit one row through `writer_url`'s own engine (None:
    the relay's); only a wake-up can publish it. Returns what was delivered."""
    settings = _settings(outbox_poll_interval_s=3600)
    db, _ = await _outbox_with(database_url, settings, 1)  # lead-0: published by the relay's first round
    writer = Database(writer_url) if writer_url else db
    delivered: list[bytes] = []
    relay = _relay(settings, db, delivered)
    task = asyncio.create_task(relay.run())
    try:
        # After its first round the relay waits out the hour unless woken.
        await wait_until_async(lambda: delivered == [b"lead-0"], timeout=20, what="the first round")
        later = Event(type="thing.happened", source="/tests", subject="later", data={})
        async with writer.transaction() as session:
            await add_events(session, outbox, settings, [later], lambda _e: "things.v1")
        await wait_until_async(lambda: b"later" in delivered, timeout=20, what="the relay woken by the commit")
    finally:
        await relay.stop()
        await task
        if writer is not db:
            await writer.dispose()
        await db.dispose()
    return delivered


async def test_a_commit_wakes_the_relay_no_poll_needed(database_url: str) -> None:
    assert await _woken_by(None, database_url) == [b"lead-0", b"later"]


@pytest.mark.postgres
async def test_a_commit_in_another_process_of_the_service_wakes_the_publishing_relay_on_postgres(
    pg_database: str,
) -> None:
    """On PostgreSQL one relay publishes for every process of the service: another process's commit (its own
    engine, no in-process callback) reaches it through NOTIFY."""
    assert await _woken_by(pg_database, pg_database) == [b"lead-0", b"later"]


async def test_a_backlog_larger_than_a_batch_drains_round_after_round_with_no_poll_wait(database_url: str) -> None:
    """Published rows are deleted beside the publishing (the next round reads past them): a backlog of several
    batches still goes out round after round, each row exactly once and in order, without waiting for a poll."""
    settings = _settings(outbox_batch_size=3, outbox_poll_interval_s=3600)
    db, events = await _outbox_with(database_url, settings, 10)
    delivered: list[bytes] = []
    relay = _relay(settings, db, delivered)
    try:
        await _run_until_empty(relay, db)
    finally:
        await db.dispose()
    assert delivered == [e.key() for e in events]
