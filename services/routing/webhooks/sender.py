"""The sender: claims due deliveries with a lease, POSTs them signed, records each attempt, schedules the next.

One shared httpx client; retries at 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with jitter, or a later
`Retry-After`. A sender killed mid-attempt leaves a lease that expires; the row is then claimed again, so nothing
is lost and a receiver may see a message twice (the same `webhook-id`, which is what receivers deduplicate on).
Every new connection is checked against the address policy again (`common.egress`), so DNS rebinding is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox, SecretKeyError
from common.db import Database
from common.egress import Resolver, UnsafeUrl, system_resolver
from common.runtime import poll_until
from routing.settings import RoutingSettings
from routing.store import WebhookAttempt, WebhookEndpoint
from routing.webhooks.address import webhook_address_policy
from routing.webhooks.formats import render
from routing.webhooks.retry import parse_retry_after, retry_delay
from routing.webhooks.service import FAILURES, disable_endpoint, iso
from routing.webhooks.signing import signature_header
from routing.webhooks.store import FAILED, PENDING, SUCCEEDED, WebhookStore, enqueued_in
from routing.webhooks.transport import new_http_client, read_capped

log = structlog.get_logger(__name__)

ATTEMPTS = Counter("handoff_webhook_attempts_total", "Webhook delivery attempts", ["result"])
DELIVERY_SECONDS = Histogram(
    "handoff_webhook_delivery_seconds",
    "Time of one webhook attempt, from the request to the (capped) response body",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claim:
    """A delivery this sender holds the lease on, with what it needs to send it outside any transaction."""

    delivery_id: str
    endpoint_id: str
    message_id: str
    url: str
    payload: str  # the body to send, in the endpoint's format (signed as sent)
    secrets: tuple[str, ...]
    lease_token: str


@dataclass(frozen=True)
class AttemptOutcome:
    result: str  # success | http_error | timeout | network_error | refused | error
    status_code: int | None = None
    latency_s: float = 0.0
    signed_at: int = 0
    error: str | None = None
    response_body: str | None = None
    retry_after_s: float | None = None

    @property
    def success(self) -> bool:
        return self.result == "success"


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
        self._rand = rand
        self._policy = webhook_address_policy(settings)
        self._secrets = settings.secret_box()
        self._timeout = settings.webhook_timeout_s
        self._links_base_url = settings.webhook_links_base_url
        self._cap = settings.webhook_response_max_kib * 1024
        self._stop_grace_s = stop_grace_s
        self._client: httpx.AsyncClient | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._to_record: list[tuple[Claim, datetime, AttemptOutcome, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        db.on_commit(self._after_commit)

    def _after_commit(self, session: AsyncSession) -> None:
        if enqueued_in(session):
            self._wake.set()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_http_client(self._settings, self._policy, self._resolver)
        return self._client

    async def run(self) -> None:
        """Send until stopped, at most `webhook_concurrency` attempts at a time."""
        settings = self._settings

        async def fill_free_slots() -> bool:
            """Claim as many due deliveries as there are free slots; True when more may be due right now."""
            wanted = min(settings.webhook_concurrency - len(self._inflight), settings.webhook_batch_size)
            if wanted <= 0:
                return False  # a finished attempt wakes the loop
            claims = await self.claim(wanted)
            for claim in claims:
                self._spawn(claim)
            return len(claims) == wanted and len(self._inflight) < settings.webhook_concurrency

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
            await self._drain()
            await self.close()

    async def stop(self) -> None:
        """Stop claiming; attempts in flight get a short grace, the rest are retried after their lease."""
        self._stop.set()
        self._wake.set()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run_once(self, limit: int | None = None) -> int:
        """One step: claim what is due now, send it all, record the outcomes; returns how many were sent."""
        claims = await self.claim(limit or self._settings.webhook_batch_size)
        await asyncio.gather(*(self.deliver(claim) for claim in claims))
        return len(claims)

    async def claim(self, limit: int) -> list[Claim]:
        """Lease up to `limit` due deliveries of enabled endpoints (SKIP LOCKED on PostgreSQL)."""
        now = self._clock()
        lease_until = now + timedelta(seconds=self._settings.webhook_lease_s)
        claims: list[Claim] = []
        async with self._db.transaction() as session:
            # Senders in other processes skip rows held here; SQLite has one writer, which is enough.
            due = await WebhookStore(session).due(now, limit, skip_locked=not self._db.is_sqlite)
            for delivery, endpoint in due:
                try:
                    signing_secrets = _signing_secrets(endpoint, now, self._secrets)
                except SecretKeyError as exc:
                    # Never sent unsigned: the delivery waits, unclaimed, until the key is put back.
                    log.error("webhook_secret_unreadable", endpoint_id=endpoint.id, error=str(exc))
                    continue
                token = str(uuid.uuid4())
                delivery.lease_token, delivery.lease_until = token, lease_until
                claims.append(
                    Claim(
                        delivery_id=delivery.id,
                        endpoint_id=endpoint.id,
                        message_id=delivery.message_id,
                        url=endpoint.url,
                        payload=render(endpoint.format, delivery.payload, links_base_url=self._links_base_url),
                        secrets=signing_secrets,
                        lease_token=token,
                    )
                )
        return claims

    async def deliver(self, claim: Claim) -> AttemptOutcome:
        """Send one claimed delivery and record the attempt and what comes next."""
        started_at = self._clock()
        outcome = await self.attempt(claim)
        ATTEMPTS.labels(result=outcome.result).inc()
        DELIVERY_SECONDS.observe(outcome.latency_s)
        await self.record(claim, started_at, outcome)
        return outcome

    async def attempt(self, claim: Claim) -> AttemptOutcome:
        """One signed POST; only a 2xx within the timeout is a success, redirects are not followed."""
        body = claim.payload.encode("utf-8")
        signed_at = int(self._wall_clock().timestamp())
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",  # the body read is capped on the wire; no compressed surprises
            "webhook-id": claim.message_id,
            "webhook-timestamp": str(signed_at),
            "webhook-signature": signature_header(claim.secrets, claim.message_id, signed_at, body),
        }
        client = self._http()
        started = time.perf_counter()
        status: int | None = None
        error: str | None
        retry_after: float | None = None
        response_body: str | None = None
        try:
            async with (
                asyncio.timeout(self._timeout),
                client.stream("POST", claim.url, content=body, headers=headers) as response,
            ):
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"), self._wall_clock())
                response_body = await read_capped(response, self._cap)
        except (TimeoutError, httpx.TimeoutException):
            result, error = "timeout", f"no complete answer within {self._timeout:g} s"
        except UnsafeUrl as exc:
            result, error = "refused", str(exc)
        except httpx.HTTPError as exc:
            result, error = "network_error", f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:
            log.exception("webhook_attempt_error", delivery_id=claim.delivery_id)
            result, error = "error", f"{type(exc).__name__}: {exc}"[:500]
        else:
            assert status is not None
            ok = 200 <= status < 300
            result = "success" if ok else "http_error"
            error = None if ok else f"HTTP {status}"
        return AttemptOutcome(
            result=result,
            status_code=status,
            latency_s=time.perf_counter() - started,
            signed_at=signed_at,
            error=error,
            response_body=response_body,
            retry_after_s=retry_after,
        )

    async def record(self, claim: Claim, started_at: datetime, outcome: AttemptOutcome) -> None:
        """Store the attempt; schedule the next one or settle the delivery; keep the endpoint's health.

        Attempts that finish together share one transaction (group commit): each call returns once the
        transaction holding its attempt has committed, and raises if that transaction failed.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_record.append((claim, started_at, outcome, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_pending(), name="webhook-recorder")
        await done

    async def _record_pending(self) -> None:
        while self._to_record:
            batch: list[tuple[Claim, datetime, AttemptOutcome, asyncio.Future[None]]] = []
            try:
                # The batch is taken once the writer is ours: what finished while waiting for it joins in.
                async with self._db.transaction() as session:
                    batch, self._to_record = self._to_record, []
                    for claim, started_at, outcome, _done in batch:
                        await self._record_one(session, claim, started_at, outcome)
            except Exception as exc:
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _record_one(
        self, session: AsyncSession, claim: Claim, started_at: datetime, outcome: AttemptOutcome
    ) -> None:
        settings = self._settings
        now = self._clock()
        store = WebhookStore(session)
        delivery = await store.delivery(claim.delivery_id, for_update=True)
        endpoint = await store.endpoint(claim.endpoint_id, for_update=True)
        if delivery is None or endpoint is None:
            return
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
        if outcome.success:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = SUCCEEDED, now, None
            delivery.lease_token = delivery.lease_until = None
            endpoint.failing_since, endpoint.last_success_at = None, now
            return
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

    def _spawn(self, claim: Claim) -> None:
        task = asyncio.create_task(self._deliver_logged(claim), name=f"webhook-{claim.delivery_id}")
        self._inflight.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._inflight.discard(finished)
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _deliver_logged(self, claim: Claim) -> None:
        try:
            await self.deliver(claim)
        except Exception:
            # Not recorded: the lease runs out and the delivery is tried again.
            log.exception("webhook_delivery_error", delivery_id=claim.delivery_id)

    async def _drain(self) -> None:
        tasks = set(self._inflight)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self._stop_grace_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task


def _signing_secrets(endpoint: WebhookEndpoint, now: datetime, box: SecretBox) -> tuple[str, ...]:
    """The secrets in force, decrypted: the current one, and the previous one during a rotation's overlap."""
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and until > now:
        return (box.reveal(endpoint.secret), box.reveal(endpoint.previous_secret))
    return (box.reveal(endpoint.secret),)
