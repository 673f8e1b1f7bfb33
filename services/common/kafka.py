"""Kafka clients built the same way in every service: durable producers, deliberate consumers, explicit topics."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from common.settings import ServiceSettings
from common.topics import topic_configs

log = structlog.get_logger(__name__)

_BATCH_BYTES = 512 * 1024  # per partition and request (see new_producer)
# The broker's long poll per fetch while records flow (see new_consumer), and once a consumer has been idle a while.
FETCH_WAIT_MS = 100
IDLE_FETCH_WAIT_MS = 1_000


def security_options(settings: ServiceSettings) -> dict[str, Any]:
    """The TLS and SASL keyword arguments every client (producer, consumer, admin) takes; none for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}  # aiokafka's own defaults, exactly as before security was configurable
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        key_password = settings.kafka_ssl_key_password
        context = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=key_password.get_secret_value() if key_password is not None else None,
        )
        # Off only for brokers reached by an address their certificate does not name (e.g. an IP in a lab);
        # the chain is still verified.
        context.check_hostname = settings.kafka_ssl_check_hostname
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        # aiokafka takes SCRAM credentials under the same `sasl_plain_*` names as PLAIN ones.
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's Utils.murmur2, which aiokafka's partitioner copies) in half the CPU: the
    key's 4-byte words unpacked at once, no mask an operation cannot need. A test holds it equal to aiokafka's."""
    length = len(data)
    words = length >> 2
    unpack = _WORDS.get(words)
    if unpack is None:
        unpack = _WORDS[words] = struct.Struct(f"<{words}I").unpack_from
    h = 0x9747B28C ^ length
    for k in unpack(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        end = length - tail
        if tail == 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


class Murmur2Partitioner:
    """aiokafka's DefaultPartitioner, partition for partition: a key's murmur2 as Java clients and Kafka's tools
    compute it (they must agree on where a lead's events are), a random available partition for no key."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


def new_producer(settings: ServiceSettings) -> AIOKafkaProducer:
    """acks=all and idempotence: aiokafka's defaults (acks=1, no idempotence) can lose or duplicate on failover."""
    return AIOKafkaProducer(
        **security_options(settings),
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"handoff-{settings.service_name}",
        acks="all",
        enable_idempotence=True,
        # No linger: send() only appends to a batch (it does not yield to the event loop), so a relay's whole round
        # is appended before the sender task can run and leaves in one request; while a request is in flight, the
        # next rows gather for the one after. A linger would only add a timer a busy loop may serve late.
        linger_ms=0,
        # A partition's batch holds a whole relay round (500 rows of ~2 KB): aiokafka sends one request per broker
        # at a time, and send() waits when a partition's batch is full until the sender drained it, i.e. until the
        # request before it was answered, which a busy consumer loop serves late: at the default 16 KB (~8 rows) a
        # round of 60 rows took several polls' worth of round trips and lead.assigned lagged seconds at 450/s.
        # Below the broker's 1 MB message.max.bytes (a batch is one message to it); memory grows only as filled.
        max_batch_size=_BATCH_BYTES,
        compression_type=None,
        request_timeout_ms=int(settings.kafka_send_timeout_s * 1000),
        retry_backoff_ms=100,
        partitioner=Murmur2Partitioner(),
    )


class PartitionBatches:
    """A round of records in one aiokafka batch per topic partition (producer.create_batch/send_batch): one delivery
    future per partition instead of one per record, and the record's partition is the one send() would choose (the
    producer's own partitioner over the same partition list), so a key's records keep their partition and order.

    A topic's partitions must be `known` (from the producer's metadata) or `learn`ed before its records are added."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitioner = producer._partitioner
        self._cluster = producer.client.cluster
        self._max_request_size: int = producer._max_request_size
        self._estimate = DefaultRecordBatchBuilder.estimate_size_in_bytes
        self._partitions: dict[str, tuple[list[int], list[int]]] = {}
        self._open: dict[tuple[str, int], tuple[BatchBuilder, list[Any]]] = {}
        # (topic, partition, batch, the items it holds), a partition's batches in the order their records came.
        self.batches: list[tuple[str, int, BatchBuilder, list[Any]]] = []

    def known(self, topic: str) -> bool:
        """Whether the producer's metadata names the topic's partitions (else: producer.partitions_for first)."""
        if topic in self._partitions:
            return True
        partitions = self._cluster.partitions_for_topic(topic)
        if not partitions:
            return False
        # The same lists send() hands the partitioner (a set of small ints iterates in order, as Java's list does).
        available = list(self._cluster.available_partitions_for_topic(topic) or ())
        self._partitions[topic] = (list(partitions), available)
        return True

    async def learn(self, topics: Iterable[str]) -> dict[str, BaseException]:
        """The topics whose partitions the producer cannot learn, with the error; the metadata of those it does not
        know yet is awaited all at once (for a topic that does not exist, that takes the producer's request timeout)."""
        missing = [topic for topic in topics if not self.known(topic)]
        if not missing:
            return {}
        found = await asyncio.gather(*(self._producer.partitions_for(t) for t in missing), return_exceptions=True)
        blocked: dict[str, BaseException] = {}
        for topic, result in zip(missing, found, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, (KafkaError, TimeoutError)):
                raise result
            if isinstance(result, BaseException) or not self.known(topic):
                blocked[topic] = result if isinstance(result, BaseException) else UnknownTopicOrPartitionError(topic)
        return blocked

    def add(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], item: Any) -> None:
        """Append one record (its partition's batch full: to a new one); `item` comes back with its batch."""
        if (size := self._estimate(key, value, headers)) > self._max_request_size:
            # What send() refuses before any request (a batch would take it and the broker refuse the batch).
            raise MessageSizeTooLargeError(f"The message is {size} bytes when serialized, over max_request_size")
        all_partitions, available = self._partitions[topic]
        partition = self._partitioner(key, all_partitions, available)
        current = self._open.get((topic, partition))
        if current is None or current[0].append(timestamp=None, key=key, value=value, headers=headers) is None:
            builder = self._producer.create_batch()
            builder.append(timestamp=None, key=key, value=value, headers=headers)  # a batch takes its first record
            current = self._open[topic, partition] = (builder, [])
            self.batches.append((topic, partition, builder, current[1]))
        current[1].append(item)


class RequestsTaken:
    """Calls `callback` once the producer's sender has taken every batch `note`d (after `send_batch`) into a produce
    request, which it writes to the socket on its next step (the callback runs in the loop turn before that step).

    A batch is taken when aiokafka's MessageBatch.drain_ready runs; the batch is read from the accumulator's queue,
    which has no public accessor (a test checks it is there). A batch that cannot be watched: no callback at all
    (the caller then knows only when the deliveries are acknowledged)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._untaken = 1  # held until `noted_all`
        self._blind = False

    def note(self, producer: AIOKafkaProducer, topic: str, partition: int) -> None:
        """The batch `send_batch` just queued for the partition (the last in its queue: nothing yielded since)."""
        queued = getattr(getattr(producer, "_message_accumulator", None), "_batches", None)
        pending = queued.get(TopicPartition(topic, partition)) if isinstance(queued, dict) else None
        waiter = getattr(pending[-1], "_drain_waiter", None) if pending else None
        if isinstance(waiter, asyncio.Future):
            self._untaken += 1
            waiter.add_done_callback(self._taken)
        else:
            self._blind = True

    def noted_all(self) -> None:
        self._taken(None)

    def _taken(self, _done: object) -> None:
        self._untaken -= 1
        if not self._untaken and not self._blind:
            self._callback()


def new_consumer(settings: ServiceSettings, topics: Iterable[str]) -> AIOKafkaConsumer:
    """Manual commits only; a new group starts from the earliest offset so no backlog is ever skipped."""
    return AIOKafkaConsumer(
        *topics,
        **security_options(settings),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        client_id=f"handoff-{settings.service_name}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        # The broker answers as soon as one byte is there. But aiokafka sends a node no new fetch while one is in
        # flight, so a partition whose records were just taken waits for the others' long poll: this bounds that
        # wait (latency per hop), at the price of ten idle polls a second per consumer (broker CPU).
        fetch_max_wait_ms=FETCH_WAIT_MS,
        max_poll_records=settings.consumer_batch_size,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        max_poll_interval_ms=300_000,
        # Notice new partitions and leader moves within seconds rather than the default five minutes.
        metadata_max_age_ms=15_000,
    )


def set_fetch_wait(consumer: AIOKafkaConsumer, ms: int) -> None:
    """The long poll of the consumer's next fetch requests (aiokafka's fetcher reads it per request; there is no
    public setter, and a test checks the attribute is there). An idle consumer buffers nothing, so each broker's one
    fetch in flight names all its partitions and is answered as soon as a record arrives in any: a long wait then
    adds no latency, it only saves the empty fetches (ten a second per consumer at 100 ms, broker and service CPU).
    Once records flow again the short wait comes back before the next fetch is built."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
        fetcher._fetch_max_wait_ms = ms


async def stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer | None, within_s: float = 5.0) -> None:
    """stop() can hang while the broker is down (aiokafka #773, #1101): bound it and move on."""
    if client is None:
        return
    try:
        await asyncio.wait_for(client.stop(), within_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("kafka_client_stop_failed", error=type(exc).__name__)


def new_admin(settings: ServiceSettings) -> AIOKafkaAdminClient:
    """An admin client for creating and describing topics, secured like the other clients."""
    return AIOKafkaAdminClient(
        **security_options(settings), bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000
    )


async def ensure_topics(settings: ServiceSettings, names: Iterable[str]) -> None:
    """Create the topics this service needs if they are missing; safe to run from every process at once."""
    admin = new_admin(settings)
    await admin.start()
    try:
        plain = {settings.topic(name): name for name in names}
        wanted = sorted(plain)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                # Retention is set at creation only: a topic that exists keeps what its operator configured.
                topic_configs=topic_configs(
                    plain[name],
                    leads_days=settings.leads_topic_retention_days,
                    dead_letter_days=settings.dead_letter_retention_days,
                ),
            )
            for name in wanted
            if name not in existing
        ]
        if missing:
            # Another process may create one between our list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("kafka_topics_created", topics=[t.name for t in missing])
        # A consumer that subscribes before every partition has a leader is assigned without them and would not
        # see the topic until its next metadata refresh (minutes): wait until the broker serves them all.
        deadline = asyncio.get_running_loop().time() + 30
        while not await _all_led(admin, wanted):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics have no leaders yet: {wanted}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _all_led(admin: AIOKafkaAdminClient, topics: list[str]) -> bool:
    described = await admin.describe_topics(topics)
    if len(described) != len(topics):
        return False
    for topic in described:
        if topic.get("error_code", 0) != 0 or not topic.get("partitions"):
            return False
        if any(p.get("leader", -1) < 0 for p in topic["partitions"]):
            return False
    return True
