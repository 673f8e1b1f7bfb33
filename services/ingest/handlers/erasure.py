"""Erasure: a lead's personal data removed here and, through `lead.erased`, in the other services."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote_plus

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from common.outbox import add_events
from ingest.handlers.leads import EVENT_SOURCE, event_topic, identity_hash
from ingest.settings import IngestSettings
from ingest.store import IngestRepository, Lead, QuarantineRepository, outbox


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
    await add_events(session, outbox, settings, [event], event_topic)


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
    await QuarantineRepository(session).erase_quarantine_mentioning(needles, now)
    return [lead.id for lead in leads if lead.erased_at == now]


async def erase_lead_by_id(
    session: AsyncSession, settings: IngestSettings, lead_id: str, now: datetime, correlation_id: str | None
) -> Lead | None:
    """Erase one lead (again changes nothing); None when there is no such lead."""
    lead = await IngestRepository(session).lead(lead_id)
    if lead is not None:
        await erase_lead(session, settings, lead, now, correlation_id)
    return lead
