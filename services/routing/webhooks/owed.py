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

Only an owed delivery's answer time is honest: the consumer waited for it, so the loop was free to read the answer
when it came. One not waited for is read after the consumer's next apply, which would make any endpoint look slow;
so those are not timed, and a slow endpoint's hand-off is owed once every `PROBE_EVERY_S` to time it again (a
loopback receiver slow once, at a cold start or a load spike, would otherwise never be waited for again).
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
# A slow endpoint's hand-offs are waited for this often: at most one bound's wait a second for a truly slow one.
PROBE_EVERY_S = 1.0


class OwedDeliveries:
    """Handed-off deliveries not yet answered or dropped (id -> endpoint id), and `idle`, set while none of them
    is owed. Every owed delivery is timed from its hand-off to its answer, per endpoint."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = asyncio.Event()
        self.idle.set()
        self._clock = clock
        self._ids: dict[str, str] = {}  # owed
        self._since: dict[str, tuple[str, float]] = {}  # handed, owed or not: id -> (endpoint id, hand-off time)
        self._answer_s: dict[str, float] = {}  # endpoint id -> running average of hand-off to answer
        self._owed_at: dict[str, float] = {}  # endpoint id -> when a hand-off of it was last owed

    def __len__(self) -> int:
        return len(self._ids)

    def slow(self, endpoint_id: str) -> bool:
        return self._answer_s.get(endpoint_id, 0.0) > OWED_WITHIN_S

    def add(self, handed: Iterable[HandedOff]) -> None:
        """A commit handed these to the sender: a consumer waits for those of prompt endpoints before its next batch."""
        ids, since, owed_at, now = self._ids, self._since, self._owed_at, self._clock()
        for row in handed:
            endpoint_id = row.endpoint_id
            since[row.id] = (endpoint_id, now)
            # A slow endpoint's probe owes its whole hand-off: the first row due sets owed_at to now for the rest.
            if not self.slow(endpoint_id) or now - owed_at.get(endpoint_id, now - PROBE_EVERY_S) >= PROBE_EVERY_S:
                ids[row.id] = endpoint_id
                owed_at[endpoint_id] = now
            elif owed_at[endpoint_id] == now:
                ids[row.id] = endpoint_id
        if ids:
            self.idle.clear()

    def done(self, delivery_id: str, *, answered: bool = False) -> None:
        """Answered (an owed one's time counts toward its endpoint's average), or dropped: nothing left to send for
        it here (a delivery never handed is a no-op)."""
        handed = self._since.pop(delivery_id, None)
        ids = self._ids
        owed = bool(ids) and ids.pop(delivery_id, None) is not None
        if handed is not None and answered and owed:
            endpoint_id, at = handed
            took = self._clock() - at
            average = self._answer_s.get(endpoint_id)
            if average is None or (average > OWED_WITHIN_S >= took):
                self._answer_s[endpoint_id] = took  # the first answer, or a slow endpoint's probe answered promptly
            else:
                self._answer_s[endpoint_id] = average + _WEIGHT * (took - average)
        if owed and not ids:
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
