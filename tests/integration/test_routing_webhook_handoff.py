"""Hand-offs send the body the writer committed, from memory: a change committed before the send still wins.

An erasure (its redaction), a replay or a disabled endpoint committed in this process reaches the running sender
at its commit (the held body is dropped, the table gives the row to a claim); one committed elsewhere clears the
row's lease, so an attempt still carrying the old body cannot settle the delivery, which goes out again as stored.
SQLite and PostgreSQL, real receivers on loopback (the helpers of test_routing_webhooks).
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import orjson
import pytest

from common.db import Database
from common.envelope import Event
from routing.handlers import Router
from routing.webhooks.sender import WebhookSender
from routing.webhooks.service import Webhooks
from tests.integration.test_routing_webhooks import (
    Clock,
    Receiver,
    Reply,
    _delivery_id,
    _enqueue,
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

PERSON = {"email": "erin.private@example.org", "first_name": "Erin", "phone": "+4915112345670"}


async def _erase(db: Database, router: Router, lead_id: str) -> None:
    erased = Event(type="lead.erased", source="/tests", subject=lead_id, data={"lead_id": lead_id})
    async with db.transaction() as session:
        await router.on_erased(session, erased)


async def _status(db: Database, message_id: str) -> tuple[str, int]:
    from routing.store import WebhookDelivery

    async with db.read() as session:
        delivery = await session.get(WebhookDelivery, await _delivery_id(db, message_id))
        assert delivery is not None
        return delivery.status, delivery.attempt_count


def _now() -> datetime:
    return datetime.now(UTC)


async def _one_slot_sender(db: Database, receiver: Receiver, made: list[WebhookSender]) -> tuple[WebhookSender, str]:
    """A running sender with one slot for the receiver's endpoint, the first request held at a gate."""
    settings = _settings(
        webhook_endpoint_concurrency=1, webhook_timeout_s=20, webhook_lease_s=60, webhook_poll_interval_s=0.05
    )
    _endpoint_id, _secret = await _register(db, Webhooks(settings), receiver.url)
    return _sender(made, db, settings, _now), _endpoint_id  # type: ignore[arg-type]  # the real clock


def _bodies(receiver: Receiver, message_id: str) -> list[dict[str, object]]:
    return [orjson.loads(r.body) for r in receiver.requests() if r.headers["webhook-id"] == message_id]


async def test_an_erasure_committed_while_a_handed_off_body_waits_sends_the_redacted_body(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    gate = threading.Event()
    receiver.answer(Reply(gate=gate))
    sender, _ = await _one_slot_sender(db, receiver, senders)
    task = asyncio.create_task(sender.run())
    try:
        await asyncio.sleep(0)
        first, person = _event(), _event(lead=PERSON)
        await _enqueue(db, Clock(datetime.now(UTC)), first)
        await wait_until_async(lambda: receiver.requests(), timeout=10, what="the first delivery, held")
        await _enqueue(db, Clock(datetime.now(UTC)), person)  # handed off: waits for the endpoint's one slot
        await _erase(db, Router(sender._settings), person.subject)
        gate.set()

        async def settled() -> bool:
            return (await _status(db, person.id))[0] == "succeeded"

        await wait_until_async(settled, timeout=10, what="the erased lead's delivery")
    finally:
        gate.set()
        await sender.stop()
        await task
    [sent] = _bodies(receiver, person.id)  # once, and redacted: the body held in memory never went out
    assert sent["data"]["lead"] == {} and not any(v in orjson.dumps(sent).decode() for v in PERSON.values())  # type: ignore[index]
    assert await _status(db, person.id) == ("succeeded", 1)


async def test_a_disabled_endpoint_gets_no_body_that_was_waiting_for_it(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    gate = threading.Event()
    receiver.answer(Reply(gate=gate))
    sender, endpoint_id = await _one_slot_sender(db, receiver, senders)
    task = asyncio.create_task(sender.run())
    try:
        await asyncio.sleep(0)
        first, waiting = _event(), _event()
        await _enqueue(db, Clock(datetime.now(UTC)), first)
        await wait_until_async(lambda: receiver.requests(), timeout=10, what="the first delivery, held")
        await _enqueue(db, Clock(datetime.now(UTC)), waiting)
        async with db.transaction() as session:
            await Webhooks(sender._settings).update_endpoint(session, endpoint_id, enabled=False)
        gate.set()

        async def first_settled() -> bool:
            return (await _status(db, first.id))[0] != "pending"

        await wait_until_async(first_settled, timeout=10, what="the held delivery's record")
    finally:
        gate.set()
        await sender.stop()
        await task
    assert _bodies(receiver, waiting.id) == []
    assert await _status(db, waiting.id) == ("failed", 0)


async def test_an_erasure_committed_elsewhere_mid_attempt_leaves_the_delivery_to_go_out_again_redacted(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    gate = threading.Event()
    receiver.answer(Reply(gate=gate))
    sender, _ = await _one_slot_sender(db, receiver, senders)
    other_process = Database(str(db.engine.url.render_as_string(hide_password=False)))  # its commits: not seen
    task = asyncio.create_task(sender.run())
    try:
        await asyncio.sleep(0)
        person = _event(lead=PERSON)
        await _enqueue(db, Clock(datetime.now(UTC)), person)
        await wait_until_async(lambda: receiver.requests(), timeout=10, what="the delivery, held mid-attempt")
        await _erase(other_process, Router(sender._settings), person.subject)
        gate.set()

        async def resent() -> bool:
            return (await _status(db, person.id))[0] == "succeeded"

        await wait_until_async(resent, timeout=10, what="the redacted body, sent again")
    finally:
        gate.set()
        await sender.stop()
        await task
        await other_process.dispose()
    first, again = _bodies(receiver, person.id)  # under one webhook-id: the receiver keeps the redacted one
    assert first["data"]["lead"] == PERSON  # type: ignore[index]
    assert again["data"]["lead"] == {}  # type: ignore[index]
    assert await _status(db, person.id) == ("succeeded", 2)
