"""Outbox rows the broker refuses for good: why (a dead-letter reason), and parking them in outbox_dead."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics

log = structlog.get_logger(__name__)


def certain_refusal(exc: BaseException) -> str | None:
    """A refusal the error alone proves, with no question to the broker (which `refusal` may need to ask)."""
    if isinstance(exc, (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)):
        return "record_too_large"
    if isinstance(exc, (InvalidTopicError, TopicAuthorizationFailedError)):
        return "topic_refused"
    return None


async def refusal(producer: AIOKafkaProducer, topic: str, exc: BaseException, timeout_s: float) -> str | None:
    """Why the broker will never take this record (a dead-letter reason), or None when a retry may succeed."""
    if certain := certain_refusal(exc):
        return certain
    if isinstance(exc, (UnknownTopicOrPartitionError, KafkaTimeoutError, TimeoutError)):
        # The same error when the broker is down: only a broker that answers, without the topic, means gone.
        try:
            cluster = await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
        except Exception:
            return None
        if topic not in cluster.topics():
            return "unknown_topic"
    return None


async def park(session: AsyncSession, dead: Table, refused: Sequence[tuple[Any, str, BaseException]]) -> None:
    """Write the refused rows into the dead-letter table (the caller deletes them from the outbox, same transaction)."""
    now = datetime.now(UTC)
    await session.execute(
        insert(dead),
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
        error = type(exc).__name__
        log.error("outbox_dead_lettered", event_id=row.event_id, topic=row.topic, reason=reason, error=error)
