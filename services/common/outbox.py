"""The transactional outbox: events are rows written with the state change, published by a relay after commit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from prometheus_client import Histogram
from sqlalchemy import Table, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.db import Database
from common.envelope import Event, loads, outbox_headers
from common.kafka import PartitionBatches, RequestsTaken, stop_quietly
from common.outbox_dead import park, refusal
from common.outbox_deletes import HANDED, PublishedRows, register, relay_for
from common.outbox_leader import RelayLeadership, relay_channel
from common.outbox_sqlite import Columns, OutboxRow, outbox_dead_table, outbox_table, write_rows
from common.poll import poll_until, share_loop
from common.settings import ServiceSettings
from common.sqlprep_session import session_driver

# The tables are declared beside the rows' insert; the services import them from here.
__all__ = ["OutboxRelay", "add_events", "backlog", "outbox_dead_table", "outbox_table"]

log = structlog.get_logger(__name__)

# Rows held from the hand-off at most (a broker outage must not pile them up in memory): past it, the table has them.
_HANDED_MAX = 20_000
_VALUE_KEYS = ("event_id", "topic", "key", "headers", "value")


async def add_events(
    session: AsyncSession,
    table: Table,
    settings: ServiceSettings,
    events: Sequence[Event],
    topic_of: Callable[[Event], str],
) -> None:
    """Write events into the caller's transaction; nothing leaves until that transaction commits.

    The rows written are handed to this process's relay when the transaction commits (it publishes them from
    memory, no read back), and the relay's published rows waiting for their delete are deleted in this same
    transaction (no COMMIT of the relay's own). The table stays the source of truth: whatever the hand-off misses
    (a crash, a rollback, another process) the relay's reads publish."""
    if not events:
        return
    now = datetime.now(UTC)
    headers = outbox_headers(events)  # what the events share serialized once; Kafka's go to the relay as they are
    topics: dict[str, str] = {}  # each topic's namespaced name, once
    names = [topics.get(name) or topics.setdefault(name, settings.topic(name)) for name in map(topic_of, events)]
    columns = Columns.of(events, names, headers)
    relay = relay_for(session, table)
    _connection, dialect, raw = await session_driver(session)
    written: list[OutboxRow] | None = None
    if raw is not None:  # the inline SQLite dialect: at the driver, no greenlet switch
        returning = relay is not None
        written = write_rows(raw, dialect, table, columns, now, returning=returning, kafka_headers=headers.kafka)
    else:  # through Core
        rows = [{**dict(zip(_VALUE_KEYS, row, strict=True)), "created_at": now} for row in zip(*columns, strict=True)]
        if relay is None:
            await session.execute(insert(table), rows)
        else:
            # Only the seqs come back (in the rows' order): the rest is what was just written, as on SQLite.
            statement = insert(table).returning(table.c.seq, sort_by_parameter_order=True)
            seqs = (await session.execute(statement, rows[0] if len(rows) == 1 else rows)).scalars().all()
            written = columns.rows(seqs, now, headers.kafka)
    if relay is not None:
        assert written is not None
        handed = session.info.setdefault(HANDED, (relay, []))
        handed[1].extend(written)
        await relay.published.claim_into(session)
    if dialect.name == "postgresql":
        # Wakes the publishing relay even when it runs in another process of this service (one leader publishes
        # for all); PostgreSQL delivers the notification at commit, and never for a rolled-back transaction. The
        # payload names this process's relay, which has the rows from the hand-off and need not read them back.
        await session.execute(
            text("SELECT pg_notify(:channel, :token)"),
            {"channel": relay_channel(settings.service_name), "token": relay.token if relay is not None else ""},
        )


def _row_columns(table: Table) -> list[Any]:
    c = table.c
    return [c.seq, c.event_id, c.topic, c.key, c.headers, c.value, c.created_at]


class OutboxRelay:
    """Publishes committed outbox rows in order, then deletes them; at-least-once, consumers dedupe by event id.

    Rows this process's writers commit are handed over at commit (`add_events`) and published from memory; the
    table is read when it may hold rows the hand-off did not bring: at start, after a failed round, when another
    process of the service commits (PostgreSQL's NOTIFY), on becoming the leader, and once per poll interval.
    """

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
        self.published = PublishedRows(db, table, batch=settings.outbox_batch_size)
        self.token = uuid.uuid4().hex  # names this relay in its writers' NOTIFY payloads
        self._handed: list[Any] = []  # committed rows handed over by this process's writers, not yet published
        # Set while nothing handed over waits for its round's produce request (common.poll.hand_off): once the sender
        # took the round's batches (the broker's answer needs no turn of the loop to come: it is read at the next one).
        self.idle = asyncio.Event()
        self.idle.set()
        self._read_due = True  # the table may hold rows the hand-off did not bring: read it next round
        self._round = 0  # counts the rounds that publish: a late signal of an earlier round's requests is ignored
        self._last_read = 0.0
        self._leader: RelayLeadership | None = None
        self.last_publish_monotonic = time.monotonic()
        register(self, db.engine, table)
        share_loop(db.engine, self)  # a busy consumer on this database lets the relay publish between its polls

    @property
    def engine(self) -> Any:
        return self._db.engine

    def handoff(self, rows: Sequence[Any]) -> None:
        """A writer's transaction committed these rows (called at its commit)."""
        if self._leader is not None and self._leader.leading and len(self._handed) < _HANDED_MAX:
            self._handed.extend(rows)
            self.idle.clear()
        else:
            self._read_due = True  # not publishing now: whoever leads reads them (this relay too, if it leads later)
        self._wake.set()

    def _foreign_commit(self) -> None:
        self._read_due = True  # another process's rows: only the table has them

    def notify(self) -> None:
        self._read_due = True
        self._wake.set()

    async def run(self) -> None:
        """Relay until stopped; a broker outage only delays publishing, it never loses a row."""
        backoff = 0.5
        leader = RelayLeadership(self._db, self._settings.service_name, self._wake, self.token, self._foreign_commit)
        self._leader = leader

        async def one_round() -> bool | float:
            try:
                return await publish_round()
            finally:
                if not self._handed:
                    self.idle.set()

        async def publish_round() -> bool | float:
            nonlocal backoff
            try:
                if not await leader.acquire():
                    self._handed.clear()
                    self._read_due = True
                    return 2.0
                if leader.newly_leading():
                    self._read_due = True  # rows committed while another process led may wait in the table
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
            # What this round did not publish is in the table: read it back (the hand-off's copies go).
            self._handed.clear()
            self._read_due = True
            pause, backoff = backoff, min(backoff * 2, 10.0)
            return pause

        deleter = asyncio.create_task(self.published.run(), name="outbox-deleter")
        try:
            await poll_until(
                self._stop, one_round, interval_s=self._settings.outbox_poll_interval_s, wake=self._wake, name="outbox"
            )
        finally:
            # What was published is deleted before the relay goes (bounded: a row left behind is published again).
            self.published.hurry()
            with contextlib.suppress(Exception):
                await self.published.wait_settled(self._settings.kafka_send_timeout_s)
            deleter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deleter
            self._leader = None
            self._handed.clear()
            self.idle.set()
            self._read_due = True
            await leader.release()
            await stop_quietly(self._producer)
            self._producer = None

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def _next_rows(self) -> tuple[list[Any], bool]:
        """The oldest rows to publish (a batch at most), and whether more may be waiting."""
        limit = self._settings.outbox_batch_size
        settling = self.published.settling
        now = time.monotonic()
        if not self._read_due and now - self._last_read < self._settings.outbox_poll_interval_s:
            handed = sorted((row for row in self._handed if row.seq not in settling), key=attrgetter("seq"))
            self._handed = handed[limit:]
            return handed[:limit], bool(self._handed)
        self._read_due, self._last_read = False, now
        if len(settling) >= limit:
            # The deletes fell a batch behind (a slow store): let them catch up first, for a bounded while.
            self.published.hurry()
            await self.published.wait_settled(self._settings.kafka_send_timeout_s)
            settling = self.published.settling
        # Read, publish and delete in separate short transactions: a transaction held open across a Kafka round
        # trip would block SQLite's single writer for that long. Rows already published and not yet deleted are
        # read past (at most a batch of them).
        settling = set(settling)
        async with self._db.read() as session:
            rows = (
                await session.execute(
                    select(*_row_columns(self._table)).order_by(self._table.c.seq).limit(limit + len(settling))
                )
            ).all()
        fresh = [row for row in rows if row.seq not in settling]
        # More may be waiting when the read was cut by its limit, or found more than a batch of new rows (settling
        # rows deleted meanwhile leave room in the read for more new ones).
        full = len(fresh) > limit or len(rows) >= limit + len(settling)
        rows = fresh[:limit]
        read = {row.seq for row in rows}
        # Handed rows this read brought are published from it; a full read leaves the rest to the next read.
        self._handed = [row for row in self._handed if row.seq not in read]
        self._read_due = self._read_due or full  # kept if another process's commit came during the read
        return rows, full

    async def _publish_batch(self, producer: AIOKafkaProducer) -> bool:
        """Publish one batch of the oldest rows and hand what left to the deleter; True when more may be waiting."""
        rows, full = await self._next_rows()
        metrics.OUTBOX_BACKLOG.set(len(rows))
        if not rows:
            return False
        batches = PartitionBatches(producer)
        self._round += 1
        taken = RequestsTaken(functools.partial(self._requests_taken, self._round))
        sent: list[tuple[asyncio.Future[Any], list[Any]]] = []
        refused: list[tuple[Any, str, BaseException]] = []
        held: list[tuple[list[Any], BaseException]] = []  # rows not sent for an error: decided below, outside the bound
        unsent = 0  # rows neither sent nor refused: they wait in the table for a later round
        failure: BaseException | None = None
        try:
            # Pipelined: every row is appended to its partition's batch and every batch handed to the producer
            # before any delivery is awaited, so the round leaves in one produce request; one bound for the whole
            # round (an idempotent producer can hang while the broker is down, aiokafka#1101), a little over the
            # producer's own request timeout so that its UnknownTopicOrPartitionError (which names the topic) comes
            # first.
            async with asyncio.timeout(self._settings.kafka_send_timeout_s + 1):
                blocked = await batches.learn({row.topic for row in rows})
                for row in rows:
                    if row.topic in blocked:
                        continue
                    headers = row.kafka_headers if type(row) is OutboxRow else None
                    try:
                        batches.add(row.topic, row.key, row.value, headers or _headers(row.headers), row)
                    except MessageSizeTooLargeError as exc:  # refused before any request, as send() does
                        if self._dead is None:  # nowhere to park it: it and the rows after it wait
                            held.append(([row], exc))
                            break
                        refused.append((row, "record_too_large", exc))
                for topic, error in blocked.items():
                    held.append(([row for row in rows if row.topic == topic], error))
                for index, (topic, partition, batch, batch_rows) in enumerate(batches.batches):
                    try:
                        sent.append((await producer.send_batch(batch, topic, partition=partition), batch_rows))
                        taken.note(producer, topic, partition)
                    except (KafkaError, TimeoutError) as exc:
                        # Later batches wait too (one of them may follow this one in its partition).
                        held.append((batch_rows, exc))
                        unsent = sum(len(later[3]) for later in batches.batches[index + 1 :])
                        break
                taken.noted_all()
                # Every delivery future is awaited: handing a batch over only enqueues it.
                if sent:
                    await asyncio.wait([future for future, _ in sent])
        except TimeoutError as exc:
            failure = exc  # deliveries still pending keep their rows for the next round
        for held_rows, error in held:
            failure = await self._refuse_or_fail(producer, held_rows, error, refused) or failure
        published: list[Any] = []
        for future, batch_rows in sent:
            if not future.done() or future.cancelled():
                failure = failure or TimeoutError("delivery unconfirmed within the batch's bound")
                future.add_done_callback(_retrieve)  # its outcome is moot: the rows go again
            elif (delivery_error := future.exception()) is None:
                published.extend(batch_rows)
            else:
                failure = await self._refuse_or_fail(producer, batch_rows, delivery_error, refused) or failure
        if published:
            # Deleted with the next writer's transaction, or by the deleter: the next round need not wait for it
            # (nor for SQLite's writer), and reads skip these rows meanwhile.
            self.published.settle([row.seq for row in published])
        if refused:
            # Parked and deleted in one transaction, here: rare, and a dead letter must not be published again.
            assert self._dead is not None
            async with self._db.transaction() as session:
                await park(session, self._dead, refused)
                seqs = [row.seq for row, _, _ in refused]
                await session.execute(delete(self._table).where(self._table.c.seq.in_(seqs)))
        metrics.OUTBOX_PUBLISHED.inc(len(published))
        if failure is not None:
            raise failure
        if published:
            now = datetime.now(UTC)
            observe_all(metrics.OUTBOX_PUBLISH_DELAY, [(now - row.created_at).total_seconds() for row in published])
        self.last_publish_monotonic = time.monotonic()
        # A full batch read, or one cut short by a parked row, means more may be waiting.
        if unsent:
            self._read_due = True
        return full or bool(unsent)

    def _requests_taken(self, round_number: int) -> None:
        if round_number == self._round and not self._handed:
            self.idle.set()

    async def _refuse_or_fail(
        self, producer: AIOKafkaProducer, rows: list[Any], error: BaseException, refused: list[Any]
    ) -> BaseException | None:
        """Rows the broker refused for good join `refused` (a batch's rows share a topic and an outcome); else the
        error, which fails the round (the rows go again)."""
        reason = await self._refusal(producer, rows[0].topic, error)
        if reason is None:
            return error
        refused.extend((row, reason, error) for row in rows)
        return None

    async def _refusal(self, producer: AIOKafkaProducer, topic: str, exc: BaseException) -> str | None:
        if self._dead is None:
            return None
        return await refusal(producer, topic, exc, self._settings.kafka_send_timeout_s)


def _headers(stored: str) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in loads(stored)]


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception never retrieved" for a delivery the round gave up on


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """histogram.observe(amount) for each amount, the buckets counted in one pass: observe() takes a lock for the sum
    and for the bucket per call, several times the relay's own work for a row (the same counts and sum result)."""
    bounds, buckets, total = (getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None or getattr(histogram, "_labelnames", None):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1  # the first bound >= amount, as observe() finds it (the last is +Inf)
    total.inc(sum(amounts))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


async def backlog(db: Database, table: Table) -> int:
    async with db.read() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())
