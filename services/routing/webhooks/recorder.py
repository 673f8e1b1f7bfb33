"""The attempt record: what each attempt answered, what comes next for its delivery, the endpoint's health.

Attempts that finish together share one transaction (group commit): each `record` returns once the transaction
holding its attempt has committed, and raises if that transaction failed (the lease then runs out and the delivery
is tried again: at least once). The sender's workers `add` instead (no future per attempt): a failed transaction
is logged here, and `flush` waits for everything added so far. Successes, the common case, take three Core
statements per batch (`send_store`); failures go through the ORM, which schedules the retry (`retry`) and may
disable the endpoint.

On SQLite the added successes ride in the next transaction that queues deliveries (routing's poll, `record_into`):
its COMMIT, which comes anyway, makes them durable, instead of a transaction of their own (an fsync and a turn of
the one writer the consumer waits for). Until that commit they are held as before, within their leases: a crash
sends them again under the same webhook-id (at least once); a rollback gives them back to the recorder's own
transaction, and no rider takes any until that transaction has run (a record that failed a poll fails no second).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from common.db import Database
from routing.settings import RoutingSettings
from routing.store import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from routing.webhooks.claims import Claim
from routing.webhooks.outcome import AttemptOutcome
from routing.webhooks.retry import retry_delay
from routing.webhooks.send_store import SendStore
from routing.webhooks.service import FAILURES, disable_endpoint, iso
from routing.webhooks.store import FAILED, PENDING, WebhookStore

log = structlog.get_logger(__name__)

ATTEMPTS = Counter("handoff_webhook_attempts_total", "Webhook delivery attempts", ["result"])
DELIVERY_SECONDS = Histogram(
    "handoff_webhook_delivery_seconds",
    "Time of one webhook attempt, from the request to the (capped) response body",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
_COUNTERS: dict[str, Counter] = {}  # ATTEMPTS by result, looked up once

_Pending = tuple[Claim, datetime, AttemptOutcome, "asyncio.Future[None] | None"]
# Answered attempts wait this long for more answers to share their transaction: each write transaction costs ~1 ms
# of CPU here (its COMMIT's fsync included) and a turn of SQLite's one writer that routing's consumer waits for.
# At end-to-end rates routing hands off 10-50 deliveries a poll, every 20-60 ms: waiting for the batch's own last
# answer only (session 8) still paid a transaction a poll; this joins a few polls' answers. A record only needs to
# land within the lease (a crash before it sends the delivery again, under the same webhook-id, as before); the
# delivery's status shows `pending` this much longer. An awaited `record`, a full batch or `flush` goes at once.
LINGER_S = 0.1
LINGER_MAX = 500  # answers waiting that make a transaction at once
# Answers ride once the oldest has waited this long, or this many wait: a ride costs the poll three statements, so
# riding on every poll of a lead or two would cost more than the share of a record transaction it saves.
RIDE_AFTER_S = 0.05
RIDE_AT = 32
_RIDING = "handoff_webhook_records_riding"  # session.info key: (recorder, batch) recorded in that transaction


class AttemptRecorder:
    """Records attempts in batches, one transaction for what finished while the previous one committed."""

    def __init__(
        self,
        db: Database,
        settings: RoutingSettings,
        clock: Callable[[], datetime],
        rand: Callable[[], float],
    ) -> None:
        self._db = db
        self._go = asyncio.Event()  # ends the wait for more answers (LINGER_S)
        self._flushing = False
        self._settings = settings
        self._clock = clock
        self._rand = rand
        self._pending: list[_Pending] = []
        self._waiting_since = 0.0  # monotonic time the oldest of `_pending` came (about: the riders' threshold)
        self._task: asyncio.Task[None] | None = None
        self._grounded: set[str] = set()  # deliveries whose rider rolled back: the recorder's own transaction's

    async def record(self, claim: Claim, started_at: datetime, outcome: AttemptOutcome) -> None:
        """Store the attempt; schedule the next one or settle the delivery; keep the endpoint's health."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._pending:
            self._waiting_since = time.monotonic()
        self._pending.append((claim, started_at, outcome, done))
        self._go.set()
        self._ensure_running()
        await done

    def add(self, claim: Claim, started_at: datetime, outcome: AttemptOutcome) -> None:
        """Record the attempt with the next transaction, without waiting for it (a failure is logged here)."""
        pending = self._pending
        if not pending:
            self._waiting_since = time.monotonic()
        pending.append((claim, started_at, outcome, None))
        if len(pending) >= LINGER_MAX:
            self._go.set()
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._record_pending(), name="webhook-recorder")

    async def flush(self) -> None:
        """Wait until every attempt added so far is committed (or its transaction has failed)."""
        self._flushing = True  # no more waiting for answers to join
        try:
            while self._task is not None and not self._task.done():
                self._go.set()
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._task)
        finally:
            self._flushing = False

    def _take(self, *, riders: bool = False) -> list[_Pending]:
        """What is waiting, a delivery at most once (its attempt number is counted in the statement): a second
        attempt of one delivery, rare (a lease that ran out), waits for the next transaction. `riders`: added
        successes only (an awaited record and a failure keep the recorder's own transaction)."""
        batch: list[_Pending] = []
        later: list[_Pending] = []
        seen: set[str] = set()
        for item in self._pending:
            claim, _at, outcome, done = item
            first = claim.delivery_id not in seen
            seen.add(claim.delivery_id)
            ride = done is None and outcome.result == "success" and claim.delivery_id not in self._grounded
            if first and (not riders or ride):
                batch.append(item)
            else:
                later.append(item)
        self._pending = later
        return batch

    async def record_into(self, session: AsyncSession) -> None:
        """Record the added successes waiting in the caller's write transaction (it commits them, or gives them
        back if it rolls back). Once per transaction; a second batch of the same transaction waits for the next."""
        pending = self._pending
        if not pending or _RIDING in session.info:
            return
        if len(pending) < RIDE_AT and time.monotonic() - self._waiting_since < RIDE_AFTER_S:
            return
        batch = self._take(riders=True)
        if not batch:
            return
        self._waiting_since = time.monotonic()  # what is left rides no sooner than a new answer would
        session.info[_RIDING] = (self, batch)
        now = self._clock()
        rows = [outcome.success_row(claim.delivery_id, claim.lease_token, now, at) for claim, at, outcome, _ in batch]
        await SendStore(session).record_successes(rows, {claim.endpoint_id for claim, *_ in batch}, now)

    def _rode(self, batch: list[_Pending]) -> None:
        _count(len(batch), [])

    def _thrown(self, batch: list[_Pending]) -> None:
        """The rider's transaction rolled back: the recorder's own transaction takes these, at once (a record that
        failed a writer's transaction fails no second one)."""
        self._pending[:0] = batch
        self._grounded.update(claim.delivery_id for claim, *_ in batch)
        self._go.set()
        with contextlib.suppress(RuntimeError):  # no running loop (shutting down): their leases run out instead
            self._ensure_running()

    async def _linger(self) -> None:
        """Wait until the oldest answer waiting has waited LINGER_S (more answers join, or a writer's transaction
        takes them), unless something asks for the transaction now."""
        go = self._go
        while not (go.is_set() or self._flushing):
            left = LINGER_S - (time.monotonic() - self._waiting_since)
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await go.wait()
        go.clear()

    async def _record_pending(self) -> None:
        while self._pending:
            await self._linger()
            if not self._pending:
                break  # a writer's transaction took them all meanwhile
            batch: list[_Pending] = []
            try:
                # The batch is taken once the writer is ours: what finished while waiting for it joins in.
                async with self._db.transaction() as session:
                    batch = self._take()
                    now = self._clock()
                    failed: list[_Pending] = []
                    succeeded = []
                    endpoint_ids = set()
                    for item in batch:
                        claim, started_at, outcome, _done = item
                        if outcome.result == "success":
                            succeeded.append(outcome.success_row(claim.delivery_id, claim.lease_token, now, started_at))
                            endpoint_ids.add(claim.endpoint_id)
                        else:
                            failed.append(item)
                    _count(len(succeeded), failed)
                    if failed:
                        await self._record_failures(session, failed)
                    await SendStore(session).record_successes(succeeded, endpoint_ids, now)
            except Exception as exc:
                # Not recorded: the leases run out and the deliveries are tried again (at least once).
                unawaited = 0
                for *_, done in batch:
                    if done is None:
                        unawaited += 1
                    elif not done.done():
                        done.set_exception(exc)
                if unawaited:  # the awaited ones raise to their callers
                    log.exception("webhook_record_failed", attempts=unawaited)
            else:
                for *_, done in batch:
                    if done is not None and not done.done():
                        done.set_result(None)
            finally:
                if self._grounded:
                    self._grounded.difference_update(claim.delivery_id for claim, *_ in batch)

    async def _record_failures(self, session: AsyncSession, failed: list[_Pending]) -> None:
        """Failed attempts, each through the ORM (the retry schedule, the endpoint's health)."""
        store = WebhookStore(session)
        # The batch's rows in two queries (locked on PostgreSQL), not two look-ups per attempt.
        deliveries, endpoints = await store.for_recording(
            [claim.delivery_id for claim, *_ in failed], [claim.endpoint_id for claim, *_ in failed]
        )
        for claim, started_at, outcome, _done in failed:
            delivery = deliveries.get(claim.delivery_id)
            endpoint = endpoints.get(claim.endpoint_id)
            if delivery is not None and endpoint is not None:
                await self._record_one(session, delivery, endpoint, claim, started_at, outcome)
        await store.flush()

    async def _record_one(
        self,
        session: AsyncSession,
        delivery: WebhookDelivery,
        endpoint: WebhookEndpoint,
        claim: Claim,
        started_at: datetime,
        outcome: AttemptOutcome,
    ) -> None:
        """A failed attempt: counted, and the delivery's next attempt scheduled (or given up)."""
        settings = self._settings
        now = self._clock()
        store = WebhookStore(session)
        # After a lease expired another sender owns the row: the attempt is still a fact worth keeping.
        ours = delivery.lease_token == claim.lease_token
        delivery.attempt_count += 1
        attempt = WebhookAttempt(
            delivery_id=delivery.id,
            attempt_no=delivery.attempt_count,
            started_at=started_at,
            signed_at=outcome.signed_at,
            result=outcome.result,
            status_code=outcome.status_code,
            latency_ms=round(outcome.latency_s * 1000, 3),
            error=outcome.error,
            response_body=outcome.response_body,
        )
        store.add(attempt)
        delivery.last_attempt_at = started_at
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error
        if ours:
            delivery.lease_token = delivery.lease_until = None
        endpoint.failing_since = endpoint.failing_since or now
        endpoint.last_failure_at = now
        gone = outcome.status_code == 410
        if ours and delivery.status == PENDING:
            delivery.schedule_step += 1
            delay = None
            if not gone:
                delay = retry_delay(
                    delivery.schedule_step,
                    settings.webhook_retry_schedule_s,
                    jitter=settings.webhook_retry_jitter,
                    rand=self._rand(),
                    retry_after=outcome.retry_after_s,
                    retry_after_max=settings.webhook_retry_after_max_s,
                )
            if delay is None:
                delivery.status, delivery.next_attempt_at = FAILED, None
                FAILURES.inc()
            else:
                delivery.next_attempt_at = now + timedelta(seconds=delay)
        failing_for = now - (endpoint.failing_since or now)
        if endpoint.enabled and gone:
            await disable_endpoint(session, endpoint, "gone", now)
        elif endpoint.enabled and failing_for >= timedelta(days=settings.webhook_disable_after_days):
            await disable_endpoint(session, endpoint, "failing", now)
        if ours:
            attempt.next_attempt_at = delivery.next_attempt_at if delivery.status == PENDING else None
        log.info(
            "webhook_attempt_failed",
            endpoint_id=endpoint.id,
            delivery_id=delivery.id,
            result=outcome.result,
            status_code=outcome.status_code,
            next_attempt_at=iso(attempt.next_attempt_at),
        )


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    riding = session.info.pop(_RIDING, None)
    if riding is not None:
        riding[0]._rode(riding[1])


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a savepoint: the outer transaction decides
    riding = session.info.pop(_RIDING, None)  # still here at the end: it did not commit
    if riding is not None:
        riding[0]._thrown(riding[1])


def _count(successes: int, failed: list[_Pending]) -> None:
    """Attempts by result, a batch at a time."""
    counts: dict[str, int] = {"success": successes} if successes else {}
    for _claim, _at, outcome, _done in failed:
        counts[outcome.result] = counts.get(outcome.result, 0) + 1
    for result, n in counts.items():
        counter = _COUNTERS.get(result)
        if counter is None:
            counter = _COUNTERS[result] = ATTEMPTS.labels(result=result)
        counter.inc(n)
