"""Accepting one lead: normalize, dedupe, store, and put `lead.received` in the outbox of the same transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.envelope import Event
from common.ids import new_id
from common.outbox import add_events
from common.topics import EVENT_TOPICS
from ingest.domain import NormalizedLead, hash_api_key, normalize_lead
from ingest.domain.forms import HONEYPOT_FIELDS
from ingest.handlers.views import source_view
from ingest.settings import IngestSettings
from ingest.store import IngestRepository, Lead, LeadIdentity, Source, outbox

EVENT_SOURCE = "/handoff/ingest"


class IdempotencyConflict(Exception):
    """The same Idempotency-Key was used with a different request body."""


@dataclass(slots=True)
class PreparedLead:
    """A lead normalized outside the writer's transaction, with what it needs to be stored and answered. Not frozen:
    a frozen dataclass's __init__ sets each field through object.__setattr__ (~2 us a lead); nothing changes one."""

    lead: NormalizedLead
    source: Source | None
    now: datetime
    correlation_id: str | None
    scope_key: str | None = None  # the caller-scoped Idempotency-Key, if one was sent
    fingerprint: str = ""
    external_id: str | None = None
    is_test: bool = False


def prepare_lead(
    fields: dict[str, Any],
    source: Source | None,
    principal: str,
    *,
    body: bytes,
    content_type: str,
    idempotency_key: str | None,
    now: datetime,
    correlation_id: str | None,
) -> PreparedLead:
    """A posted lead as the group-commit writer takes it: honeypot fields dropped, normalized for its source, its
    Idempotency-Key scoped to the caller and its request fingerprinted. Raises LeadValidationError (a 422, or
    quarantined when it is no lead); the route and the fast path both prepare leads here."""
    for name in HONEYPOT_FIELDS:
        fields.pop(name, None)
    lead = normalize_lead(
        fields,
        default_region=source.default_region if source else None,
        field_mapping=source.field_mapping if source else None,
        now=now,
    )
    return PreparedLead(
        lead,
        source,
        now,
        correlation_id,
        # Only an Idempotency-Key's record compares fingerprints: without a key none is needed.
        scope_key=idempotency_scope(principal, idempotency_key) if idempotency_key else None,
        fingerprint=request_fingerprint(body, content_type) if idempotency_key else "",
    )


@dataclass(frozen=True)
class Accepted:
    lead_id: str
    status: str  # "accepted" | "duplicate"
    duplicate_of: str | None
    is_test: bool

    def body(self, correlation_id: str | None) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "status": self.status,
            "duplicate_of": self.duplicate_of,
            "is_test": self.is_test,
            "correlation_id": correlation_id,
        }


def event_topic(event: Event) -> str:
    """The topic an event of this service goes to."""
    return EVENT_TOPICS[event.type]


def identity_hash(identity: str) -> str:
    """Repeat detection compares hashes, so the identities index holds no email or phone in clear."""
    return hashlib.sha256(b"handoff-identity:" + identity.encode()).hexdigest()


def received_event(
    source: Source | None,
    now: datetime,
    correlation_id: str | None,
    lead_id: str,
    external_id: str | None,
    is_test: bool,
    duplicate_of: str | None,
    data: dict[str, Any] | orjson.Fragment,
    *,
    event_id: str | None = None,
    view: dict[str, Any] | None = None,
) -> Event:
    """The `lead.received` event of a stored lead; `data` may be the lead's JSON already serialized (a Fragment),
    `view` the source's `source_view` when the caller has it (a batch names each source once)."""
    return Event(
        type="lead.received",
        source=EVENT_SOURCE,
        subject=lead_id,
        time=now,
        correlation_id=correlation_id,
        id=event_id or new_id(),
        data={
            "lead_id": lead_id,
            "source": source_view(source) if view is None else view,
            "external_id": external_id,
            "is_test": is_test,
            "duplicate_of": duplicate_of,
            "received_at": now.isoformat(),
            "lead": data,
        },
    )


async def accept_lead(
    session: AsyncSession,
    settings: IngestSettings,
    *,
    raw: Mapping[str, Any],
    source: Source | None,
    now: datetime,
    correlation_id: str | None,
    external_id: str | None = None,
    is_test: bool = False,
    normalized: NormalizedLead | None = None,
) -> Accepted:
    """Normalize, dedupe and store one lead, and put `lead.received` in the outbox of the same transaction."""
    repo = IngestRepository(session)
    lead = normalized or normalize_lead(
        raw,
        default_region=source.default_region if source else None,
        field_mapping=source.field_mapping if source else None,
        now=now,
    )
    if external_id and source is not None:
        existing = await repo.lead_by_external_id(source.id, external_id)
        if existing is not None:
            # A platform redelivery: the lead is already ours, nothing new to publish.
            return Accepted(existing.id, "duplicate", existing.duplicate_of, existing.is_test)

    identities = [identity_hash(key) for key in lead.identity_keys()]
    duplicate_of = None
    if settings.repeat_window_hours > 0:
        duplicate_of = await repo.earlier_lead_for(identities, now - timedelta(hours=settings.repeat_window_hours))

    lead_id = new_id()
    data = lead.to_dict()
    session.add(
        Lead(
            id=lead_id,
            source_id=source.id if source else None,
            source_kind=source.kind if source else "api",
            external_id=external_id,
            is_test=is_test,
            duplicate_of=duplicate_of,
            data=data,
            received_at=now,
            correlation_id=correlation_id,
        )
    )
    session.add_all(LeadIdentity(identity=i, lead_id=lead_id, seen_at=now) for i in identities)
    event = received_event(source, now, correlation_id, lead_id, external_id, is_test, duplicate_of, data)
    await session.flush()
    await add_events(session, outbox, settings, [event], event_topic)
    metrics.lead_received(session, source.kind if source else "api")
    return Accepted(lead_id, "accepted", duplicate_of, is_test)


async def purge_expired_keys(session: AsyncSession, settings: IngestSettings, now: datetime) -> int:
    """One batch of Idempotency-Keys past their TTL, deleted; an expired key is never replayed anyway."""
    cutoff = now - timedelta(hours=settings.idempotency_ttl_hours)
    return await IngestRepository(session).purge_idempotency(cutoff, settings.idempotency_purge_batch)


async def purge_erased_identities(session: AsyncSession, settings: IngestSettings, now: datetime) -> int:
    """One batch of the identity rows erased leads left behind (marked `erased`, matching no one), deleted.

    A live lead's identity hashes are kept as long as the lead: besides the repeat window they are the only index
    that finds a person's leads for a subject-access request or an erase-all (GET /v1/leads?email=, POST
    /v1/subjects/erase), so the table grows with the leads table (at most two rows a lead), not beyond it."""
    return await IngestRepository(session).purge_identities(settings.idempotency_purge_batch)


def request_fingerprint(body: bytes, content_type: str) -> str:
    return hashlib.sha256(content_type.encode() + b"\n" + body).hexdigest()


def idempotency_scope(principal: str, key: str) -> str:
    """Keys are scoped to the caller, so two sources cannot collide on the same key."""
    return hashlib.sha256(f"{principal}\n{key}".encode()).hexdigest()


async def source_by_api_key(session: AsyncSession, api_key: str) -> Source | None:
    """The enabled source of a secret API key; the look-up is by hash, so no secret is compared byte by byte."""
    source = await IngestRepository(session).source_by_key_hash(hash_api_key(api_key))
    return source if source is not None and source.enabled else None


async def source_by_publishable_key(session: AsyncSession, key: str) -> Source | None:
    """The enabled source of a publishable key."""
    source = await IngestRepository(session).source_by_publishable_key(key)
    return source if source is not None and source.enabled else None


async def key_used_for_another_body(session: AsyncSession, scope_key: str, fingerprint: str) -> bool:
    """Whether a stored response holds this Idempotency-Key for another body (a reused key is a 409)."""
    record = await IngestRepository(session).idempotency(scope_key)
    return record is not None and record.request_hash != fingerprint
