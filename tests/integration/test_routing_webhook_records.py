"""On SQLite, answered attempts are recorded in the next transaction that queues deliveries (routing's poll) instead
of a transaction of their own; one that rolls back gives them back to the sender's own record, and nothing is sent
twice. The recorder's own linger is set far beyond the test's wait, so only a rider can settle the delivery in time.
SQLite (PostgreSQL keeps its own record transactions), a real receiver on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.db import Database
from routing.webhooks import recorder
from routing.webhooks.sender import WebhookSender
from routing.webhooks.service import Webhooks, enqueue_deliveries
from tests.integration.test_routing_webhooks import (
    Receiver,
    _delivery,
    _endpoint,
    _event,
    _register,
    _sender,
    _settings,
    db,
    receiver,
    senders,
)
from tests.support.stack import wait_until_async

pytestmark = pytest.mark.integration
__all__ = ["db", "receiver", "senders"]  # fixtures


class Rollback(Exception):
    pass


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (the shared `db` fixture takes it from here): PostgreSQL keeps its own record transactions."""
    return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
async def running(
    db: Database, receiver: Receiver, senders: list[WebhookSender], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[WebhookSender, str]]:
    """A running sender whose own record transaction would wait a minute, and an endpoint for lead.assigned."""
    monkeypatch.setattr(recorder, "LINGER_S", 60.0)
    settings = _settings(webhook_poll_interval_s=3600, webhook_lease_s=60)
    endpoint_id, _secret = await _register(db, Webhooks(settings), receiver.url, ["lead.assigned"])
    sender = _sender(senders, db, settings, lambda: datetime.now(UTC))  # type: ignore[arg-type]  # the real clock
    task = asyncio.create_task(sender.run())
    await asyncio.sleep(0)  # the sender takes hand-offs from here on
    try:
        yield sender, endpoint_id
    finally:
        await sender.stop()
        await task


async def test_an_answered_attempt_is_recorded_by_the_next_transaction_that_queues_deliveries(
    db: Database, receiver: Receiver, running: tuple[WebhookSender, str]
) -> None:
    _sender, endpoint_id = running
    async with db.transaction() as session:
        await enqueue_deliveries(session, [_event()], datetime.now(UTC))

    async def settled_by_a_writer() -> bool:
        async with db.transaction() as session:  # queues nothing: the endpoint does not take this type
            await enqueue_deliveries(session, [_event("lead.reassigned")], datetime.now(UTC))
        return (await _delivery(db)).status == "succeeded"

    await wait_until_async(settled_by_a_writer, timeout=10, what="the delivery settled by a writer's transaction")
    delivery = await _delivery(db)
    assert delivery.attempt_count == 1
    assert delivery.lease_token is None
    assert delivery.delivered_at is not None
    assert (await _endpoint(db, endpoint_id)).last_success_at is not None
    assert len(receiver.requests()) == 1


async def test_a_writer_that_rolls_back_gives_the_record_back_and_nothing_is_sent_twice(
    db: Database, receiver: Receiver, running: tuple[WebhookSender, str]
) -> None:
    async with db.transaction() as session:
        await enqueue_deliveries(session, [_event()], datetime.now(UTC))

    async def settled_after_a_rollback() -> bool:
        with pytest.raises(Rollback):
            async with db.transaction() as session:
                await enqueue_deliveries(session, [_event()], datetime.now(UTC))
                raise Rollback
        await asyncio.sleep(0.05)  # a record given back goes out in the sender's own transaction at once
        return (await _delivery(db)).status == "succeeded"

    await wait_until_async(settled_after_a_rollback, timeout=10, what="the record given back by a rolled-back writer")
    await asyncio.sleep(0.3)
    delivery = await _delivery(db)
    assert (delivery.status, delivery.attempt_count) == ("succeeded", 1)
    assert len(receiver.requests()) == 1  # the rolled-back transactions' deliveries never existed
