"""Webhooks to sales tools, after the Standard Webhooks specification: endpoints, signed deliveries, retries, replay.

The path of a message: `enqueue_deliveries` writes one `webhook_deliveries` row per subscribed endpoint in the
transaction that writes the event (so a committed event always has its deliveries, and a rolled-back one never
does). `WebhookSender` claims due rows with a lease, POSTs them with one shared httpx client, records each attempt
and schedules the next one (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with jitter, or a later `Retry-After`).
A sender killed mid-attempt leaves a lease that expires; the row is then claimed again, so nothing is lost and a
receiver may see a message twice (the same `webhook-id`, which is what receivers deduplicate on).

Destinations are checked against private, loopback, link-local, multicast, reserved and cloud-metadata addresses
(and must be https in production) when registered and again on every new connection (`common.egress`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox, SecretKeyError
from common.db import Database
from common.egress import (
    AddressPolicy,
    Destination,
    Resolver,
    UnsafeUrl,
    guarded_transport,
    parse_url,
    system_resolver,
    vet_url,
)
from common.envelope import Event, dumps, loads
from common.topics import EVENT_TOPICS, LEADS_ASSIGNED, LEADS_OUTCOMES, LEADS_SLA
from routing.settings import RoutingSettings
from routing.store import WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = structlog.get_logger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix the spec gives secrets, not a secret
TEST_EVENT_TYPE = "webhook.test"
# What an endpoint can subscribe to: the events routing itself emits.
WEBHOOK_EVENT_TYPES = frozenset(
    t for t, topic in EVENT_TOPICS.items() if topic in (LEADS_ASSIGNED, LEADS_SLA, LEADS_OUTCOMES)
)
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
DELIVERY_STATUSES = (PENDING, SUCCEEDED, FAILED)
_ENQUEUED_FLAG = "handoff_webhooks_enqueued"
_ENDPOINTS = "handoff_webhook_endpoints"  # session.info key: (transaction, enabled endpoints) read once

ATTEMPTS = Counter("handoff_webhook_attempts_total", "Webhook delivery attempts", ["result"])
FAILURES = Counter(
    "handoff_webhook_failures_total", "Webhook deliveries given up on (retries spent, endpoint gone or disabled)"
)
DELIVERY_SECONDS = Histogram(
    "handoff_webhook_delivery_seconds",
    "Time of one webhook attempt, from the request to the (capped) response body",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored here is UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- signing (pure) ----------------------------------------------------------------------------------------


def new_secret() -> str:
    """A signing secret: `whsec_` and the base64 of 32 random bytes (the spec asks for at least 24)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64 HMAC-SHA256>` signature of `{id}.{timestamp}.{body}`, keyed by the decoded secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret in force, space-separated."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_)


def webhook_body(event_type: str, timestamp: datetime, data: Mapping[str, Any]) -> str:
    """The Standard Webhooks payload shape: `{"type", "timestamp", "data"}`."""
    return dumps({"type": event_type, "timestamp": timestamp, "data": data}).decode("utf-8")


# -- the retry schedule (pure) -----------------------------------------------------------------------------


def retry_delay(
    step: int,
    schedule: Sequence[float],
    *,
    jitter: float,
    rand: float,
    retry_after: float | None = None,
    retry_after_max: float = float("inf"),
) -> float | None:
    """Seconds from the `step`-th failed attempt of a round to the next, or None once the schedule is spent.

    `rand` in [0, 1) spreads the delay by up to `jitter` either way; a receiver's `Retry-After` wins when later.
    """
    if step < 1:
        raise ValueError("step counts failed attempts and starts at 1")
    if step > len(schedule):
        return None
    delay = schedule[step - 1] * (1 + jitter * (2 * rand - 1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_max))
    return delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


# -- where webhooks may go: common.egress holds the policy, shared with ingest's platform calls ------------


def webhook_address_policy(settings: RoutingSettings) -> AddressPolicy:
    """Loopback as the settings say, the private allow-list, and https only in production."""
    return AddressPolicy.from_allow_list(
        allow_loopback=settings.webhook_loopback_allowed,
        allow_private_hosts=settings.webhook_allow_private_hosts,
        require_https=settings.env == "production",
    )


def parse_endpoint_url(url: str) -> Destination:
    """Only absolute http(s) URLs with a host and no credentials; raises UnsafeUrl otherwise."""
    return parse_url(url)


def new_http_client(
    settings: RoutingSettings, policy: AddressPolicy, resolver: Resolver = system_resolver
) -> httpx.AsyncClient:
    """The one client a sender shares across deliveries: no redirects, no proxies from the environment."""
    # httpx logs every request's full URL at INFO; webhook URLs often carry a token (Slack's do), so keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    limits = httpx.Limits(max_connections=settings.webhook_concurrency * 2, max_keepalive_connections=32)
    return httpx.AsyncClient(
        transport=guarded_transport(policy, resolver, limits),
        timeout=httpx.Timeout(settings.webhook_timeout_s),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": settings.webhook_user_agent},
    )


# -- enqueueing, in the event's own transaction ------------------------------------------------------------


async def enqueue_deliveries(session: AsyncSession, events: Sequence[Event], now: datetime) -> int:
    """Queue one delivery per event and subscribed, enabled endpoint in the caller's transaction; returns the count."""
    if not events:
        return 0
    endpoints = await _subscribed_endpoints(session)
    rows: list[dict[str, Any]] = []
    for event in events:
        payload: str | None = None
        for endpoint_id, event_types in endpoints:
            if "*" not in event_types and event.type not in event_types:
                continue
            payload = payload or webhook_body(event.type, event.time, event.data)
            rows.append(_new_delivery(endpoint_id, event.id, event.type, payload, now, lead_id=event.subject))
    if rows:
        await session.execute(insert(WebhookDelivery), rows)
        session.info[_ENQUEUED_FLAG] = True
    return len(rows)


async def redact_deliveries(session: AsyncSession, lead_id: str) -> int:
    """An erased lead's stored webhook bodies lose the person's data (`data.lead`) and a rep's own words about
    them (`data.reason` of reject, convert, disqualify); the decision stays. What receivers answered is dropped
    too: a receiver that echoes the body it was sent returns the person's data.

    A delivery still pending afterwards sends the redacted body, under the same webhook-id; a replay does too.
    Returns how many bodies changed.
    """
    rows = await session.execute(
        select(WebhookDelivery.id, WebhookDelivery.payload).where(WebhookDelivery.lead_id == lead_id)
    )
    delivery_ids: list[str] = []
    changed = 0
    for delivery_id, payload in rows.all():
        delivery_ids.append(delivery_id)
        body = loads(payload)
        data = body.get("data")
        if not isinstance(data, dict):
            continue
        # Only a rep action (it has `action`) carries the rep's words; a decision's `reason` is the rules' own.
        rep_words = "action" in data and bool(data.get("reason"))
        if not data.get("lead") and not rep_words:
            continue
        if data.get("lead"):
            data["lead"] = {}
        if rep_words:
            data["reason"] = None
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(payload=dumps(body).decode("utf-8"))
            .execution_options(synchronize_session=False)
        )
        changed += 1
    if delivery_ids:
        await session.execute(
            update(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(delivery_ids), WebhookAttempt.response_body.is_not(None))
            .values(response_body=None)
            .execution_options(synchronize_session=False)
        )
    return changed


async def redact_resubmission_deliveries(session: AsyncSession, open_lead_id: str, repeat_lead_id: str) -> int:
    """An erased repeat's words live in the lead.resubmitted bodies of the open lead it joined (their subject):
    those bodies lose `data.lead`, the open lead's other deliveries stay as they are. Returns how many changed."""
    rows = await session.execute(
        select(WebhookDelivery.id, WebhookDelivery.payload).where(
            WebhookDelivery.lead_id == open_lead_id, WebhookDelivery.event_type == "lead.resubmitted"
        )
    )
    changed = 0
    for delivery_id, payload in rows.all():
        body = loads(payload)
        data = body.get("data")
        if not isinstance(data, dict) or data.get("repeat_lead_id") != repeat_lead_id or not data.get("lead"):
            continue
        data["lead"] = {}
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(payload=dumps(body).decode("utf-8"))
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id, WebhookAttempt.response_body.is_not(None))
            .values(response_body=None)
            .execution_options(synchronize_session=False)
        )
        changed += 1
    return changed


async def purge_settled_deliveries(session: AsyncSession, settings: RoutingSettings, now: datetime) -> int:
    """Delete one batch of deliveries settled before the retention window, their attempts with them (cascade);
    pending ones are kept whatever their age. Returns how many went."""
    cutoff = now - timedelta(days=settings.webhook_retention_days)
    oldest = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status != PENDING, WebhookDelivery.created_at < cutoff)
        .order_by(WebhookDelivery.created_at)
        .limit(settings.webhook_purge_batch)
    )
    result = await session.execute(
        delete(WebhookDelivery)
        .where(WebhookDelivery.id.in_(oldest.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _subscribed_endpoints(session: AsyncSession) -> list[tuple[str, list[str]]]:
    """Enabled endpoints and their event types, read once per transaction (a consumer batch writes many events);
    a rolled-back or new transaction reads them again."""
    current = session.sync_session.get_transaction()
    cached = session.info.get(_ENDPOINTS)
    if cached is not None and cached[0] is current:
        return cached[1]
    rows = (
        await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(WebhookEndpoint.enabled.is_(True))
        )
    ).all()
    endpoints = [(endpoint_id, list(event_types or [])) for endpoint_id, event_types in rows]
    session.info[_ENDPOINTS] = (current, endpoints)
    return endpoints


def _new_delivery(
    endpoint_id: str, message_id: str, event_type: str, payload: str, now: datetime, *, lead_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "endpoint_id": endpoint_id,
        "message_id": message_id,
        "event_type": event_type,
        "lead_id": lead_id,
        "payload": payload,
        "status": PENDING,
        "next_attempt_at": now,
        "schedule_step": 0,
        "attempt_count": 0,
        "replays": 0,
        "created_at": now,
    }


# -- endpoint and delivery use cases -----------------------------------------------------------------------


class WebhookConflict(Exception):
    """The request does not fit the endpoint's state (e.g. replaying to a disabled endpoint)."""


def normalize_event_types(event_types: Sequence[str]) -> list[str]:
    """`["*"]` or known routing event types, deduplicated; raises ValueError naming the unknown ones."""
    wanted = list(dict.fromkeys(t.strip() for t in event_types))
    if not wanted:
        raise ValueError('subscribe to at least one event type, or to "*" for all')
    if "*" in wanted:
        return ["*"]
    unknown = [t for t in wanted if t not in WEBHOOK_EVENT_TYPES]
    if unknown:
        raise ValueError(f'unknown event types {unknown}; choose from {sorted(WEBHOOK_EVENT_TYPES)} or "*"')
    return sorted(wanted)


@dataclass(frozen=True)
class DeliveryLog:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


class Webhooks:
    """Endpoint and delivery use cases; each takes the caller's session (the entrypoint owns the transaction)."""

    def __init__(
        self,
        settings: RoutingSettings,
        *,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.policy = webhook_address_policy(settings)
        self.resolver = resolver
        self.clock = clock
        self.secrets = settings.secret_box()  # signing secrets are stored encrypted, shown once in clear

    async def vet_url(self, url: str) -> Destination:
        """Check a URL before storing it (outside any transaction: DNS can be slow)."""
        return await vet_url(url, self.policy, self.resolver)

    async def create_endpoint(
        self, session: AsyncSession, *, url: Destination, event_types: Sequence[str], description: str = ""
    ) -> tuple[WebhookEndpoint, str]:
        """Store a new endpoint; returns it and its signing secret (the only time the secret is shown)."""
        now = self.clock()
        secret = new_secret()
        endpoint = WebhookEndpoint(
            id=str(uuid.uuid4()),
            url=url.url,
            description=description,
            event_types=normalize_event_types(event_types),
            enabled=True,
            secret=self.secrets.seal(secret),
            created_at=now,
            updated_at=now,
        )
        session.add(endpoint)
        session.info.pop(_ENDPOINTS, None)  # this transaction's own events go to the new endpoint too
        await session.flush()
        return endpoint, secret

    async def endpoint(self, session: AsyncSession, endpoint_id: str) -> WebhookEndpoint:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None:
            raise LookupError("no webhook endpoint with this id")
        return endpoint

    async def endpoints(self, session: AsyncSession) -> list[WebhookEndpoint]:
        query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        return list((await session.execute(query)).scalars())

    async def update_endpoint(
        self,
        session: AsyncSession,
        endpoint_id: str,
        *,
        url: Destination | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        """Change what is given; disabling fails the pending deliveries, enabling gives the endpoint a clean slate."""
        endpoint = await self.endpoint(session, endpoint_id)
        now = self.clock()
        if url is not None:
            endpoint.url = url.url
        if event_types is not None:
            endpoint.event_types = normalize_event_types(event_types)
        if description is not None:
            endpoint.description = description
        if enabled is True and not endpoint.enabled:
            endpoint.enabled = True
            endpoint.disabled_reason = endpoint.disabled_at = endpoint.failing_since = None
        elif enabled is False and endpoint.enabled:
            await disable_endpoint(session, endpoint, "manual", now)
        endpoint.updated_at = now
        session.info.pop(_ENDPOINTS, None)
        await session.flush()
        return endpoint

    async def rotate_secret(self, session: AsyncSession, endpoint_id: str) -> tuple[WebhookEndpoint, str]:
        """A new secret signs from now on; the old one adds a second signature until the overlap ends."""
        endpoint = await self.endpoint(session, endpoint_id)
        now = self.clock()
        secret = new_secret()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_until = now + timedelta(hours=self.settings.webhook_secret_overlap_hours)
        endpoint.secret = self.secrets.seal(secret)
        endpoint.updated_at = now
        await session.flush()
        return endpoint, secret

    async def send_test(self, session: AsyncSession, endpoint_id: str) -> WebhookDelivery:
        """Queue a `webhook.test` ping to the endpoint (sent by the sender like any delivery)."""
        endpoint = await self.endpoint(session, endpoint_id)
        if not endpoint.enabled:
            raise WebhookConflict("the endpoint is disabled; enable it first")
        now = self.clock()
        message_id = str(uuid.uuid4())
        payload = webhook_body(
            TEST_EVENT_TYPE, now, {"endpoint_id": endpoint.id, "message": "A test delivery from Handoff."}
        )
        delivery = WebhookDelivery(**_new_delivery(endpoint.id, message_id, TEST_EVENT_TYPE, payload, now))
        session.add(delivery)
        session.info[_ENQUEUED_FLAG] = True
        await session.flush()
        return delivery

    async def replay(self, session: AsyncSession, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        """Send one delivery again, now, with a fresh retry schedule and the same `webhook-id`."""
        endpoint = await self.endpoint(session, endpoint_id)
        if not endpoint.enabled:
            raise WebhookConflict("the endpoint is disabled; enable it before replaying")
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.endpoint_id != endpoint_id:
            raise LookupError("no delivery with this id for this endpoint")
        _restart(delivery, self.clock())
        session.info[_ENQUEUED_FLAG] = True
        await session.flush()
        return delivery

    async def replay_failed_since(self, session: AsyncSession, endpoint_id: str, since: datetime) -> int:
        """Send again every failed delivery of the endpoint created at or after `since`; returns how many."""
        endpoint = await self.endpoint(session, endpoint_id)
        if not endpoint.enabled:
            raise WebhookConflict("the endpoint is disabled; enable it before replaying")
        since = (_aware(since) or since).astimezone(UTC)
        now = self.clock()
        result = await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.status == FAILED,
                WebhookDelivery.created_at >= since,
            )
            .values(
                status=PENDING,
                next_attempt_at=now,
                schedule_step=0,
                replays=WebhookDelivery.replays + 1,
                lease_token=None,
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            session.info[_ENQUEUED_FLAG] = True
        return count

    async def deliveries(
        self, session: AsyncSession, endpoint_id: str, *, status: str | None = None, limit: int = 50
    ) -> list[DeliveryLog]:
        """The endpoint's deliveries, newest first, each with its attempts in order."""
        await self.endpoint(session, endpoint_id)
        query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)
        deliveries = list((await session.execute(query)).scalars())
        attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
        if deliveries:
            rows = await session.execute(
                select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts))).order_by(WebhookAttempt.id)
            )
            for attempt in rows.scalars():
                attempts[attempt.delivery_id].append(attempt)
        return [DeliveryLog(d, attempts[d.id]) for d in deliveries]


def _restart(delivery: WebhookDelivery, now: datetime) -> None:
    delivery.status = PENDING
    delivery.next_attempt_at = now
    delivery.schedule_step = 0
    delivery.replays += 1
    delivery.lease_token = delivery.lease_until = None


async def disable_endpoint(session: AsyncSession, endpoint: WebhookEndpoint, reason: str, now: datetime) -> int:
    """Disable the endpoint and fail its pending deliveries (they stay listed and can be replayed later)."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.disabled_at = now
    endpoint.updated_at = now
    session.info.pop(_ENDPOINTS, None)
    await session.flush()
    result = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == PENDING)
        .values(
            status=FAILED,
            next_attempt_at=None,
            lease_token=None,
            lease_until=None,
            last_error=f"endpoint disabled ({reason})",
        )
        .execution_options(synchronize_session="fetch")
    )
    failed = int(result.rowcount or 0)  # type: ignore[attr-defined]
    FAILURES.inc(failed)
    log.warning(
        "webhook_endpoint_disabled",
        endpoint_id=endpoint.id,
        host=httpx.URL(endpoint.url).host,
        reason=reason,
        failing_since=_iso(endpoint.failing_since),
        pending_deliveries_failed=failed,
    )
    return failed


def _iso(value: datetime | None) -> str | None:
    value = _aware(value)
    return value.isoformat() if value else None


# -- the sender --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A delivery this sender holds the lease on, with what it needs to send it outside any transaction."""

    delivery_id: str
    endpoint_id: str
    message_id: str
    url: str
    payload: str
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
        self._cap = settings.webhook_response_max_kib * 1024
        self._stop_grace_s = stop_grace_s
        self._client: httpx.AsyncClient | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._to_record: list[tuple[Claim, datetime, AttemptOutcome, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        db.on_commit(self._after_commit)

    def _after_commit(self, session: AsyncSession) -> None:
        if session.info.get(_ENQUEUED_FLAG):
            self._wake.set()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_http_client(self._settings, self._policy, self._resolver)
        return self._client

    async def run(self) -> None:
        """Send until stopped, at most `webhook_concurrency` attempts at a time."""
        settings = self._settings
        try:
            while not self._stopping:
                try:
                    free = settings.webhook_concurrency - len(self._inflight)
                    wanted = min(free, settings.webhook_batch_size)
                    if wanted > 0:
                        claims = await self.claim(wanted)
                        for claim in claims:
                            self._spawn(claim)
                        if len(claims) == wanted and len(self._inflight) < settings.webhook_concurrency:
                            continue  # more may be due right now
                    await self._sleep(settings.webhook_poll_interval_s)
                except Exception:
                    log.exception("webhook_sender_error")
                    await self._sleep(1.0)
        finally:
            await self._drain()
            await self.close()

    async def stop(self) -> None:
        """Stop claiming; attempts in flight get a short grace, the rest are retried after their lease."""
        self._stopping = True
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
        query = (
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now),
                WebhookEndpoint.enabled.is_(True),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
        claims: list[Claim] = []
        async with self._db.transaction() as session:
            if not self._db.is_sqlite:
                # Senders in other processes skip rows held here; SQLite has one writer, which is enough.
                query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
            for delivery, endpoint in (await session.execute(query)).all():
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
                        payload=delivery.payload,
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
                response_body = await _read_capped(response, self._cap)
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
        delivery = await session.get(WebhookDelivery, claim.delivery_id, with_for_update=True)
        endpoint = await session.get(WebhookEndpoint, claim.endpoint_id, with_for_update=True)
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
        session.add(attempt)
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
        failing_for = now - (_aware(endpoint.failing_since) or now)
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
            next_attempt_at=_iso(attempt.next_attempt_at),
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

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

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
    until = _aware(endpoint.previous_secret_until)
    if endpoint.previous_secret and until is not None and until > now:
        return (box.reveal(endpoint.secret), box.reveal(endpoint.previous_secret))
    return (box.reveal(endpoint.secret),)


async def reencrypt_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Encrypt every stored signing secret under the newest key (older keys' and clear ones alike); how many."""
    count = 0
    for endpoint in (await session.execute(select(WebhookEndpoint))).scalars():
        endpoint.secret = box.rotate(endpoint.secret)
        count += 1
        if endpoint.previous_secret:
            endpoint.previous_secret = box.rotate(endpoint.previous_secret)
            count += 1
    await session.flush()
    return count


async def _read_capped(response: httpx.Response, cap: int) -> str | None:
    if cap <= 0:
        return None
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk[: cap - len(received)]
        if len(received) >= cap:
            break  # the rest is never read; the connection is closed instead of reused
    return received.decode("utf-8", "replace")
