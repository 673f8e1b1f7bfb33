"""A hand-off is sent with its endpoint as the writing transaction read it (SQLite, when taken at once), so an
endpoint changed later in that same transaction must not be sent as it was before the change: the new secret
signs, the new address receives. SQLite and PostgreSQL, real receivers on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from common.db import Database
from routing.webhooks.sender import WebhookSender
from routing.webhooks.service import Webhooks, enqueue_deliveries
from tests.integration.test_routing_webhooks import (
    Clock,
    Receiver,
    _delivery,
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


async def _sent_by_running_sender(db: Database, sender: WebhookSender, write: object) -> None:
    """Run the sender, commit `write(session)` (it enqueues), wait until the delivery settled."""
    task = asyncio.create_task(sender.run())
    try:
        await asyncio.sleep(0)  # the sender takes hand-offs from here on
        async with db.transaction() as session:
            await write(session)  # type: ignore[operator]

        async def settled() -> bool:
            return (await _delivery(db)).status == "succeeded"

        await wait_until_async(settled, timeout=10, what="the handed-off delivery")
    finally:
        await sender.stop()
        await task


async def test_a_secret_rotated_after_the_enqueue_in_the_same_transaction_signs_the_delivery(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    settings = _settings(webhook_poll_interval_s=3600, webhook_secret_overlap_hours=24)
    service = Webhooks(settings)
    endpoint_id, old = await _register(db, service, receiver.url)
    rotated: list[str] = []

    async def write(session: object) -> None:
        await enqueue_deliveries(session, [_event()], datetime.now(UTC))  # type: ignore[arg-type]
        _, new = await service.rotate_secret(session, endpoint_id)  # type: ignore[arg-type]
        rotated.append(new)

    await _sent_by_running_sender(db, _sender(senders, db, settings, Clock(datetime.now(UTC))), write)
    [request] = receiver.requests()
    assert len(request.headers["webhook-signature"].split(" ")) == 2  # the overlap: both secrets sign
    request.verify(rotated[0])
    request.verify(old)


async def test_an_address_changed_after_the_enqueue_in_the_same_transaction_gets_the_delivery(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    moved = Receiver()
    try:
        settings = _settings(webhook_poll_interval_s=3600)
        service = Webhooks(settings)
        endpoint_id, secret = await _register(db, service, receiver.url)
        destination = await service.vet_url(moved.url)
        event = _event()

        async def write(session: object) -> None:
            await enqueue_deliveries(session, [event], datetime.now(UTC))  # type: ignore[arg-type]
            await service.update_endpoint(session, endpoint_id, url=destination)  # type: ignore[arg-type]

        await _sent_by_running_sender(db, _sender(senders, db, settings, Clock(datetime.now(UTC))), write)
        assert receiver.requests() == []
        [request] = moved.requests()
        assert request.headers["webhook-id"] == event.id
        request.verify(secret)
    finally:
        moved.stop()
