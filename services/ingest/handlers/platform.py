"""Platform webhooks' use cases: leads stored whole, announced by id and fetched later, or deleted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ingest.domain import NormalizedLead
from ingest.domain.sources.platform import Delivery
from ingest.handlers.erasure import erase_lead
from ingest.handlers.leads import Accepted, accept_lead
from ingest.settings import IngestSettings
from ingest.store import IngestRepository, PlatformFetch, PlatformFetchRepository, Source


async def queue_platform_fetch(
    session: AsyncSession, source: Source, external_id: str, notification: Mapping[str, Any], now: datetime
) -> bool:
    """Remember a lead to fetch from the platform; False when it is already stored or already queued."""
    if await IngestRepository(session).lead_by_external_id(source.id, external_id) is not None:
        return False  # a redelivery of a lead we already have
    if await PlatformFetchRepository(session).platform_fetch_queued(source.id, external_id):
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
    pending = await PlatformFetchRepository(session).drop_platform_fetch(source.id, external_id)
    lead = await IngestRepository(session).lead_by_external_id(source.id, external_id)
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
    for fetch, source in await PlatformFetchRepository(session).due_platform_fetches(now, limit=limit):
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
    fetches = PlatformFetchRepository(session)
    fetch = await fetches.platform_fetch(fetch_id)
    if fetch is None:
        return None
    source = await IngestRepository(session).source(fetch.source_id)
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
    await fetches.remove(fetch)
    await session.flush()
    return accepted


async def record_fetch_failure(session: AsyncSession, fetch_id: int, error: str, retry_at: datetime) -> int | None:
    """Count a failed attempt and schedule the next; the row is kept whatever the count; None if gone."""
    fetch = await PlatformFetchRepository(session).platform_fetch(fetch_id)
    if fetch is None:
        return None
    fetch.attempts += 1
    fetch.next_attempt_at = retry_at
    fetch.last_error = error[:500]
    await session.flush()
    return fetch.attempts


async def webhook_source(session: AsyncSession, source_id: str, webhook_kinds: frozenset[str]) -> Source | None:
    """The enabled platform source a webhook URL names; None for an unknown, disabled or web source (all alike)."""
    found = await IngestRepository(session).source(source_id)
    if found is None or not found.enabled or found.kind not in webhook_kinds:
        return None
    return found


class SourceGone(LookupError):
    """The source was disabled or deleted between verification and storing."""


async def apply_delivery(
    session: AsyncSession,
    settings: IngestSettings,
    source_id: str,
    delivery: Delivery,
    now: datetime,
    correlation_id: str | None,
) -> dict[str, Any]:
    """Store the whole leads, queue the fetches and erase the deleted leads of one verified request."""
    source = await IngestRepository(session).source(source_id)
    if source is None or not source.enabled:
        raise SourceGone(source_id)
    leads = []
    for lead, normalized in delivery.leads:
        accepted = await accept_lead(
            session,
            settings,
            raw=lead.raw,
            source=source,
            now=now,
            correlation_id=correlation_id,
            external_id=lead.external_id,
            is_test=lead.is_test,
            normalized=normalized,
        )
        leads.append(accepted.body(correlation_id))
    queued = 0
    for external_id, notification in delivery.fetches:
        note = {**notification, "correlation_id": correlation_id}
        queued += await queue_platform_fetch(session, source, external_id, note, now)
    erased = 0
    for external_id in delivery.erasures:
        erased += await erase_platform_lead(session, settings, source, external_id, now, correlation_id)
    return {"leads": leads, "queued": queued, "erased": erased}
