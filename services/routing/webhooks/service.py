"""Webhook use cases: endpoints, test pings, the delivery log, replays; enqueueing, redaction and retention.

Each takes the caller's session (the entrypoint owns the transaction) and asks `WebhookStore` for what it needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox
from common.db import as_utc
from common.egress import Destination, Resolver, system_resolver, vet_url
from common.envelope import Event, dumps, loads
from common.ids import new_id, new_ids
from common.topics import EVENT_TOPICS, LEADS_ASSIGNED, LEADS_OUTCOMES, LEADS_SLA
from routing.settings import RoutingSettings
from routing.store import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from routing.webhooks.address import webhook_address_policy
from routing.webhooks.formats import STANDARD, check_format
from routing.webhooks.signing import new_secret, webhook_body
from routing.webhooks.store import PENDING, NewDelivery, WebhookStore

log = structlog.get_logger(__name__)

TEST_EVENT_TYPE = "webhook.test"
# What an endpoint can subscribe to: the events routing itself emits.
WEBHOOK_EVENT_TYPES = frozenset(
    t for t, topic in EVENT_TOPICS.items() if topic in (LEADS_ASSIGNED, LEADS_SLA, LEADS_OUTCOMES)
)

FAILURES = Counter(
    "handoff_webhook_failures_total", "Webhook deliveries given up on (retries spent, endpoint gone or disabled)"
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """A time for an answer or a log line (the webhook columns read back aware, in UTC: common.db.UtcDateTime)."""
    return value.isoformat() if value else None


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


# What the use cases answer with, named for the routes that shape them (the rows themselves: no copy to drift).
Endpoint = WebhookEndpoint
Delivery = WebhookDelivery
Attempt = WebhookAttempt


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
        self,
        session: AsyncSession,
        *,
        url: Destination,
        event_types: Sequence[str],
        description: str = "",
        format: str = STANDARD,
    ) -> tuple[WebhookEndpoint, str]:
        """Store a new endpoint; returns it and its signing secret (the only time the secret is shown)."""
        store = WebhookStore(session)
        now = self.clock()
        secret = new_secret()
        endpoint = WebhookEndpoint(
            id=str(uuid.uuid4()),
            url=url.url,
            description=description,
            event_types=normalize_event_types(event_types),
            format=check_format(format),
            enabled=True,
            secret=self.secrets.seal(secret),
            created_at=now,
            updated_at=now,
        )
        store.add(endpoint)
        store.forget_endpoints()  # this transaction's own events go to the new endpoint too
        await store.flush()
        return endpoint, secret

    async def endpoint(self, session: AsyncSession, endpoint_id: str) -> WebhookEndpoint:
        endpoint = await WebhookStore(session).endpoint(endpoint_id)
        if endpoint is None:
            raise LookupError("no webhook endpoint with this id")
        return endpoint

    async def endpoints(self, session: AsyncSession) -> list[WebhookEndpoint]:
        return await WebhookStore(session).endpoints()

    async def update_endpoint(
        self,
        session: AsyncSession,
        endpoint_id: str,
        *,
        url: Destination | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        format: str | None = None,
    ) -> WebhookEndpoint:
        """Change what is given; disabling fails the pending deliveries, enabling gives the endpoint a clean slate."""
        store = WebhookStore(session)
        endpoint = await self.endpoint(session, endpoint_id)
        now = self.clock()
        if url is not None:
            endpoint.url = url.url
        if event_types is not None:
            endpoint.event_types = normalize_event_types(event_types)
        if description is not None:
            endpoint.description = description
        if format is not None:
            # Pending deliveries go out in the new format: bodies are rendered at send time.
            endpoint.format = check_format(format)
        if enabled is True and not endpoint.enabled:
            endpoint.enabled = True
            endpoint.disabled_reason = endpoint.disabled_at = endpoint.failing_since = None
        elif enabled is False and endpoint.enabled:
            await disable_endpoint(session, endpoint, "manual", now)
        endpoint.updated_at = now
        store.forget_endpoints()
        await store.flush()
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
        store = WebhookStore(session)
        store.forget_endpoints()  # deliveries handed off before this commit are signed with both secrets
        await store.flush()
        return endpoint, secret

    async def send_test(self, session: AsyncSession, endpoint_id: str) -> WebhookDelivery:
        """Queue a `webhook.test` ping to the endpoint (sent by the sender like any delivery)."""
        store = WebhookStore(session)
        endpoint = await self.endpoint(session, endpoint_id)
        if not endpoint.enabled:
            raise WebhookConflict("the endpoint is disabled; enable it first")
        now = self.clock()
        message_id = new_id()
        payload = webhook_body(
            TEST_EVENT_TYPE, now, {"endpoint_id": endpoint.id, "message": "A test delivery from Handoff."}
        )
        delivery = WebhookDelivery(**_new_delivery(endpoint.id, message_id, TEST_EVENT_TYPE, payload, now))
        store.add(delivery)
        store.mark_enqueued()
        await store.flush()
        return delivery

    async def replay(self, session: AsyncSession, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        """Send one delivery again, now, with a fresh retry schedule and the same `webhook-id`."""
        store = WebhookStore(session)
        endpoint = await self.endpoint(session, endpoint_id)
        if not endpoint.enabled:
            raise WebhookConflict("the endpoint is disabled; enable it before replaying")
        delivery = await store.delivery(delivery_id)
        if delivery is None or delivery.endpoint_id != endpoint_id:
            raise LookupError("no delivery with this id for this endpoint")
        delivery.status = PENDING
        delivery.next_attempt_at = self.clock()
        delivery.schedule_step = 0
        delivery.replays += 1
        delivery.lease_token = delivery.lease_until = None
        store.revoke([delivery.id])  # a body still held in memory by this process's sender is not sent
        store.mark_enqueued()
        await store.flush()
        return delivery

    async def replay_failed_since(self, session: AsyncSession, endpoint_id: str, since: datetime) -> int:
        """Send again every failed delivery of the endpoint created at or after `since`; returns how many."""
        store = WebhookStore(session)
        endpoint = await self.endpoint(session, endpoint_id)
        if not endpoint.enabled:
            raise WebhookConflict("the endpoint is disabled; enable it before replaying")
        since = as_utc(since)
        count = await store.restart_failed_since(endpoint_id, since, self.clock())
        if count:
            store.mark_enqueued()
        return count

    async def deliveries(
        self, session: AsyncSession, endpoint_id: str, *, status: str | None = None, limit: int = 50
    ) -> list[DeliveryLog]:
        """The endpoint's deliveries, newest first, each with its attempts in order."""
        store = WebhookStore(session)
        await self.endpoint(session, endpoint_id)
        deliveries = await store.deliveries(endpoint_id, status=status, limit=limit)
        attempts = await store.attempts_of([d.id for d in deliveries])
        return [DeliveryLog(d, attempts[d.id]) for d in deliveries]


async def disable_endpoint(session: AsyncSession, endpoint: WebhookEndpoint, reason: str, now: datetime) -> int:
    """Disable the endpoint and fail its pending deliveries (they stay listed and can be replayed later)."""
    store = WebhookStore(session)
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.disabled_at = now
    endpoint.updated_at = now
    store.forget_endpoints()
    await store.flush()
    failed = await store.fail_pending(endpoint.id, reason)
    FAILURES.inc(failed)
    log.warning(
        "webhook_endpoint_disabled",
        endpoint_id=endpoint.id,
        host=urlsplit(endpoint.url).hostname,
        reason=reason,
        failing_since=iso(endpoint.failing_since),
        pending_deliveries_failed=failed,
    )
    return failed


async def reencrypt_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Encrypt every stored signing secret under the newest key (older keys' and clear ones alike); how many."""
    store = WebhookStore(session)
    count = 0
    for endpoint in await store.endpoints():
        endpoint.secret = box.rotate(endpoint.secret)
        count += 1
        if endpoint.previous_secret:
            endpoint.previous_secret = box.rotate(endpoint.previous_secret)
            count += 1
    await store.flush()
    return count


# -- in the event's own transaction: enqueueing, redaction; retention on the housekeeping loop ----------------


async def enqueue_deliveries(session: AsyncSession, events: Sequence[Event], now: datetime) -> int:
    """Queue one delivery per event and subscribed, enabled endpoint in the caller's transaction; returns the count."""
    if not events:
        return 0
    store = WebhookStore(session)
    endpoints = await store.subscribed_endpoints()
    wanted: list[tuple[str, Event, str]] = []
    for event in events:
        payload: str | None = None
        for endpoint_id, event_types in endpoints:
            if "*" not in event_types and event.type not in event_types:
                continue
            payload = payload or webhook_body(event.type, event.time, event.data)
            wanted.append((endpoint_id, event, payload))
    # The ids made together once their count is known (time-ordered: they key the deliveries' primary index).
    rows: list[NewDelivery] = [
        (delivery_id, endpoint_id, event.id, event.type, event.subject, payload)
        for delivery_id, (endpoint_id, event, payload) in zip(new_ids(len(wanted)), wanted, strict=True)
    ]
    if rows:
        await store.insert_deliveries(rows, now, str(uuid.uuid4()))  # one lease token for the transaction's rows
        store.mark_enqueued()
    # A write transaction that commits anyway: the sender's answered attempts take its COMMIT instead of their own.
    await store.record_answered()
    return len(rows)


async def redact_deliveries(session: AsyncSession, lead_id: str) -> int:
    """An erased lead's stored webhook bodies lose the person's data (`data.lead`) and a rep's own words about
    them (`data.reason` of reject, convert, disqualify); the decision stays. What receivers answered is dropped
    too: a receiver that echoes the body it was sent returns the person's data.

    A delivery still pending afterwards sends the redacted body, under the same webhook-id; a replay does too.
    Returns how many bodies changed.
    """
    store = WebhookStore(session)
    rows = await store.payloads_of_lead(lead_id)
    changed = 0
    for delivery_id, payload in rows:
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
        await store.set_payload(delivery_id, dumps(body).decode("utf-8"))
        changed += 1
    await store.clear_response_bodies([delivery_id for delivery_id, _ in rows])
    return changed


async def redact_resubmission_deliveries(session: AsyncSession, open_lead_id: str, repeat_lead_id: str) -> int:
    """An erased repeat's words live in the lead.resubmitted bodies of the open lead it joined (their subject):
    those bodies lose `data.lead`, the open lead's other deliveries stay as they are. Returns how many changed."""
    store = WebhookStore(session)
    changed = 0
    for delivery_id, payload in await store.payloads_of_lead(open_lead_id, event_type="lead.resubmitted"):
        body = loads(payload)
        data = body.get("data")
        if not isinstance(data, dict) or data.get("repeat_lead_id") != repeat_lead_id or not data.get("lead"):
            continue
        data["lead"] = {}
        await store.set_payload(delivery_id, dumps(body).decode("utf-8"))
        await store.clear_response_bodies([delivery_id])
        changed += 1
    return changed


async def purge_settled_deliveries(session: AsyncSession, settings: RoutingSettings, now: datetime) -> int:
    """Delete one batch of deliveries settled before the retention window, their attempts with them (cascade);
    pending ones are kept whatever their age. Returns how many went."""
    cutoff = now - timedelta(days=settings.webhook_retention_days)
    return await WebhookStore(session).purge_settled(cutoff, settings.webhook_purge_batch)


def _new_delivery(
    endpoint_id: str, message_id: str, event_type: str, payload: str, now: datetime, *, lead_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": new_id(),
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
