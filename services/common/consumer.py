"""The consumer loop: effects and dedupe marks commit together, offsets commit after, poison goes to dead letters.

A poll is worked as one unit: its events are deduped in one statement, each type's batch handler is called with
its fresh events (plain handlers one event at a time), and one commit covers them all before the offsets move.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.consumer_dlq import DeadLetters
from common.consumer_dlq import is_transient as is_transient  # re-exported: what the tests import
from common.consumer_order import Item, subject_ordered_groups
from common.db import Database
from common.dedupe import mark_processed
from common.dedupe import processed_table as processed_table  # re-exported: the services' stores declare it
from common.dedupe import purge_processed as purge_processed
from common.envelope import EnvelopeError, Event
from common.kafka import FETCH_WAIT_MS, IDLE_FETCH_WAIT_MS, new_consumer, set_fetch_wait, stop_quietly
from common.logging import bind_correlation_id, describe_error
from common.poll import hand_off
from common.settings import ServiceSettings
from common.topics import dead_letter_topic

log = structlog.get_logger(__name__)

# After a batch whose commit left no registered worker busy: a bare turn of the loop (0 takes asyncio's no-timer
# path), for another task the commit woke. Was 1 ms before every hand-off: a timer and a wake-up per poll.
_HAND_OFF_S = 0.0
# At most this long the relay's round for the batch's events (its produce request and acknowledgements) holds the
# next poll: a broker that answers slowly or not at all delays the consumer by no more.
_RELAY_SHARE_S = 0.025
# No records for this long: the consumer is idle, and its fetches wait longer at the broker (common.kafka).
_IDLE_AFTER_S = 2.0

Handler = Callable[[AsyncSession, Event], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, Sequence[Event]], Awaitable[None]]
Prepare = Callable[[Sequence[Event]], Awaitable[None]]


class _Stalled(Exception):
    pass


class ConsumerLoop:
    """Consumes `topics`, applies each event once per event id, and commits offsets after the effects.

    `batch_handlers[type]` is called with a poll's fresh events of that type, in their order; `handlers[type]` with
    one event at a time. A type with both uses the batch handler. Events of one subject are applied in their order:
    when grouping by type would reorder them (an erasure before the same lead's receipt), the poll is applied in
    consecutive segments, each grouped by type, so a batch handler may then be called more than once per poll.
    """

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        db: Database,
        processed: Table,
        topics: Sequence[str],
        handlers: Mapping[str, Handler] | None = None,
        batch_handlers: Mapping[str, BatchHandler] | None = None,
        prepare: Prepare | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._db = db
        self._processed = processed
        self._topics = [settings.topic(t) for t in topics]
        self._handlers = dict(handlers or {})
        self._batch_handlers = dict(batch_handlers or {})
        self._prepare = prepare
        self._clock = clock
        self._dead_letters = DeadLetters(settings, settings.topic(dead_letter_topic(settings.service_name)))
        self._stopping = False
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._uncommitted: dict[TopicPartition, int] = {}  # applied, offsets not yet committed (see _commit)
        self._last_commit = 0.0
        self._lag: dict[TopicPartition, int] = {}
        self._lag_check: asyncio.Task[None] | None = None
        self._inflight = 0
        self.last_progress = clock()
        self.running = False

    @property
    def _dlq_producer(self) -> AIOKafkaProducer | None:
        """The dead letters' producer (started by the first dead letter; tests that drive _process stop it)."""
        return self._dead_letters.producer

    # -- health -------------------------------------------------------------------------------------------------

    @property
    def lag(self) -> int:
        """Records waiting: behind the high watermark, plus the batch in hand (a hung handler still counts)."""
        return sum(self._lag.values()) + self._inflight

    def stalled(self) -> bool:
        """True when there is work waiting and nothing has moved for longer than the stall window."""
        idle = self._clock() - self.last_progress
        if not self.running:
            return idle > self._settings.consumer_stall_s
        return self.lag > 0 and idle > self._settings.consumer_stall_s

    def owned_partitions(self, topic: str) -> tuple[frozenset[int], int] | None:
        """The partitions of `topic` this process holds now and the topic's partition count; None while the
        consumer is not running (partition-owned work, such as routing's SLA timers, then takes everything)."""
        client = self._consumer
        if client is None:
            return None
        mine = frozenset(tp.partition for tp in client.assignment() if tp.topic == topic)
        return mine, len(client.partitions_for_topic(topic) or ())

    def health(self) -> dict[str, object]:
        return {
            "running": self.running,
            "lag": self.lag,
            "seconds_since_progress": round(self._clock() - self.last_progress, 1),
            "stalled": self.stalled(),
        }

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until stopped; restarts the Kafka client after broker trouble or a stall."""
        backoff = 0.5
        while not self._stopping:
            consumer = new_consumer(self._settings, [])
            self._consumer = consumer
            try:
                await asyncio.wait_for(consumer.start(), self._settings.kafka_send_timeout_s * 3)
                consumer.subscribe(self._topics, listener=_Listener(self))
                self.running = True
                self.last_progress = self._clock()
                log.info("consumer_started", topics=self._topics, group=self._settings.consumer_group)
                backoff = 0.5
                await self._poll_forever(consumer)
            except _Stalled:
                log.warning("consumer_stalled_restarting", lag=self.lag)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("consumer_kafka_error", error=type(exc).__name__, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:
                log.exception("consumer_error")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                self.running = False
                if self._lag_check is not None:
                    self._lag_check.cancel()
                async with self._lock:
                    with contextlib.suppress(Exception):  # what was applied, so that the next start redoes none
                        await asyncio.wait_for(self._commit(consumer, {}, force=True), 5.0)
                    await stop_quietly(consumer, 10.0)
                self._consumer = None
        await self._dead_letters.stop()

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, and leave the group (SIGTERM drain)."""
        self._stopping = True

    async def _poll_forever(self, consumer: AIOKafkaConsumer) -> None:
        last_lag_check = 0.0
        last_report = last_records = self._clock()
        processed_since_report = 0
        idle = False
        while not self._stopping:
            batches = await consumer.getmany(timeout_ms=200, max_records=self._settings.consumer_batch_size)
            if batches:
                last_records = self._clock()
                if idle:  # before the fetcher builds its next request (it runs after this turn)
                    set_fetch_wait(consumer, FETCH_WAIT_MS)
                    idle = False
                async with self._lock:
                    self._inflight = sum(len(records) for records in batches.values())
                    try:
                        await self._process(consumer, batches)
                    finally:
                        processed_since_report += self._inflight
                        self._inflight = 0
                # The batch's commit woke the relay (and routing's webhook sender); SQLite statements run on this
                # loop without yielding, so a next batch already fetched would hold them off for its whole apply.
                # The workers it handed work to get the loop until their round is done (a fair share); with none
                # busy, one turn lets any other task the commit woke take its step. A fixed 1 ms sleep here cost
                # a timer and a wake-up per poll and, with nothing busy, held the next poll that long.
                if not await hand_off(self._db.engine, _RELAY_SHARE_S):
                    await asyncio.sleep(_HAND_OFF_S)
            elif self._uncommitted:
                async with self._lock:
                    await self._commit(consumer, {})  # idle: what was applied goes once the interval is up
            elif not idle and self._clock() - last_records >= _IDLE_AFTER_S:
                set_fetch_wait(consumer, IDLE_FETCH_WAIT_MS)
                idle = True
            now = self._clock()
            if now - last_lag_check >= 2.0 and (self._lag_check is None or self._lag_check.done()):
                last_lag_check = now
                # A broker round trip or two: asked beside the polls, so no batch waits for it.
                self._lag_check = asyncio.create_task(self._update_lag(consumer), name="consumer-lag")
            if now - last_report >= 30.0:
                log.info("consumer_progress", processed=processed_since_report, lag=self.lag)
                last_report, processed_since_report = now, 0
            if self.stalled():
                raise _Stalled

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag from the broker's end offsets, not the fetcher's cached high watermark, which a wedged fetcher
        (aiokafka #1154) would never update."""
        assigned = list(consumer.assignment())
        if not assigned:
            self._lag = {}
            self.last_progress = self._clock()
            return
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(assigned), 2.0)
        except Exception:
            return  # the broker is unreachable: keep the last figure, the stall clock keeps running
        lag: dict[TopicPartition, int] = {}
        for tp in assigned:
            position = self._positions.get(tp)
            if position is None:
                # Asked once per assignment (then kept): a partition with nothing committed yet would otherwise
                # cost a round trip to the coordinator every lag check; where it has none, the consumer starts
                # from its fetch position (the reset one), known locally.
                with contextlib.suppress(Exception):
                    position = await asyncio.wait_for(consumer.committed(tp), 2.0)
                    if position is None:
                        position = await asyncio.wait_for(consumer.position(tp), 2.0)
            lag[tp] = max(0, ends.get(tp, 0) - (position or 0))
            if position is not None:
                self._positions.setdefault(tp, position)
        self._lag = lag
        if not any(lag.values()):
            self.last_progress = self._clock()  # nothing behind: idle, not stalled
        for topic in {tp.topic for tp in lag}:
            metrics.CONSUMER_LAG.labels(topic=topic).set(sum(v for tp, v in lag.items() if tp.topic == topic))

    # -- processing ---------------------------------------------------------------------------------------------

    async def _process(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        started = time.perf_counter()
        events: list[Item] = []
        for records in batches.values():
            for record in records:
                try:
                    events.append((record, Event.from_record(record.key, record.value, record.headers)))
                except EnvelopeError as exc:
                    await self._dead_letters.send(record, "invalid_envelope", describe_error(exc))
        if events:
            if self._prepare is not None:
                try:
                    await self._prepare([event for _, event in events])
                except Exception:
                    log.exception("consumer_prepare_failed")  # handlers fall back to what they know
            try:
                async with self._db.transaction() as session:
                    await self._apply(session, events)
            except Exception as exc:
                if is_transient(exc):
                    raise  # the database is away: nothing committed, the batch is redelivered after a restart
                # One bad event must not hold the others back: retry them one transaction each.
                log.warning("consumer_batch_failed_retrying_singly", size=len(events))
                for item in events:
                    await self._apply_with_retries(item)
        await self._commit(consumer, batches)
        metrics.CONSUMER_BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _apply(self, session: AsyncSession, items: Sequence[Item]) -> None:
        """Dedupe `items` in one statement, then apply the fresh ones, grouped by type, in the caller's transaction."""
        if len(items) == 1:
            await self._apply_one(session, items[0])
            return
        counts: Counter[tuple[str, str, str]] = Counter()
        wanted: dict[str, Item] = {}
        for record, event in items:
            if event.type not in self._batch_handlers and event.type not in self._handlers:
                counts[(record.topic, event.type, "ignored")] += 1
            elif event.id in wanted:
                counts[(record.topic, event.type, "duplicate")] += 1  # the same id twice in one poll
            else:
                wanted[event.id] = (record, event)
        fresh_ids = await mark_processed(session, self._processed, [event for _, event in wanted.values()])
        fresh: list[Item] = []
        for record, event in wanted.values():
            if event.id in fresh_ids:
                fresh.append((record, event))
                counts[(record.topic, event.type, "ok")] += 1
            else:
                counts[(record.topic, event.type, "duplicate")] += 1
        for segment in subject_ordered_groups(fresh):
            for event_type, group in segment.items():
                batch_handler = self._batch_handlers.get(event_type)
                if batch_handler is not None:
                    bind_correlation_id(group[0][1].correlation_id if len(group) == 1 else None)
                    await batch_handler(session, [event for _, event in group])
                    continue
                handler = self._handlers[event_type]
                for _record, event in group:
                    bind_correlation_id(event.correlation_id)
                    await handler(session, event)
        for (topic, event_type, result), n in counts.items():
            metrics.consumed(topic, event_type, result).inc(n)

    async def _apply_one(self, session: AsyncSession, item: Item) -> None:
        """`_apply` of a one-event poll (the usual poll at a low rate): no tally, no grouping to build."""
        record, event = item
        batch_handler = self._batch_handlers.get(event.type)
        handler = self._handlers.get(event.type) if batch_handler is None else None
        if batch_handler is None and handler is None:
            result = "ignored"
        elif await mark_processed(session, self._processed, [event]):
            bind_correlation_id(event.correlation_id)
            if batch_handler is not None:
                await batch_handler(session, [event])
            else:
                assert handler is not None
                await handler(session, event)
            result = "ok"
        else:
            result = "duplicate"
        metrics.consumed(record.topic, event.type, result).inc()

    async def _apply_with_retries(self, item: Item) -> None:
        record, event = item
        attempts = self._settings.consumer_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                async with self._db.transaction() as session:
                    await self._apply(session, [item])
                return
            except Exception as exc:
                if is_transient(exc):
                    raise
                if attempt == attempts:
                    log.exception("consumer_event_failed", event_id=event.id, event_type=event.type)
                    # The header holds the error's type and a message without values: a SQLAlchemy error's own
                    # text carries the statement's parameters (the lead's name, email, message).
                    await self._dead_letters.send(record, "handler_failed", describe_error(exc)[:500])
                    return
                await asyncio.sleep(self._settings.consumer_retry_backoff_s * 2 ** (attempt - 1))

    async def _commit(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, list[ConsumerRecord]], *, force: bool = False
    ) -> None:
        """Note the applied batch's offsets; commit the pending ones if forced or due (consumer_commit_interval_s)."""
        assigned = consumer.assignment()
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records and tp in assigned}
        now = self._clock()
        if offsets:
            self._uncommitted.update(offsets)
            self._positions.update(offsets)
            self.last_progress = now
        if not self._uncommitted or (not force and now - self._last_commit < self._settings.consumer_commit_interval_s):
            return
        pending = {tp: offset for tp, offset in self._uncommitted.items() if tp in assigned}
        self._uncommitted, self._last_commit = {}, now
        if not pending:
            return
        try:
            await consumer.commit(pending)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partition: the next owner redelivers, and the dedupe table absorbs it.
            log.warning("consumer_commit_failed", error=type(exc).__name__)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Wait for the batch in hand: its offsets are committed before the partitions move.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._loop._lock.acquire(), 30)
            try:  # applied offsets not yet committed go before the partitions move
                if self._loop._consumer is not None:
                    await self._loop._commit(self._loop._consumer, {}, force=True)
            finally:
                self._loop._lock.release()
        for tp in revoked:
            self._loop._positions.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("consumer_partitions_assigned", count=len(assigned))
