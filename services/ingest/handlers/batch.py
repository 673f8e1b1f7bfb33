"""Ingest use cases. HTTP routes call these inside the transaction they own; handlers only add and flush."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.crypto import SecretBox, is_encrypted
from common.envelope import Event
from common.outbox import add_events
from common.topics import EVENT_TOPICS
from ingest.domain import (
    NormalizedLead,
    hash_api_key,
    new_api_key,
    new_publishable_key,
    normalize_lead,
)
from ingest.settings import IngestSettings
from ingest.store import (
    IdempotencyRecord,
    IngestRepository,
    Lead,
    LeadIdentity,
    PlatformFetch,
    QuarantinedSubmission,
    Source,
    outbox,
)

EVENT_SOURCE = "/handoff/ingest"


class IdempotencyConflict(Exception):
    """The same Idempotency-Key was used with a different request body."""


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


def _topic(event: Event) -> str:
    return EVENT_TOPICS[event.type]


def identity_hash(identity: str) -> str:
    """Repeat detection compares hashes, so the identities index holds no email or phone in clear."""
    return hashlib.sha256(b"handoff-identity:" + identity.encode()).hexdigest()


def source_view(source: Source | None) -> dict[str, Any]:
    if source is None:
        return {"id": None, "kind": "api", "name": "admin API"}
    return {"id": source.id, "kind": source.kind, "name": source.name}


def received_event(
    source: Source | None,
    now: datetime,
    correlation_id: str | None,
    lead_id: str,
    external_id: str | None,
    is_test: bool,
    duplicate_of: str | None,
    data: dict[str, Any],
) -> Event:
    """The `lead.received` event of a stored lead."""
    return Event(
        type="lead.received",
        source=EVENT_SOURCE,
        subject=lead_id,
        time=now,
        correlation_id=correlation_id,
        data={
            "lead_id": lead_id,
            "source": source_view(source),
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

    lead_id = str(uuid.uuid4())
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
    await add_events(session, outbox, settings, [event], _topic)
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


# -- quarantine: authenticated submissions that are not leads ----------------------------------------------------


class QuarantineDecided(Exception):
    """The quarantined submission was dismissed already; it cannot be released."""

    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(f"this submission was {status} already")


@dataclass(frozen=True)
class Released:
    """The lead a quarantined submission became; `replayed` when an earlier release made it."""

    quarantine_id: str
    lead_id: str
    duplicate_of: str | None
    replayed: bool

    def body(self) -> dict[str, Any]:
        return {
            "quarantine_id": self.quarantine_id,
            "status": "released",
            "lead_id": self.lead_id,
            "duplicate_of": self.duplicate_of,
        }


async def quarantine_submission(
    session: AsyncSession,
    *,
    source: Source | None,
    reason: str,
    problems: Sequence[Mapping[str, str]],
    content_type: str,
    body: bytes,
    origin: str | None,
    now: datetime,
    correlation_id: str | None,
) -> str:
    """Keep a submission that is not a lead, with why; counted per source and reason once committed."""
    row_id = str(uuid.uuid4())
    session.add(
        QuarantinedSubmission(
            id=row_id,
            source_id=source.id if source else None,
            reason=reason,
            problems=[dict(p) for p in problems],
            content_type=content_type[:64],
            body=body.decode("utf-8", "replace"),
            origin=origin[:300] if origin else None,
            status="pending",
            received_at=now,
            correlation_id=correlation_id,
        )
    )
    await session.flush()
    metrics.quarantined(session, source.id if source else None, reason)
    return row_id


async def release_quarantined(
    session: AsyncSession,
    settings: IngestSettings,
    row: QuarantinedSubmission,
    lead: NormalizedLead | None,
    *,
    now: datetime,
    correlation_id: str | None,
) -> Released:
    """Store the corrected submission as a lead, once: a later release answers with the first one's lead.

    `lead` is None when the row was read as decided already (there is no body left to normalize).
    """
    repo = IngestRepository(session)
    if lead is None or not await repo.decide_quarantined(row.id, "released", now, None):
        current = row if lead is None else await repo.quarantined(row.id)
        if current is None or current.status != "released" or current.lead_id is None:
            raise QuarantineDecided(current.status if current else "purged")
        earlier = await repo.lead(current.lead_id)
        return Released(row.id, current.lead_id, earlier.duplicate_of if earlier else None, replayed=True)
    source = await repo.source(row.source_id) if row.source_id else None
    accepted = await accept_lead(
        session, settings, raw={}, source=source, now=now, correlation_id=correlation_id, normalized=lead
    )
    await repo.set_released_lead(row.id, accepted.lead_id)
    return Released(row.id, accepted.lead_id, accepted.duplicate_of, replayed=False)


async def dismiss_quarantined(session: AsyncSession, row_id: str, now: datetime, note: str | None) -> str:
    """Record the dismissal and erase the body; the row's new status (or the status it had, if decided already)."""
    repo = IngestRepository(session)
    if await repo.decide_quarantined(row_id, "dismissed", now, note):
        return "dismissed"
    current = await repo.quarantined(row_id)
    return current.status if current else "purged"


async def purge_quarantine(session: AsyncSession, settings: IngestSettings, now: datetime) -> int:
    """One batch of quarantined submissions past the retention period, deleted with their bodies."""
    cutoff = now - timedelta(days=settings.quarantine_retention_days)
    return await IngestRepository(session).purge_quarantine(cutoff, settings.idempotency_purge_batch)


def quarantine_view(row: QuarantinedSubmission, source: Source | None, fields: dict[str, Any] | None) -> dict[str, Any]:
    """A quarantined submission as the admin API shows it; `fields` is its parsed body (None once erased)."""
    return {
        "id": row.id,
        "source": source_view(source) if source or row.source_id is None else {"id": row.source_id},
        "reason": row.reason,
        "problems": list(row.problems or []),
        "status": row.status,
        "origin": row.origin,
        "content_type": row.content_type,
        "fields": fields,
        "lead_id": row.lead_id,
        "note": row.note,
        "received_at": as_utc(row.received_at).isoformat(),
        "decided_at": as_utc(row.decided_at).isoformat() if row.decided_at else None,
    }


# -- many leads in one transaction (the group-commit writer) ---------------------------------------------------


@dataclass(frozen=True)
class PreparedLead:
    """A lead normalized outside the writer's transaction, with what it needs to be stored and answered."""

    lead: NormalizedLead
    source: Source | None
    now: datetime
    correlation_id: str | None
    scope_key: str | None = None  # the caller-scoped Idempotency-Key, if one was sent
    fingerprint: str = ""
    external_id: str | None = None
    is_test: bool = False


@dataclass(frozen=True)
class Stored:
    """The answer to one prepared lead: a new 202, or the stored response of its Idempotency-Key."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def _first_sighting(
    identities: Sequence[str],
    since: datetime,
    stored: Mapping[str, tuple[datetime, str]],
    batch: Mapping[str, list[tuple[datetime, int, str]]],
) -> tuple[tuple[datetime, int, str] | None, bool]:
    """The earliest sighting of any identity since `since`, and whether the stored ones were looked up too early."""
    found: list[tuple[datetime, int, str]] = []
    stale = False
    for identity in identities:
        first = stored.get(identity)
        if first is not None:
            if first[0] >= since:
                found.append((first[0], -1, first[1]))  # stored before the batch: earlier on a tie
            else:
                stale = True
        found.extend(s for s in batch.get(identity, ()) if s[0] >= since)
    return (min(found) if found else None), stale


async def accept_leads(
    session: AsyncSession, settings: IngestSettings, items: Sequence[PreparedLead]
) -> list[Stored | IdempotencyConflict]:
    """Store a batch of leads as `accept_lead` stores one, with one statement per question for the whole batch.

    Items are decided in order, so a later item sees the earlier ones: the second lead of a person in a batch is a
    repeat of the first, and the second use of an Idempotency-Key replays (or conflicts with) the first.
    """
    repo = IngestRepository(session)
    records = await repo.idempotency_many({i.scope_key for i in items if i.scope_key})
    known = await repo.leads_by_external_ids(
        {(i.source.id, i.external_id) for i in items if i.external_id and i.source is not None}
    )
    identities_of = [[identity_hash(key) for key in i.lead.identity_keys()] for i in items]
    window = timedelta(hours=settings.repeat_window_hours)
    stored_first: dict[str, tuple[datetime, str]] = {}
    batch_seen: dict[str, list[tuple[datetime, int, str]]] = {}
    if settings.repeat_window_hours > 0:
        since = min(i.now for i in items) - window
        wanted = {identity for identities in identities_of for identity in identities}
        for identity, (seen_at, lead_id) in (await repo.first_leads_for(wanted, since)).items():
            stored_first[identity] = (as_utc(seen_at), lead_id)

    outcomes: list[Stored | IdempotencyConflict] = []
    claimed: dict[str, tuple[str, Stored]] = {}
    expired: set[str] = set()
    leads: list[dict[str, Any]] = []
    identity_rows: list[dict[str, Any]] = []
    key_rows: list[dict[str, Any]] = []
    events: list[Event] = []
    for item, identities in zip(items, identities_of, strict=True):
        key = item.scope_key
        if key is not None:
            earlier = claimed.get(key)
            record = records.get(key)
            if earlier is None and record is not None:
                if as_utc(record.created_at) < item.now - timedelta(hours=settings.idempotency_ttl_hours):
                    expired.add(key)
                else:
                    earlier = (record.request_hash, Stored(record.status_code, record.response))
            if earlier is not None:
                fingerprint, first = earlier
                same = fingerprint == item.fingerprint
                outcomes.append(Stored(first.status, first.body, replayed=True) if same else IdempotencyConflict())
                continue

        source_id = item.source.id if item.source else None
        external = (source_id, item.external_id) if source_id and item.external_id else None
        if external is not None and external in known:
            # A platform redelivery: the lead is already ours, nothing new to publish.
            lead_id, duplicate_of, is_test = known[external]
            accepted = Accepted(lead_id, "duplicate", duplicate_of, is_test)
        else:
            duplicate_of = None
            if settings.repeat_window_hours > 0:
                since = item.now - window
                sighting, stale = _first_sighting(identities, since, stored_first, batch_seen)
                if stale:
                    # The batch's look-up began at its oldest item's window; this item's starts later, so ask alone.
                    # A stored lead predates every lead of this batch, so it wins when there is one.
                    duplicate_of = await repo.earlier_lead_for(identities, since)
                if duplicate_of is None and sighting is not None:
                    duplicate_of = sighting[2]
            lead_id = str(uuid.uuid4())
            accepted = Accepted(lead_id, "accepted", duplicate_of, item.is_test)
            data = item.lead.to_dict()
            leads.append(
                {
                    "id": lead_id,
                    "source_id": source_id,
                    "source_kind": item.source.kind if item.source else "api",
                    "external_id": item.external_id,
                    "is_test": item.is_test,
                    "duplicate_of": duplicate_of,
                    "data": data,
                    "received_at": item.now,
                    "correlation_id": item.correlation_id,
                    "erased_at": None,
                }
            )
            for identity in identities:
                identity_rows.append({"identity": identity, "lead_id": lead_id, "seen_at": item.now})
                batch_seen.setdefault(identity, []).append((item.now, len(leads), lead_id))
            if external is not None:
                known[external] = (lead_id, duplicate_of, item.is_test)
            events.append(
                received_event(
                    item.source,
                    item.now,
                    item.correlation_id,
                    lead_id,
                    item.external_id,
                    item.is_test,
                    duplicate_of,
                    data,
                )
            )
            metrics.lead_received(session, item.source.kind if item.source else "api")
        stored = Stored(202, accepted.body(item.correlation_id))
        if key is not None:
            claimed[key] = (item.fingerprint, stored)
            key_rows.append(
                {
                    "scope_key": key,
                    "request_hash": item.fingerprint,
                    "status_code": stored.status,
                    "response": stored.body,
                    "created_at": item.now,
                }
            )
        outcomes.append(stored)

    await repo.drop_idempotency(expired)
    await repo.insert_rows(Lead, leads)
    await repo.insert_rows(LeadIdentity, identity_rows)
    await repo.insert_rows(IdempotencyRecord, key_rows)
    await add_events(session, outbox, settings, events, _topic)
    return outcomes


def request_fingerprint(body: bytes, content_type: str) -> str:
    return hashlib.sha256(content_type.encode() + b"\n" + body).hexdigest()


def idempotency_scope(principal: str, key: str) -> str:
    """Keys are scoped to the caller, so two sources cannot collide on the same key."""
    return hashlib.sha256(f"{principal}\n{key}".encode()).hexdigest()


async def replay_idempotent(
    session: AsyncSession, settings: IngestSettings, scope_key: str, fingerprint: str, now: datetime
) -> tuple[int, dict[str, Any]] | None:
    """The stored response for a repeated key, None for a new key; raises IdempotencyConflict on another body."""
    record = await IngestRepository(session).idempotency(scope_key)
    if record is None:
        return None
    created = record.created_at if record.created_at.tzinfo else record.created_at.replace(tzinfo=UTC)
    if created < now - timedelta(hours=settings.idempotency_ttl_hours):
        await session.delete(record)
        await session.flush()
        return None
    if record.request_hash != fingerprint:
        raise IdempotencyConflict
    return record.status_code, record.response


def remember_idempotent(
    session: AsyncSession, scope_key: str, fingerprint: str, status: int, body: dict[str, Any], now: datetime
) -> None:
    session.add(
        IdempotencyRecord(
            scope_key=scope_key, request_hash=fingerprint, status_code=status, response=body, created_at=now
        )
    )


# -- sources --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSource:
    source: Source
    api_key: str | None
    publishable_key: str | None


async def create_source(session: AsyncSession, fields: Mapping[str, Any], now: datetime) -> NewSource:
    """A web source gets a secret API key (shown once) and a publishable key for browser forms."""
    api_key = new_api_key() if fields["kind"] == "web" else None
    publishable = new_publishable_key() if fields["kind"] == "web" else None
    source = Source(
        id=str(uuid.uuid4()),
        kind=fields["kind"],
        name=fields["name"],
        enabled=True,
        default_region=fields.get("default_region"),
        field_mapping=dict(fields.get("field_mapping") or {}),
        config=dict(fields.get("config") or {}),
        api_key_hash=hash_api_key(api_key) if api_key else None,
        api_key_prefix=api_key[:12] if api_key else None,
        publishable_key=publishable,
        allowed_origins=list(fields.get("allowed_origins") or []),
        thank_you_url=fields.get("thank_you_url"),
        created_at=now,
        updated_at=now,
    )
    session.add(source)
    await session.flush()
    return NewSource(source, api_key, publishable)


async def rotate_source_key(session: AsyncSession, source: Source, now: datetime) -> str:
    api_key = new_api_key()
    source.api_key_hash = hash_api_key(api_key)
    source.api_key_prefix = api_key[:12]
    source.updated_at = now
    await session.flush()
    return api_key


# Config values that are secrets (signing secrets, shared keys, access tokens): stored encrypted, never shown.
SECRET_CONFIG_KEYS = frozenset({"app_secret", "verify_token", "access_token", "google_key", "client_secret", "secret"})


def sealed_config(box: SecretBox, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with each secret encrypted; other settings (base URLs, property lists) and nulls as they are."""
    return {
        key: box.seal(value) if key in SECRET_CONFIG_KEYS and isinstance(value, str) and not is_encrypted(value)
        else value
        for key, value in config.items()
    }


async def reencrypt_source_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Encrypt every stored source secret under the newest key (older keys' and clear ones alike); how many."""
    count = 0
    for source in await IngestRepository(session).sources():
        config = dict(source.config or {})
        for key, value in config.items():
            if key in SECRET_CONFIG_KEYS and isinstance(value, str):
                config[key] = box.rotate(value)
                count += 1
        source.config = config  # a new dict, so the JSON column is seen as changed
    await session.flush()
    return count


def merged_config(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH changes one secret without resending the others; a null value removes that setting."""
    merged = {**(current or {}), **changes}
    return {key: value for key, value in merged.items() if value is not None}


def update_source(source: Source, changes: Mapping[str, Any], now: datetime) -> None:
    """Apply validated changes; `config` here is already the merged whole (see `merged_config`)."""
    for name in ("name", "enabled", "default_region", "field_mapping", "allowed_origins", "thank_you_url", "config"):
        if name in changes:
            setattr(source, name, changes[name])
    source.updated_at = now


# -- erasure --------------------------------------------------------------------------------------------------


async def erase_lead(
    session: AsyncSession, settings: IngestSettings, lead: Lead, now: datetime, correlation_id: str | None
) -> None:
    """Remove the personal data and tell the other services to do the same; the anonymous row stays."""
    if lead.erased_at is not None:
        return
    lead.data = None
    lead.erased_at = now
    await IngestRepository(session).forget_identities(lead.id)
    event = Event(
        type="lead.erased",
        source=EVENT_SOURCE,
        subject=lead.id,
        time=now,
        correlation_id=correlation_id,
        data={"lead_id": lead.id, "erased_at": now.isoformat()},
    )
    await session.flush()
    await add_events(session, outbox, settings, [event], _topic)


# A person with more leads than this is erased in several calls (each answers how many it erased).
SUBJECT_MAX_LEADS = 1000


async def subject_leads(session: AsyncSession, identity_keys: Sequence[str]) -> list[Lead]:
    """A person's leads, found by the hashes of their normalized email or phone (the identities index)."""
    hashes = [identity_hash(key) for key in identity_keys]
    return await IngestRepository(session).leads_of_subject(hashes, limit=SUBJECT_MAX_LEADS)


async def erase_subject(
    session: AsyncSession,
    settings: IngestSettings,
    identity_keys: Sequence[str],
    now: datetime,
    correlation_id: str | None,
    mentions: Sequence[str] = (),
) -> list[str]:
    """Erase every lead of one person through the normal erasure (one lead.erased each); returns their ids.

    Quarantined submissions are not leads and have no identity index: those whose body contains one of `mentions`
    (the email or phone as given, also form-encoded) are dismissed with their body erased.
    """
    leads = await subject_leads(session, identity_keys)
    for lead in leads:
        await erase_lead(session, settings, lead, now, correlation_id)
    # Short values would match unrelated bodies; an email or phone is longer than this.
    given = [mention.strip() for mention in mentions if len(mention.strip()) >= 5]
    needles = {form for mention in given for form in (mention, quote_plus(mention))}
    await IngestRepository(session).erase_quarantine_mentioning(needles, now)
    return [lead.id for lead in leads if lead.erased_at == now]


def lead_view(lead: Lead, source: Source | None) -> dict[str, Any]:
    return {
        "lead_id": lead.id,
        "source": source_view(source) if source or lead.source_id is None else {"id": lead.source_id},
        "external_id": lead.external_id,
        "is_test": lead.is_test,
        "duplicate_of": lead.duplicate_of,
        "received_at": as_utc(lead.received_at).isoformat(),
        "erased_at": as_utc(lead.erased_at).isoformat() if lead.erased_at else None,
        "lead": lead.data,
    }


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time this service stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- platform webhooks ---------------------------------------------------------------------------------------


async def queue_platform_fetch(
    session: AsyncSession, source: Source, external_id: str, notification: Mapping[str, Any], now: datetime
) -> bool:
    """Remember a lead to fetch from the platform; False when it is already stored or already queued."""
    repo = IngestRepository(session)
    if await repo.lead_by_external_id(source.id, external_id) is not None:
        return False  # a redelivery of a lead we already have
    if await repo.platform_fetch_queued(source.id, external_id):
        return False
    session.add(
        PlatformFetch(
            source_id=source.id,
            external_id=external_id,
            notification=dict(notification),
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    await session.flush()
    return True


async def erase_platform_lead(
    session: AsyncSession,
    settings: IngestSettings,
    source: Source,
    external_id: str,
    now: datetime,
    correlation_id: str | None,
) -> bool:
    """The platform deleted a lead: erase our copy, forget a pending fetch; False if we had neither."""
    repo = IngestRepository(session)
    pending = await repo.drop_platform_fetch(source.id, external_id)
    lead = await repo.lead_by_external_id(source.id, external_id)
    if lead is not None:
        await erase_lead(session, settings, lead, now, correlation_id)
    return lead is not None or bool(pending)


@dataclass(frozen=True)
class ClaimedFetch:
    """A due fetch, leased to one worker until `lease_until`; `source` is a detached snapshot."""

    id: int
    source: Source
    external_id: str
    notification: dict[str, Any]
    attempts: int


async def claim_platform_fetches(
    session: AsyncSession, now: datetime, *, limit: int, lease_until: datetime
) -> list[ClaimedFetch]:
    """Take up to `limit` due fetches and push them past `lease_until`, so no other worker takes them too.

    A worker that dies mid-fetch loses nothing: its rows fall due again when the lease ends.
    """
    claimed = []
    for fetch, source in await IngestRepository(session).due_platform_fetches(now, limit=limit):
        fetch.next_attempt_at = lease_until
        claimed.append(
            ClaimedFetch(fetch.id, source, fetch.external_id, dict(fetch.notification or {}), fetch.attempts)
        )
    await session.flush()
    return claimed


async def store_fetched_lead(
    session: AsyncSession,
    settings: IngestSettings,
    fetch_id: int,
    *,
    normalized: NormalizedLead,
    is_test: bool,
    now: datetime,
) -> Accepted | None:
    """Store a fetched lead and drop its fetch row in one transaction; None if the row is gone (erased)."""
    repo = IngestRepository(session)
    fetch = await repo.platform_fetch(fetch_id)
    if fetch is None:
        return None
    source = await repo.source(fetch.source_id)
    notification = fetch.notification or {}
    accepted = await accept_lead(
        session,
        settings,
        raw={},
        source=source,
        now=now,
        correlation_id=notification.get("correlation_id"),
        external_id=fetch.external_id,
        is_test=is_test,
        normalized=normalized,
    )
    await session.delete(fetch)
    await session.flush()
    return accepted


async def record_fetch_failure(
    session: AsyncSession, fetch_id: int, error: str, retry_at: datetime
) -> int | None:
    """Count a failed attempt and schedule the next; the row is kept whatever the count; None if gone."""
    fetch = await IngestRepository(session).platform_fetch(fetch_id)
    if fetch is None:
        return None
    fetch.attempts += 1
    fetch.next_attempt_at = retry_at
    fetch.last_error = error[:500]
    await session.flush()
    return fetch.attempts
