"""The sender's slots: bounded concurrency in all and per endpoint, and a fair turn for claims waiting on a slot.

Pure bookkeeping, no I/O. At most `total` attempts are in flight, at most `per_endpoint` of them to one endpoint.
Claims handed off in memory wait in one queue per endpoint and are started round-robin across endpoints, so one
slow receiver's backlog waits behind its own slots and never holds the others'. A waiting claim whose lease would
run out before an attempt could finish is dropped: the table still holds it, and a claim query takes it later.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from routing.webhooks.claims import Claim


class FairScheduler:
    """Counts attempts in flight by endpoint and hands out waiting claims in round-robin order."""

    def __init__(self, total: int, per_endpoint: int, on_drop: Callable[[str], None] | None = None) -> None:
        self.total = total
        self._on_drop = on_drop  # told the id of each claim dropped for its lease
        self.per_endpoint = per_endpoint
        self.in_flight: Counter[str] = Counter()
        self._running = 0
        self._waiting: OrderedDict[str, deque[Claim]] = OrderedDict()
        self._waiting_count = 0

    @property
    def free(self) -> int:
        return self.total - self._running if self._running < self.total else 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting_count

    def held(self) -> Counter[str]:
        """Claims held by endpoint, in flight and waiting: what a claim query counts against an endpoint's share."""
        held = Counter(self.in_flight)
        for endpoint_id, queue in self._waiting.items():
            held[endpoint_id] += len(queue)
        return held

    def wait(self, claim: Claim) -> None:
        """Queue a claim (handed off in memory) for its endpoint's next free slot."""
        self._waiting.setdefault(claim.endpoint_id, deque()).append(claim)
        self._waiting_count += 1

    def ready(self, now: datetime, attempt_s: float) -> Iterator[Claim]:
        """Waiting claims that may start now, one endpoint after another; each is counted as started."""
        while (claim := self.take(now, attempt_s)) is not None:
            yield claim

    def take(self, now: datetime, attempt_s: float) -> Claim | None:
        """The next waiting claim that may start now, in round-robin order across endpoints, counted as started;
        None when no slot is free or every endpoint with waiting claims is at its limit."""
        waiting = self._waiting
        if self._running >= self.total or not waiting:
            return None
        deadline = now + timedelta(seconds=attempt_s)
        in_flight, per_endpoint = self.in_flight, self.per_endpoint
        dropped = True
        while dropped and waiting:
            dropped = False
            for endpoint_id in list(waiting):
                if in_flight[endpoint_id] >= per_endpoint:
                    continue
                queue = waiting[endpoint_id]
                claim = queue.popleft()
                self._waiting_count -= 1
                if not queue:
                    del waiting[endpoint_id]
                else:
                    waiting.move_to_end(endpoint_id)  # the next turn goes to another endpoint
                if claim.lease_until is not None and deadline >= claim.lease_until:
                    dropped = True
                    if self._on_drop is not None:
                        self._on_drop(claim.delivery_id)
                    continue  # its lease would end mid-attempt: left to the table
                in_flight[endpoint_id] += 1
                self._running += 1
                return claim
        return None

    def started(self, claim: Claim) -> None:
        self.in_flight[claim.endpoint_id] += 1
        self._running += 1

    def finished(self, claim: Claim) -> None:
        self._running -= 1
        self.in_flight[claim.endpoint_id] -= 1
        if self.in_flight[claim.endpoint_id] <= 0:
            del self.in_flight[claim.endpoint_id]

    def drop_waiting(self, delivery_ids: set[str], endpoint_ids: set[str]) -> None:
        """Forget the waiting claims of these deliveries or endpoints (changed since they were handed off)."""
        for endpoint_id in list(self._waiting):
            queue = self._waiting[endpoint_id]
            kept = deque(
                claim for claim in queue if endpoint_id not in endpoint_ids and claim.delivery_id not in delivery_ids
            )
            self._waiting_count -= len(queue) - len(kept)
            if kept:
                self._waiting[endpoint_id] = kept
            else:
                del self._waiting[endpoint_id]

    def clear_waiting(self) -> None:
        """Forget the waiting claims (stopping): their leases run out and the table gives them to a sender."""
        self._waiting.clear()
        self._waiting_count = 0
