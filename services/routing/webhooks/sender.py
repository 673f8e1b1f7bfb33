"""The sender: claims due deliveries with a lease, POSTs them signed, records each attempt, schedules the next.

One shared aiohttp session (about a tenth of httpx's CPU per request here); retries at 5 s, 5 min, 30 min, 2 h,
5 h, 10 h, 10 h, with jitter, or a later `Retry-After`. A sender killed mid-attempt leaves a lease that expires;
the row is then claimed again, so nothing is lost and a receiver may see a message twice (the same `webhook-id`,
which is what receivers deduplicate on).
Every new connection is checked against the address policy again (`transport`), so DNS rebinding is refused.

The fast path: a delivery written while this sender runs is written already leased to it and handed over in memory
right after its commit (`store.take_handoffs`), so it costs no claim and waits for no poll; the table stays the
source of truth (a crash leaves the lease to run out, and a claim query then takes the row: at least once).
Attempts finishing together are recorded in one transaction (`recorder`); an attempt's slot is free once its
answer is in, before its record commits (the lease holds the row meanwhile). Fairness: at most
`webhook_endpoint_concurrency` attempts are in flight to one endpoint (`scheduler`); an endpoint at its limit is
left out of the next claim, so one slow receiver holds its own slots and never every slot. Attempts run on
`webhook_concurrency` long-lived workers, one per slot (no task or future per delivery): a worker whose attempt
is answered takes the next waiting claim itself, an idle one is handed a claim when a slot frees; the loop wakes
to claim or take hand-offs when few are left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import Database
from common.egress import Resolver, system_resolver
from common.poll import share_loop
from common.runtime import poll_until
from routing.access.links import link_keys
from routing.connectors import ConnectorDeps, ConnectorPool, registry
from routing.settings import RoutingSettings
from routing.webhooks.address import webhook_address_policy
from routing.webhooks.claims import Claim, ClaimBuilder, RevealedSecrets, as_written
from routing.webhooks.outcome import AttemptOutcome
from routing.webhooks.owed import OwedDeliveries
from routing.webhooks.recorder import ATTEMPTS, DELIVERY_SECONDS, AttemptRecorder
from routing.webhooks.scheduler import FairScheduler
from routing.webhooks.send_store import SendStore, any_due
from routing.webhooks.store import (
    HandedOff,
    endpoints_changed_in,
    enqueued_in,
    handed_off_in,
    revoked_in,
    stop_handoffs,
    take_handoffs,
)

if TYPE_CHECKING:  # aiohttp (~0.2 s of start-up CPU) is imported by the transport, loaded when the sender first sends
    import aiohttp

    from routing.webhooks.transport import SignedPoster

log = structlog.get_logger(__name__)

__all__ = ["ATTEMPTS", "DELIVERY_SECONDS", "WebhookSender"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookSender:
    """Claims due deliveries, sends them and records every attempt; owns its transactions and its HTTP client.

    `clock` drives the schedule (due times, leases, attempt times); `wall_clock` stamps `webhook-timestamp`,
    which receivers check against their own clocks. Both default to the system clock; tests inject them.
    """

    def __init__(
        self,
        db: Database,
        settings: RoutingSettings,
        *,
        clock: Callable[[], datetime] = _utcnow,
        wall_clock: Callable[[], datetime] = _utcnow,
        resolver: Resolver = system_resolver,
        rand: Callable[[], float] = random.random,
        stop_grace_s: float = 5.0,
    ) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._resolver = resolver
        self._policy = webhook_address_policy(settings)
        self._secrets = RevealedSecrets(settings.secret_box())
        self._timeout = settings.webhook_timeout_s
        self._batch = settings.webhook_batch_size
        self._links_base_url = settings.webhook_links_base_url
        self._link_keys = link_keys(settings.secret_key.get_secret_value() if settings.secret_key else None)
        self._cap = settings.webhook_response_max_kib * 1024
        self._stop_grace_s = stop_grace_s
        self._client: aiohttp.ClientSession | None = None
        self._poster: SignedPoster | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._idle: deque[asyncio.Future[Claim | None]] = deque()  # workers waiting to be handed a claim
        self._owed = OwedDeliveries()  # handed off by commits, not yet answered: what a consumer's hand_off awaits
        self._slots = FairScheduler(
            settings.webhook_concurrency, settings.webhook_endpoint_concurrency, on_drop=self._owed.done
        )
        self._handed: list[HandedOff] = []  # written leased to this sender, sent from memory
        self._taking_handoffs = False
        self._taking: list[tuple[set[str], set[str]]] | None = None  # revocations during a `_take_handed` read
        self._dry_until = 0.0  # monotonic time before which a claim that found nothing is not repeated
        self._endpoints_changed_at = 0.0  # monotonic time of this process's last commit that changed an endpoint
        self._queued_since_dry = False
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._recorder = AttemptRecorder(db, settings, clock, rand)
        self._connectors = ConnectorPool(registry, ConnectorDeps(db, settings, wall_clock, resolver))
        db.on_commit(self._after_commit)

    def _after_commit(self, session: AsyncSession) -> None:
        if endpoints_changed_in(session):
            self._endpoints_changed_at = time.monotonic()
        revoked = revoked_in(session)
        if revoked is not None:
            self._revoke(*revoked)
        if not enqueued_in(session):
            return
        handed = handed_off_in(session) if self._taking_handoffs else []
        if handed:
            self._handed.extend(handed)  # all of the transaction's deliveries: no claim needed for them
            self._owed.add(handed)
        else:
            self._queued_since_dry = True  # written unleased (no sender took hand-offs then): a claim finds them
        self._wake.set()

    def _revoke(self, delivery_ids: set[str], endpoint_ids: set[str]) -> None:
        """Deliveries (or endpoints) changed by a commit: the bodies still held in memory for them are not sent
        (their rows' leases were cleared or they were failed; the table gives what is still due to a claim)."""
        self._owed.revoke(delivery_ids, endpoint_ids)
        if self._handed:
            self._handed = [
                row for row in self._handed if row.id not in delivery_ids and row.endpoint_id not in endpoint_ids
            ]
        if self._slots.waiting:
            self._slots.drop_waiting(delivery_ids, endpoint_ids)
        if self._taking is not None:  # a batch between `_handed` and the slots: `_take_handed` filters it
            self._taking.append((delivery_ids, endpoint_ids))

    def _http(self) -> SignedPoster:
        """The signed POST on the one session, built on the first send (aiohttp is imported then)."""
        poster = self._poster
        if poster is None or poster.client.closed:
            from routing.webhooks.transport import SignedPoster, new_http_session

            self._client = client = new_http_session(self._settings, self._policy, self._resolver)
            timeout, cap, clock = self._timeout, self._cap, self._wall_clock
            poster = self._poster = SignedPoster(client, self._policy, timeout_s=timeout, cap=cap, wall_clock=clock)
        return poster

    async def run(self) -> None:
        """Send until stopped, at most `webhook_concurrency` attempts at a time."""
        settings = self._settings

        async def fill_free_slots() -> bool:
            """Queue handed-off deliveries, claim due ones ahead (a batch per transaction), start what the slots
            allow; True when more may be due right now (a finished attempt wakes the loop otherwise)."""
            slots, batch = self._slots, self._batch
            if self._handed and slots.waiting < batch:
                await self._take_handed(batch)
            claimed = seen = 0
            # A claim that found nothing is not repeated on every finished attempt: only after a poll interval or
            # a commit that queued deliveries (each claim is a write transaction, SQLite's one writer).
            if slots.waiting <= batch // 2 and (self._queued_since_dry or time.monotonic() >= self._dry_until):
                # An endpoint holding a batch already (in flight and waiting) is left out: the others get claimed.
                held = slots.held()
                full = [endpoint_id for endpoint_id, n in held.items() if n >= batch]
                claims, seen = await self._claim(batch, full=full, busy=held, cap=batch)
                for claim in claims:
                    slots.wait(claim)
                claimed = len(claims)
                if not claims:
                    self._dry_until = time.monotonic() + settings.webhook_poll_interval_s
                    self._queued_since_dry = False
            self._start_ready()
            if not self._handed and not slots.waiting:
                self._owed.settle(slots.running)
            # Only what the next pass can act on counts: endpoints at their limit wait for a finished attempt.
            more_claimable = claimed > 0 and seen == batch
            more_handed = bool(self._handed) and slots.waiting < batch
            return slots.free > 0 and (more_claimable or more_handed)

        # From here on, deliveries written here come leased to this sender, in memory; on SQLite its answers ride
        rider = self._recorder if self._db.is_sqlite else None  # in the transactions that queue them (`recorder`)
        take_handoffs(self._db.engine.sync_engine, settings.webhook_lease_s, rider)
        self._taking_handoffs = True
        # A consumer on this database leaves the sender the loop after each batch until its hand-offs are answered.
        share_loop(self._db.engine, self._owed)
        self._workers = [
            asyncio.create_task(self._work(), name=f"webhook-worker-{n}") for n in range(self._slots.total)
        ]
        try:
            await poll_until(
                self._stop,
                fill_free_slots,
                interval_s=settings.webhook_poll_interval_s,
                name="webhook_sender",
                wake=self._wake,
                error_pause_s=1.0,
            )
        finally:
            self._taking_handoffs = False
            stop_handoffs(self._db.engine.sync_engine)
            self._handed.clear()  # their leases run out and a claim query takes them
            self._owed.clear()
            self._slots.clear_waiting()
            await self._drain()
            await self.close()

    async def stop(self) -> None:
        """Stop claiming; attempts in flight get a short grace, the rest are retried after their lease."""
        self._stop.set()
        self._wake.set()

    async def close(self) -> None:
        await self._connectors.close()
        if self._client is not None:
            await self._client.close()
            self._client = self._poster = None

    async def run_once(self, limit: int | None = None) -> int:
        """One step: claim what is due now, send it all, record the outcomes; returns how many were sent."""
        claims = await self.claim(limit or self._batch)
        await asyncio.gather(*(self.deliver(claim) for claim in claims))
        return len(claims)

    async def claim(self, limit: int) -> list[Claim]:
        """Lease up to `limit` due deliveries of enabled endpoints (SKIP LOCKED on PostgreSQL)."""
        return (await self._claim(limit))[0]

    async def _claim(
        self,
        limit: int,
        *,
        full: list[str] | None = None,
        busy: Mapping[str, int] | None = None,
        cap: int | None = None,
    ) -> tuple[list[Claim], int]:
        """Lease due deliveries, leaving out `full` endpoints and, with a `cap`, at most that many per endpoint
        counting what is `busy`; returns the claims and how many due rows were seen. Two statements."""
        now = self._clock()
        if self._db.is_sqlite and not await any_due(self._db, now, full or ()):
            return [], 0  # looked in a read (WAL: no turn of the one writer, which routing's polls wait for)
        lease_until = now + timedelta(seconds=self._settings.webhook_lease_s)
        taken = dict(busy or {})
        build = ClaimBuilder(self._secrets, now, self._links_base_url, self._link_keys)
        claims: list[Claim] = []
        token = str(uuid.uuid4())  # one per claim: the batch's rows are this sender's alike
        async with self._db.transaction() as session:
            # Senders in other processes skip rows held here; SQLite has one writer, which is enough.
            store = SendStore(session)
            due = await store.due(now, limit, skip_locked=not self._db.is_sqlite, skip_endpoints=full or ())
            for row in due:
                if cap is not None and taken.get(row.endpoint_id, 0) >= cap:
                    continue  # left unleased: claimed once the endpoint has a free slot
                claim = build.claim(row, token, lease_until)
                if claim is None:
                    continue  # never sent unsigned: it waits, unclaimed, until the key is put back
                taken[row.endpoint_id] = taken.get(row.endpoint_id, 0) + 1
                claims.append(claim)
            await store.lease([claim.delivery_id for claim in claims], token, lease_until)
        return claims, len(due)

    async def _take_handed(self, limit: int) -> None:
        """Queue up to `limit` handed-off deliveries for their endpoints' slots, their bodies as written (no claim
        and no read back: they were written leased to this sender; a change since reached `_revoke` at its commit).
        Their endpoints, enabled (a disabled one's deliveries are left to the table): on SQLite as the writing
        transactions read them, when fresh (`claims.as_written`), else one read per batch."""
        batch, self._handed = self._handed[:limit], self._handed[limit:]
        endpoints = as_written(batch, self._endpoints_changed_at) if self._db.is_sqlite else None
        if endpoints is None:
            revoked: list[tuple[set[str], set[str]]] = []
            self._taking = revoked
            try:  # if the read fails, the batch's leases run out and a claim takes them
                async with self._db.read() as session:
                    endpoints = await SendStore(session).enabled_endpoints({row.endpoint_id for row in batch})
            except BaseException:
                for row in batch:
                    self._owed.done(row.id)
                raise
            finally:
                self._taking = None
            for ids, endpoint_ids in revoked:  # commits that changed some while the endpoints were read
                batch = [row for row in batch if row.id not in ids and row.endpoint_id not in endpoint_ids]
        build = ClaimBuilder(self._secrets, self._clock(), self._links_base_url, self._link_keys)
        wait, done = self._slots.wait, self._owed.done
        for row in batch:
            endpoint = endpoints.get(row.endpoint_id)
            # Disabled (its pending deliveries were failed), or its secrets unreadable: left to the table.
            claim = None if endpoint is None else build.handed(row, endpoint)
            if claim is not None:
                wait(claim)
            else:
                done(row.id)

    async def deliver(self, claim: Claim) -> AttemptOutcome:
        """Send one claimed delivery and record the attempt and what comes next."""
        started_at = self._clock()
        outcome = await self.attempt(claim)
        DELIVERY_SECONDS.observe(outcome.latency_s)  # the recorder counts attempts by result, a batch at a time
        await self.record(claim, started_at, outcome)
        return outcome

    async def attempt(self, claim: Claim) -> AttemptOutcome:
        """One signed POST, or a connector endpoint's API call (routing.connectors); no redirects followed."""
        if self._connectors.handles(claim.format):
            return await self._connectors.deliver(claim)
        return await self._http().post(claim)

    async def record(self, claim: Claim, started_at: datetime, outcome: AttemptOutcome) -> None:
        """Store the attempt; schedule the next one or settle the delivery; keep the endpoint's health. Returns
        once the transaction holding it (shared with the attempts that finished alongside) has committed."""
        await self._recorder.record(claim, started_at, outcome)

    def _start_ready(self) -> None:
        """Hand waiting claims to idle workers while slots and workers are free."""
        idle = self._idle
        if not idle or self._stop.is_set():
            return
        slots, now, timeout = self._slots, self._clock(), self._timeout
        while idle and (claim := slots.take(now, timeout)) is not None:
            idle.popleft().set_result(claim)

    def _next_for(self, claim: Claim) -> tuple[Claim | None, datetime]:
        """The attempt of `claim` is answered: its slot is free. The next waiting claim the same worker starts
        (None: nothing may start now) and the time it starts, the rest go to idle workers; the loop is woken when
        few are left waiting (a claim or the hand-offs refill them)."""
        slots = self._slots
        slots.finished(claim)
        self._owed.done(claim.delivery_id, answered=True)
        now = self._clock()
        following = None
        if not self._stop.is_set():
            following = slots.take(now, self._timeout)
            if following is not None and self._idle:
                self._start_ready()
        # When a round of the loop (fill_free_slots) has hand-offs to take or a claim to make (not while dry).
        claims = self._queued_since_dry or time.monotonic() >= self._dry_until
        if (claims and slots.waiting <= self._batch // 2) or (self._handed and slots.waiting < self._batch):
            self._wake.set()
        return following, now

    async def _work(self) -> None:
        """One slot's worker: sends what it is handed or finds waiting, records without waiting for the commit."""
        loop = asyncio.get_running_loop()
        recorder, clock, connectors, observe = self._recorder, self._clock, self._connectors, DELIVERY_SECONDS.observe
        started_at = clock()
        claim = None if self._stop.is_set() else self._slots.take(started_at, self._timeout)
        while True:
            if claim is None:
                if self._stop.is_set():
                    return
                waiter: asyncio.Future[Claim | None] = loop.create_future()
                self._idle.append(waiter)
                claim = await waiter
                if claim is None:
                    return  # stopping
                started_at = clock()
            try:  # `attempt` and its observation, inlined: two coroutine frames fewer per delivery
                if connectors.handles(claim.format):
                    outcome = await connectors.deliver(claim)
                else:
                    outcome = await self._http().post(claim)
                observe(outcome.latency_s)
            except Exception:
                # Not recorded: the lease runs out and the delivery is tried again.
                log.exception("webhook_delivery_error", delivery_id=claim.delivery_id)
            else:
                recorder.add(claim, started_at, outcome)
            claim, started_at = self._next_for(claim)

    async def _drain(self) -> None:
        """Idle workers end; busy ones get the grace to finish their attempt; then every record is committed."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
        workers, self._workers = self._workers, []
        if workers:
            _done, pending = await asyncio.wait(workers, timeout=self._stop_grace_s)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        await self._recorder.flush()
