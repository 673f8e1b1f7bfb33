"""What commits handed the sender and it has not yet sent: its `idle` signal for the consumer's `hand_off`.

A consumer on routing's database gives the workers registered with `common.poll.share_loop` the event loop after
each batch until their `idle` event is set (at most the consumer's bound). SQLite's statements hold the loop, so
without that share a batch's webhooks waited for the next batch's whole apply before they went out, and near
saturation the sender trailed lead.assigned by a second. A delivery handed to the sender at a commit is owed until
its attempt is answered (it has then reached the receiver) or it is dropped (revoked, its endpoint disabled, its
lease too short to start it, a failed read). Deliveries claimed from the table (retries, a backlog) are never owed:
no consumer waits for a receiver's retry.

Nor for a slow receiver: a sales tool across the internet answers in tens or hundreds of milliseconds, and waiting
for it would add the whole bound to every batch while the loop sits idle. The share is for getting the requests out,
which takes the loop; the answer takes the receiver. So an endpoint whose deliveries are answered, on average, later
than `OWED_WITHIN_S` after their hand-off is not waited for (its deliveries still go out as before, in turn).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Set

from routing.webhooks.store import HandedOff

# Just under the consumer's bound on the share (common.consumer): waiting for a receiver slower than that would
# only ever end at the bound. A loopback or same-rack receiver answers well within it; an internet one does not.
OWED_WITHIN_S = 0.020
_WEIGHT = 0.2  # of the newest answer time in an endpoint's running average


class OwedDeliveries:
    """Handed-off deliveries not yet answered or dropped (id -> endpoint id), and `idle`, set while none of them
    is owed. Every handed delivery is timed from its hand-off to its answer, per endpoint."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = asyncio.Event()
        self.idle.set()
        self._clock = clock
        self._ids: dict[str, str] = {}  # owed
        self._since: dict[str, tuple[str, float]] = {}  # handed, owed or not: id -> (endpoint id, hand-off time)
        self._answer_s: dict[str, float] = {}  # endpoint id -> running average of hand-off to answer

    def __len__(self) -> int:
        return len(self._ids)

    def slow(self, endpoint_id: str) -> bool:
        return self._answer_s.get(endpoint_id, 0.0) > OWED_WITHIN_S

    def add(self, handed: Iterable[HandedOff]) -> None:
        """A commit handed these to the sender: a consumer waits for those of prompt endpoints before its next batch."""
        ids, since, now = self._ids, self._since, self._clock()
        for row in handed:
            since[row.id] = (row.endpoint_id, now)
            if not self.slow(row.endpoint_id):
                ids[row.id] = row.endpoint_id
        if ids:
            self.idle.clear()

    def done(self, delivery_id: str, *, answered: bool = False) -> None:
        """Answered (its time counts toward its endpoint's average), or dropped: nothing left to send for it here
        (a delivery never handed is a no-op)."""
        handed = self._since.pop(delivery_id, None)
        if handed is not None and answered:
            endpoint_id, at = handed
            took = self._clock() - at
            average = self._answer_s.get(endpoint_id)
            self._answer_s[endpoint_id] = took if average is None else average + _WEIGHT * (took - average)
        ids = self._ids
        if ids:
            ids.pop(delivery_id, None)
            if not ids:
                self.idle.set()

    def revoke(self, delivery_ids: Set[str], endpoint_ids: Set[str]) -> None:
        """Changed by a commit (redacted, replayed, their endpoint disabled): no longer owed."""
        if not (delivery_ids or endpoint_ids):
            return
        for delivery_id, (endpoint_id, _) in list(self._since.items()):
            if delivery_id in delivery_ids or endpoint_id in endpoint_ids:
                del self._since[delivery_id]
                self._ids.pop(delivery_id, None)
        if not self._ids:
            self.idle.set()

    def settle(self, in_flight: int) -> None:
        """Nothing handed over waits to start: only attempts in flight (`in_flight` of them) can still be owed. More
        handed than that were dropped where no one noted it: forget them all, or every later batch would wait."""
        if len(self._since) > in_flight:
            self.clear()

    def clear(self) -> None:
        self._ids.clear()
        self._since.clear()
        self.idle.set()
