"""Many leads in one transaction: what the group-commit writer stores, one statement per question per batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.db import json_column_dumps
from common.envelope import Event
from common.ids import new_ids
from common.outbox import add_events
from ingest.handlers.leads import (
    IdempotencyConflict,
    PreparedLead,
    event_topic,
    identity_hash,
    received_event,
)
from ingest.handlers.views import source_view
from ingest.settings import IngestSettings
from ingest.store import Base, IdempotencyRecord, IdentityRow, IngestRepository, LeadRow, outbox


class Stored(NamedTuple):
    """The answer to one prepared lead: a new 202, or the stored response of its Idempotency-Key. A NamedTuple:
    as immutable as the frozen dataclass it was, built in a fifth of the time (one per lead)."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def _body(
    lead_id: str, status: str, duplicate_of: str | None, is_test: bool, correlation_id: str | None
) -> dict[str, Any]:
    """`Accepted(...).body(correlation_id)` without the object: the 202's body of a lead of the batch."""
    return {
        "lead_id": lead_id,
        "status": status,
        "duplicate_of": duplicate_of,
        "is_test": is_test,
        "correlation_id": correlation_id,
    }


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


class BatchStore(Protocol):
    """The questions a batch asks of its transaction: IngestRepository on a session, or the writer's driver-level
    transaction on SQLite (ingest.store.batch_sqlite); `session` is what common.outbox and the metrics write to."""

    session: Any

    async def idempotency_many(self, scope_keys: Collection[str]) -> Mapping[str, Any]: ...
    async def drop_idempotency(self, scope_keys: Collection[str]) -> None: ...
    async def leads_by_external_ids(
        self, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str | None, bool]]: ...
    async def first_leads_for(
        self, identities: Collection[str], since: datetime
    ) -> dict[str, tuple[datetime, str]]: ...
    async def earlier_lead_for(self, identities: list[str], since: datetime) -> str | None: ...
    async def insert_leads(self, leads: Sequence[LeadRow], identities: Sequence[IdentityRow]) -> None: ...
    async def insert_rows(self, model: type[Base], rows: Sequence[dict[str, Any]]) -> None: ...


async def accept_leads(
    session: AsyncSession, settings: IngestSettings, items: Sequence[PreparedLead]
) -> list[Stored | IdempotencyConflict]:
    """`accept_batch` in a session's transaction."""
    return await accept_batch(IngestRepository(session), settings, items)


async def accept_batch(
    repo: BatchStore, settings: IngestSettings, items: Sequence[PreparedLead]
) -> list[Stored | IdempotencyConflict]:
    """Store a batch of leads as `accept_lead` stores one, with one statement per question for the whole batch.

    Items are decided in order, so a later item sees the earlier ones: the second lead of a person in a batch is a
    repeat of the first, and the second use of an Idempotency-Key replays (or conflicts with) the first.
    """
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
            stored_first[identity] = (seen_at, lead_id)

    outcomes: list[Stored | IdempotencyConflict] = []
    claimed: dict[str, tuple[str, Stored]] = {}
    expired: set[str] = set()
    leads: list[LeadRow] = []
    identity_rows: list[IdentityRow] = []
    key_rows: list[dict[str, Any]] = []
    events: list[Event] = []
    received: Counter[str] = Counter()  # accepted leads by source kind, counted once the batch commits
    fresh_ids = iter(new_ids(2 * len(items)))  # a lead's id and its event's id
    views: dict[str | None, dict[str, Any]] = {}  # each source's view, named once per batch in its events
    for item, identities in zip(items, identities_of, strict=True):
        key = item.scope_key
        if key is not None:
            earlier = claimed.get(key)
            record = records.get(key)
            if earlier is None and record is not None:
                if record.created_at < item.now - timedelta(hours=settings.idempotency_ttl_hours):
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
            body = _body(lead_id, "duplicate", duplicate_of, is_test, item.correlation_id)
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
            lead_id = next(fresh_ids)
            body = _body(lead_id, "accepted", duplicate_of, item.is_test, item.correlation_id)
            # Serialized once: the same JSON text goes into the lead's row and its event.
            text = json_column_dumps(item.lead.to_dict())
            kind = item.source.kind if item.source else "api"
            leads.append(
                LeadRow(
                    lead_id,
                    source_id,
                    kind,
                    item.external_id,
                    item.is_test,
                    duplicate_of,
                    text,
                    item.now,
                    item.correlation_id,
                )
            )
            for identity in identities:
                identity_rows.append(IdentityRow(identity, lead_id, item.now))
                batch_seen.setdefault(identity, []).append((item.now, len(leads), lead_id))
            if external is not None:
                known[external] = (lead_id, duplicate_of, item.is_test)
            view = views.get(source_id)
            if view is None:
                view = views[source_id] = source_view(item.source)
            events.append(
                received_event(
                    item.source,
                    item.now,
                    item.correlation_id,
                    lead_id,
                    item.external_id,
                    item.is_test,
                    duplicate_of,
                    orjson.Fragment(text),
                    event_id=next(fresh_ids),
                    view=view,
                )
            )
            received[kind] += 1
        stored = Stored(202, body)
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
    await repo.insert_leads(leads, identity_rows)
    await repo.insert_rows(IdempotencyRecord, key_rows)
    await add_events(repo.session, outbox, settings, events, event_topic)
    for kind, count in received.items():
        metrics.lead_received(repo.session, kind, count)
    return outcomes
