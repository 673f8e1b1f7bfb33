"""Quarantine: authenticated submissions that are not leads, kept with why, then released or dismissed."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from ingest.domain import NormalizedLead, normalize_lead
from ingest.domain.forms import submitted_fields
from ingest.handlers.leads import accept_lead
from ingest.handlers.views import quarantine_view, source_view
from ingest.settings import IngestSettings
from ingest.store import IngestRepository, QuarantinedSubmission, QuarantineRepository, Source


class QuarantineDecided(Exception):
    """The quarantined submission was dismissed already; it cannot be released."""

    def __init__(self, status: str, message: str | None = None) -> None:
        self.status = status
        super().__init__(message or f"this submission was {status} already")


class QuarantineNotFound(LookupError):
    """No quarantined submission with this id (never kept, or purged)."""


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
    repo = QuarantineRepository(session)
    leads = IngestRepository(session)
    if lead is None or not await repo.decide_quarantined(row.id, "released", now, None):
        current = row if lead is None else await repo.quarantined(row.id)
        if current is None or current.status != "released" or current.lead_id is None:
            raise QuarantineDecided(current.status if current else "purged")
        earlier = await leads.lead(current.lead_id)
        return Released(row.id, current.lead_id, earlier.duplicate_of if earlier else None, replayed=True)
    source = await leads.source(row.source_id) if row.source_id else None
    accepted = await accept_lead(
        session, settings, raw={}, source=source, now=now, correlation_id=correlation_id, normalized=lead
    )
    await repo.set_released_lead(row.id, accepted.lead_id)
    return Released(row.id, accepted.lead_id, accepted.duplicate_of, replayed=False)


async def dismiss_quarantined(session: AsyncSession, row_id: str, now: datetime, note: str | None) -> str:
    """Record the dismissal and erase the body; the row's new status (or the status it had, if decided already)."""
    repo = QuarantineRepository(session)
    if await repo.decide_quarantined(row_id, "dismissed", now, note):
        return "dismissed"
    current = await repo.quarantined(row_id)
    return current.status if current else "purged"


async def purge_quarantine(session: AsyncSession, settings: IngestSettings, now: datetime) -> int:
    """One batch of quarantined submissions past the retention period, deleted with their bodies."""
    cutoff = now - timedelta(days=settings.quarantine_retention_days)
    return await QuarantineRepository(session).purge_quarantine(cutoff, settings.idempotency_purge_batch)


def _fields(row: QuarantinedSubmission) -> dict[str, Any] | None:
    """The stored body as fields; None once erased."""
    return None if row.body is None else submitted_fields(row.content_type, row.body)


async def release(
    session: AsyncSession,
    settings: IngestSettings,
    row_id: str,
    corrections: Mapping[str, Any],
    *,
    now: datetime,
    correlation_id: str | None,
) -> Released:
    """Normalize the submission with the corrections (a null removes a field) and store it through the normal path.

    Raises QuarantineNotFound, QuarantineDecided (dismissed), or LeadValidationError for a body that is still no lead.
    """
    row = await QuarantineRepository(session).quarantined(row_id)
    if row is None:
        raise QuarantineNotFound(row_id)
    if row.status == "dismissed":
        raise QuarantineDecided("dismissed", "this submission was dismissed; it cannot be released")
    source = await IngestRepository(session).source(row.source_id) if row.source_id else None
    lead = None
    if row.status == "pending":
        fields = {**(_fields(row) or {}), **corrections}
        lead = normalize_lead(
            {key: value for key, value in fields.items() if value is not None},
            default_region=source.default_region if source else None,
            field_mapping=source.field_mapping if source else None,
            now=now,
        )
    return await release_quarantined(session, settings, row, lead, now=now, correlation_id=correlation_id)


async def quarantine_page(
    session: AsyncSession,
    *,
    source_id: str | None,
    reason: str | None,
    status: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of quarantined submissions as shown, newest first, and whether more follow."""
    rows = await QuarantineRepository(session).quarantine_page(
        source_id=source_id, reason=reason, status=status, before=before, limit=limit + 1
    )
    page = rows[:limit]
    sources = await IngestRepository(session).sources_by_id(row.source_id for row in page if row.source_id)
    return [quarantine_view(row, sources.get(row.source_id or ""), _fields(row)) for row in page], len(rows) > limit


async def quarantine_summary(session: AsyncSession) -> list[dict[str, Any]]:
    """Counts per source and reason, one column per status (no personal data)."""
    counts = await QuarantineRepository(session).quarantine_counts()
    sources = await IngestRepository(session).sources_by_id(source_id for source_id, _, _, _ in counts if source_id)
    groups: dict[tuple[str | None, str], dict[str, Any]] = {}
    for source_id, reason, status, count in counts:
        source = sources.get(source_id or "")
        group = groups.setdefault(
            (source_id, reason),
            {
                "source": source_view(source) if source or source_id is None else {"id": source_id},
                "reason": reason,
                "pending": 0,
                "released": 0,
                "dismissed": 0,
            },
        )
        group[status] = group.get(status, 0) + count
    return sorted(groups.values(), key=lambda g: (str(g["source"].get("name") or ""), g["reason"]))
