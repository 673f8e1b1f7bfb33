"""The transactional outbox: events are rows written with the state change, published by a relay after commit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.db import Database, UtcDateTime
from common.envelope import Event, dumps, loads
from common.kafka import stop_quietly
from common.outbox_leader import RelayLeadership, relay_channel
from common.poll import poll_until
from common.settings import ServiceSettings

log = structlog.get_logger(__name__)

_SESSION_FLAG = "handoff_outbox_written"
_DELETE_CHUNK = 5_000  # seqs per DELETE statement (bound parameters stay far below SQLite's and asyncpg's limits)


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


async def add_events(
    session: AsyncSession,
    table: Table,
    settings: ServiceSettings,
    events: Sequence[Event],
    topic_of: Callable[[Event], str],
) -> None:
    """Write events into the caller's transaction; nothing leaves until that transaction commits."""
    if not events:
        return
    now = datetime.now(UTC)
    await session.execute(
        insert(table),
        [
            {
                "event_id": event.id,
                "topic": settings.topic(topic_of(event)),
                "key": event.key(),
                "headers": dumps([[k, v.decode()] for k, v in event.headers()]).decode(),
                "value": event.value(),
                "created_at": now,
            }
            for event in events
        ],
    )
    session.info[_SESSION_FLAG] = True
    if (await session.connection()).dialect.name == "postgresql":
        # Wakes the publishing relay even when it runs in another process of this service (one leader publishes
        # for all); PostgreSQL delivers the notification at commit, and never for a rolled-back transaction.
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": relay_channel(settings.service_name)})


class OutboxRelay:
    """Publishes committed outbox rows in order, then deletes them; at-least-once, consumers dedupe by event id."""

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        db: Database,
        table: Table,
        producer_factory: Callable[[], AIOKafkaProducer],
    ) -> None:
        self._settings = settings
        self._db = db
        self._table = table
        self._producer_factory = producer_factory
        # The service's dead-letter table, declared beside its outbox; without one a refused row is retried forever.
        self._dead = table.metadata.tables.get("outbox_dead")
        self._producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        # Published rows wait for their delete here, off the publishing path: the next round reads past them.
        self._settling: set[int] = set()  # published, not yet deleted
        self._to_delete: list[int] = []  # of those, the ones no delete transaction has taken yet
        self._delete_wake = asyncio.Event()
        self._settled = asyncio.Event()  # set whenever nothing is settling
        self._settled.set()
        self.last_publish_monotonic = time.monotonic()
        db.on_commit(self._after_commit)

    def _after_commit(self, session: AsyncSession) -> None:
        if session.info.pop(_SESSION_FLAG, False):
            self._wake.set()

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Relay until stopped; a broker outage only delays publishing, it never loses a row."""
        backoff = 0.5
        leader = RelayLeadership(self._db, self._settings.service_name, self._wake)

        async def one_round() -> bool | float:
            nonlocal backoff
            try:
                if not await leader.acquire():
                    return 2.0
                if self._producer is None:
                    # Kept before start() so that a start which fails or times out is still stopped below.
                    self._producer = self._producer_factory()
                    await asyncio.wait_for(self._producer.start(), self._settings.kafka_send_timeout_s)
                    log.info("outbox_relay_connected")
                more = await self._publish_batch(self._producer)
                backoff = 0.5
                return more
            except (KafkaError, TimeoutError, OSError) as exc:
                # aiokafka's idempotent producer can hang or wedge after a broker outage (#1101): start afresh.
                log.warning("outbox_relay_kafka_error", error=type(exc).__name__, retry_in_s=backoff)
                metrics.OUTBOX_PUBLISH_FAILURES.inc()
                await stop_quietly(self._producer)
                self._producer = None
            except Exception:
                log.exception("outbox_relay_error")
            pause, backoff = backoff, min(backoff * 2, 10.0)
            return pause

        if self._to_delete:
            self._delete_wake.set()  # left by an earlier run whose last delete failed
        deleter = asyncio.create_task(self._delete_published(), name="outbox-deleter")
        try:
            await poll_until(
                self._stop, one_round, interval_s=self._settings.outbox_poll_interval_s, wake=self._wake, name="outbox"
            )
        finally:
            # What was published is deleted before the relay goes (bounded: a row left behind is published again).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._settled.wait(), self._settings.kafka_send_timeout_s)
            deleter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deleter
            await leader.release()
            await stop_quietly(self._producer)
            self._producer = None

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def _publish_batch(self, producer: AIOKafkaProducer) -> bool:
        """Publish one batch of the oldest rows and hand what left to the deleter; True when more may be waiting."""
        table = self._table
        limit = self._settings.outbox_batch_size
        if len(self._settling) >= limit:
            # The deletes fell a batch behind (a slow store): let them catch up first, for a bounded while.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.kafka_send_timeout_s):
                    await self._settled.wait()
        # Read, publish and delete in separate short transactions: a transaction held open across a Kafka round
        # trip would block SQLite's single writer for that long. Rows already published and not yet deleted are
        # read past (at most a batch of them).
        settling = set(self._settling)
        async with self._db.read() as session:
            rows = (
                await session.execute(
                    select(
                        table.c.seq,
                        table.c.event_id,
                        table.c.topic,
                        table.c.key,
                        table.c.headers,
                        table.c.value,
                        table.c.created_at,
                    )
                    .order_by(table.c.seq)
                    .limit(limit + len(settling))
                )
            ).all()
        fresh = [row for row in rows if row.seq not in settling]
        # More may be waiting when the read was cut by its limit, or found more than a batch of new rows (settling
        # rows deleted meanwhile leave room in the read for more new ones).
        full = len(fresh) > limit or len(rows) >= limit + len(settling)
        rows = fresh[:limit]
        metrics.OUTBOX_BACKLOG.set(len(rows))
        if not rows:
            return False
        sent: list[tuple[Any, asyncio.Future[Any]]] = []
        refused: list[tuple[Any, str, BaseException]] = []
        stopped_at: tuple[Any, BaseException] | None = None  # the row whose send() failed: it and the rest wait
        failure: BaseException | None = None
        try:
            # Pipelined: every send() is issued before any delivery is awaited, so the batch leaves in a few produce
            # requests instead of one round trip per row; one bound for the whole batch (an idempotent producer can
            # hang while the broker is down, aiokafka#1101), a little over the producer's own request timeout so
            # that its UnknownTopicOrPartitionError (which names the topic) comes first.
            async with asyncio.timeout(self._settings.kafka_send_timeout_s + 1):
                for row in rows:
                    headers = [(k, v.encode()) for k, v in loads(row.headers)]
                    try:
                        future = await producer.send(row.topic, value=row.value, key=row.key, headers=headers)
                    except (KafkaError, TimeoutError) as exc:
                        reason = _certain_refusal(exc) if self._dead is not None else None
                        if reason is None:
                            stopped_at = (row, exc)  # maybe the broker is down: decided below, outside the bound
                            break
                        refused.append((row, reason, exc))
                        continue
                    sent.append((row, future))
                # Every delivery future is awaited: a bare send() only enqueues.
                if sent:
                    await asyncio.wait([future for _, future in sent])
        except TimeoutError as exc:
            failure = exc  # deliveries still pending keep their rows for the next round
        if stopped_at is not None:
            row, error = stopped_at
            reason = await self._refusal(producer, row.topic, error)
            if reason is None:
                failure = failure or error
            else:
                refused.append((row, reason, error))
        published: list[Any] = []
        for row, future in sent:
            if not future.done() or future.cancelled():
                failure = failure or TimeoutError("delivery unconfirmed within the batch's bound")
                continue
            delivery_error = future.exception()
            if delivery_error is None:
                published.append(row)
                continue
            reason = await self._refusal(producer, row.topic, delivery_error)
            if reason is None:
                failure = failure or delivery_error
            else:
                refused.append((row, reason, delivery_error))
        if published:
            # Deleted by the deleter task, so that the next round need not wait for this one's delete (nor for
            # SQLite's writer): its read skips these rows meanwhile.
            self._settle([row.seq for row in published])
        if refused:
            # Parked and deleted in one transaction, here: rare, and a dead letter must not be published again.
            async with self._db.transaction() as session:
                await self._park(session, refused)
                await session.execute(delete(table).where(table.c.seq.in_([row.seq for row, _, _ in refused])))
        if failure is not None:
            if published:
                metrics.OUTBOX_PUBLISHED.inc(len(published))
            raise failure
        now = datetime.now(UTC)
        for row in published:
            metrics.OUTBOX_PUBLISH_DELAY.observe((now - row.created_at).total_seconds())
        metrics.OUTBOX_PUBLISHED.inc(len(published))
        self.last_publish_monotonic = time.monotonic()
        # A full batch read, or one cut short by a parked row, means more may be waiting.
        return full or stopped_at is not None

    def _settle(self, seqs: list[int]) -> None:
        self._settling.update(seqs)
        self._to_delete.extend(seqs)
        self._settled.clear()
        self._delete_wake.set()

    async def _delete_published(self) -> None:
        """Delete published rows, as many rounds' worth per transaction as have gathered while the last one ran."""
        backoff = 0.5
        while True:
            await self._delete_wake.wait()
            self._delete_wake.clear()
            done, self._to_delete = self._to_delete, []
            if not done:
                continue
            try:
                async with self._db.transaction() as session:
                    # Exactly the published seqs, never a range: on PostgreSQL a seq taken before a read but
                    # committed after it lies inside the range, and would be deleted without ever being published.
                    for start in range(0, len(done), _DELETE_CHUNK):
                        chunk = done[start : start + _DELETE_CHUNK]
                        await session.execute(delete(self._table).where(self._table.c.seq.in_(chunk)))
            except Exception as exc:
                # The store is away: the rows stay settling (not read again) and the delete is retried.
                log.warning("outbox_delete_failed", error=type(exc).__name__, retry_in_s=backoff)
                self._to_delete[:0] = done
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._delete_wake.set()
                continue
            backoff = 0.5
            self._settling.difference_update(done)
            if not self._settling:
                self._settled.set()

    async def _refusal(self, producer: AIOKafkaProducer, topic: str, exc: BaseException) -> str | None:
        """Why the broker will never take this record (a dead-letter reason), or None when a retry may succeed."""
        if self._dead is None:
            return None
        if certain := _certain_refusal(exc):
            return certain
        if isinstance(exc, (UnknownTopicOrPartitionError, KafkaTimeoutError, TimeoutError)):
            # The same error when the broker is down: only a broker that answers, without the topic, means gone.
            try:
                metadata = producer.client.fetch_all_metadata()
                cluster = await asyncio.wait_for(metadata, self._settings.kafka_send_timeout_s)
            except Exception:
                return None
            if topic not in cluster.topics():
                return "unknown_topic"
        return None

    async def _park(self, session: AsyncSession, refused: Sequence[tuple[Any, str, BaseException]]) -> None:
        assert self._dead is not None
        now = datetime.now(UTC)
        await session.execute(
            insert(self._dead),
            [
                {
                    "seq": row.seq,
                    "event_id": row.event_id,
                    "topic": row.topic,
                    "key": row.key,
                    "headers": row.headers,
                    "value": row.value,
                    "created_at": row.created_at,
                    "reason": reason,
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                    "dead_at": now,
                }
                for row, reason, exc in refused
            ],
        )
        for row, reason, exc in refused:
            metrics.OUTBOX_DEAD_LETTERS.labels(reason=reason).inc()
            log.error(
                "outbox_dead_lettered", event_id=row.event_id, topic=row.topic, reason=reason, error=type(exc).__name__
            )


def _certain_refusal(exc: BaseException) -> str | None:
    """A refusal the error alone proves, with no question to the broker (which _refusal may need to ask)."""
    if isinstance(exc, (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)):
        return "record_too_large"
    if isinstance(exc, (InvalidTopicError, TopicAuthorizationFailedError)):
        return "topic_refused"
    return None


async def backlog(db: Database, table: Table) -> int:
    async with db.read() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())
