"""The webhook sender's share of a busy consumer's event loop.

Routing's consumer applies a poll with SQLite statements that hold the event loop; its commit hands the poll's
webhooks to the sender in memory. The consumer then leaves the loop to the sender until those webhooks are
answered (`common.poll.hand_off`), so they reach the receiver before the next poll's apply starts, even when that
poll is already fetched and the deliveries need several rounds of the endpoint's slots. Before, the sender got
only a moment's yield: each step of its work (the endpoints' read, the request, the answer) waited a whole apply,
and near saturation the webhook trailed lead.assigned by a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncSession

from common import consumer as consumer_module
from common.consumer import ConsumerLoop
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from routing.app import MIGRATIONS
from routing.store import Base, processed
from routing.webhooks import WebhookSender, enqueue_deliveries
from routing.webhooks import owed as owed_module
from routing.webhooks.service import Webhooks
from tests.integration.test_consumer_relay_share import _PolledConsumer
from tests.integration.test_routing_webhooks import Receiver, _event, _register, _settings, receiver

pytestmark = pytest.mark.integration
__all__ = ["receiver"]  # fixture

_POLLS = 3
_PER_POLL = 5  # more than the endpoint's slots: the poll's webhooks need several rounds of answers


async def test_a_polls_webhooks_reach_the_receiver_before_the_next_poll_is_applied(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No moment's yield after a batch (a loaded machine may give the sender no more than that either), and a bound
    # on the share generous enough that a slow machine cannot turn into a failure.
    monkeypatch.setattr(consumer_module, "_HAND_OFF_S", 0)
    monkeypatch.setattr(consumer_module, "_RELAY_SHARE_S", 30.0)
    monkeypatch.setattr(owed_module, "OWED_WITHIN_S", 30.0)  # nor may its answers count as a slow receiver's
    url = f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}"
    settings = _settings(database_url=url, webhook_endpoint_concurrency=2, webhook_timeout_s=10, webhook_lease_s=60)
    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)
    db = Database(url)
    await _register(db, Webhooks(settings), receiver.url)
    received_at_apply: list[int] = []

    async def handle(session: AsyncSession, events: Sequence[Event]) -> None:
        received_at_apply.append(len(receiver.requests()))
        assigned = [_event() for _ in range(_PER_POLL)]
        await enqueue_deliveries(session, assigned, datetime.now(UTC))
        time.sleep(0.1)  # the apply's statements: they hold the event loop, as the inline SQLite driver does

    tp = TopicPartition("t.in.v1", 0)
    polls = []
    for i in range(_POLLS):
        e = Event(type="lead.scored", source="/tests", subject=f"lead-{i}", data={})
        polls.append({tp: [ConsumerRecord(tp.topic, 0, i, 0, 0, e.key(), e.value(), None, 0, 0, e.headers())]})
    loop = ConsumerLoop(
        settings=settings, db=db, processed=processed, topics=["in.v1"], batch_handlers={"lead.scored": handle}
    )
    sender = WebhookSender(db, settings)
    sending = asyncio.create_task(sender.run())
    await asyncio.sleep(0)  # the sender takes hand-offs from its first step on
    consuming = asyncio.create_task(loop._poll_forever(_PolledConsumer(polls)))
    try:
        async with asyncio.timeout(30):
            while len(received_at_apply) < _POLLS or len(receiver.requests()) < _POLLS * _PER_POLL:
                await asyncio.sleep(0.05)
    finally:
        await loop.stop()
        await consuming
        await sender.stop()
        await sending
        await db.dispose()
    # Each poll's apply began only after every earlier poll's webhooks had reached the receiver.
    assert received_at_apply == [n * _PER_POLL for n in range(_POLLS)]
    assert len({r.headers["webhook-id"] for r in receiver.requests()}) == _POLLS * _PER_POLL  # each once
