"""What commits handed the sender and it has not yet sent: its `idle` signal for the consumer's `hand_off`.

A consumer on routing's database gives the workers registered with `common.poll.share_loop` the event loop after
each batch until their `idle` event is set (at most the consumer's bound). SQLite's statements hold the loop, so
without that share a batch's webhooks waited for the next batch's whole apply before they went out, and near
saturation the sender trailed lead.assigned by a second. A delivery handed to the sender at a commit is owed until
its attempt is answered (it has then reached the receiver) or it is dropped (revoked, its endpoint disabled, its
lease too short to start it, a failed read). Deliveries claimed from the table (retries, a backlog) are never owed:
no consumer waits for a receiver's retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Set

from routing.webhooks.store import HandedOff


class OwedDeliveries:
    """Handed-off deliveries not yet answered or dropped (id -> endpoint id), and `idle`, set while there are none."""

    def __init__(self) -> None:
        self.idle = asyncio.Event()
        self.idle.set()
        self._ids: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, handed: Iterable[HandedOff]) -> None:
        """A commit handed these to the sender: a consumer waits for them before its next batch."""
        ids = self._ids
        for row in handed:
            ids[row.id] = row.endpoint_id
        if ids:
            self.idle.clear()

    def done(self, delivery_id: str) -> None:
        """Answered, or dropped: nothing left to send for it here (a delivery never owed is a no-op)."""
        ids = self._ids
        if ids:
            ids.pop(delivery_id, None)
            if not ids:
                self.idle.set()

    def revoke(self, delivery_ids: Set[str], endpoint_ids: Set[str]) -> None:
        """Changed by a commit (redacted, replayed, their endpoint disabled): no longer owed."""
        ids = self._ids
        if ids and (delivery_ids or endpoint_ids):
            for delivery_id, endpoint_id in list(ids.items()):
                if delivery_id in delivery_ids or endpoint_id in endpoint_ids:
                    del ids[delivery_id]
            if not ids:
                self.idle.set()

    def settle(self, in_flight: int) -> None:
        """Nothing handed over waits to start: only attempts in flight (`in_flight` of them) can still be owed. More
        owed than that were dropped where no one noted it: forget them all, or every later batch would wait."""
        if len(self._ids) > in_flight:
            self.clear()

    def clear(self) -> None:
        self._ids.clear()
        self.idle.set()
