"""What the admin API reads about leads: one lead, a page of leads, and one person's leads (subject access)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ingest.handlers.erasure import subject_leads
from ingest.handlers.views import lead_view
from ingest.store import IngestRepository, Lead


async def lead_detail(session: AsyncSession, lead_id: str) -> dict[str, Any] | None:
    """The lead as shown, with its source; None when there is no such lead."""
    repo = IngestRepository(session)
    lead = await repo.lead(lead_id)
    if lead is None:
        return None
    return lead_view(lead, await repo.source(lead.source_id) if lead.source_id else None)


async def _views(session: AsyncSession, leads: list[Lead]) -> list[dict[str, Any]]:
    sources = await IngestRepository(session).sources_by_id(lead.source_id for lead in leads if lead.source_id)
    return [lead_view(lead, sources.get(lead.source_id or "")) for lead in leads]


async def lead_page(
    session: AsyncSession,
    *,
    source_id: str | None,
    since: datetime | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of leads as shown, newest first, and whether more follow."""
    leads = await IngestRepository(session).leads(source_id=source_id, since=since, before=before, limit=limit + 1)
    return await _views(session, leads[:limit]), len(leads) > limit


async def subject_access(session: AsyncSession, identity_keys: list[str]) -> list[dict[str, Any]]:
    """Every lead of one person, as shown."""
    return await _views(session, await subject_leads(session, identity_keys))
