"""The consumers' dead letters: a record that can never succeed is parked on the service's dead-letter topic."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from common import metrics
from common.kafka import new_producer, stop_quietly
from common.settings import ServiceSettings

log = structlog.get_logger(__name__)


class DeadLetters:
    """Sends records to `topic` with why and where from in headers; its producer starts on first use."""

    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self.producer: AIOKafkaProducer | None = None

    async def send(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        """Park a record so the partition moves on; raises if the broker is unreachable."""
        if self.producer is None:
            producer = new_producer(self._settings)
            await asyncio.wait_for(producer.start(), self._settings.kafka_send_timeout_s)
            self.producer = producer
        headers = [
            *(record.headers or []),
            ("dlq_reason", reason.encode()),
            ("dlq_error", detail.encode("utf-8", "replace")),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_consumer", self._settings.consumer_group.encode()),
        ]
        try:
            await asyncio.wait_for(
                self.producer.send_and_wait(self._topic, value=record.value, key=record.key, headers=headers),
                self._settings.kafka_send_timeout_s,
            )
        except BaseException:
            await stop_quietly(self.producer)
            self.producer = None
            raise
        metrics.DEAD_LETTERS.labels(topic=record.topic, reason=reason).inc()
        log.warning("consumer_dead_lettered", topic=record.topic, offset=record.offset, reason=reason)

    async def stop(self) -> None:
        await stop_quietly(self.producer)
        self.producer = None


def is_transient(exc: BaseException) -> bool:
    """Infrastructure trouble (the database restarting, a dropped connection): retry later, never dead-letter."""
    if isinstance(exc, (OperationalError, InterfaceError, OSError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        text = str(exc.orig).lower() if exc.orig is not None else ""
        return any(
            marker in text
            for marker in ("shutting down", "connection", "terminating", "starting up", "recovery", "timeout")
        )
    return False
