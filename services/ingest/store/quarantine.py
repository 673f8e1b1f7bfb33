"""The questions about quarantined submissions (authenticated posts that were not leads)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ingest.store.tables import QuarantinedSubmission


class QuarantineRepository:
    """Queries only; the entrypoint owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def quarantined(self, quarantine_id: str) -> QuarantinedSubmission | None:
        return await self.session.get(QuarantinedSubmission, quarantine_id, populate_existing=True)

    async def decide_quarantined(self, quarantine_id: str, status: str, now: datetime, note: str | None) -> bool:
        """Move a pending row to `status` and empty its body; False when it was decided already.

        One conditional UPDATE: of two concurrent releases exactly one sees the row pending (PostgreSQL re-checks
        the condition after the first commits; SQLite has one writer), so a release stores one lead.
        """
        result = await self.session.execute(
            update(QuarantinedSubmission)
            .where(QuarantinedSubmission.id == quarantine_id, QuarantinedSubmission.status == "pending")
            .values(status=status, decided_at=now, note=note, body=None)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    async def set_released_lead(self, quarantine_id: str, lead_id: str) -> None:
        await self.session.execute(
            update(QuarantinedSubmission)
            .where(QuarantinedSubmission.id == quarantine_id)
            .values(lead_id=lead_id)
            .execution_options(synchronize_session=False)
        )

    async def quarantine_page(
        self,
        *,
        source_id: str | None,
        reason: str | None,
        status: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[QuarantinedSubmission]:
        """Quarantined submissions, newest first, after the cursor `before`."""
        query = (
            select(QuarantinedSubmission)
            .order_by(QuarantinedSubmission.received_at.desc(), QuarantinedSubmission.id.desc())
            .limit(limit)
        )
        if source_id:
            query = query.where(QuarantinedSubmission.source_id == source_id)
        if reason:
            query = query.where(QuarantinedSubmission.reason == reason)
        if status:
            query = query.where(QuarantinedSubmission.status == status)
        if before:
            at, row_id = before
            query = query.where(
                (QuarantinedSubmission.received_at < at)
                | ((QuarantinedSubmission.received_at == at) & (QuarantinedSubmission.id < row_id))
            )
        return list((await self.session.execute(query)).scalars())

    async def quarantine_counts(self) -> list[tuple[str | None, str, str, int]]:
        """(source id, reason, status, count) over every row still kept."""
        rows = await self.session.execute(
            select(
                QuarantinedSubmission.source_id,
                QuarantinedSubmission.reason,
                QuarantinedSubmission.status,
                func.count(),
            ).group_by(QuarantinedSubmission.source_id, QuarantinedSubmission.reason, QuarantinedSubmission.status)
        )
        return [(source_id, reason, status, int(count)) for source_id, reason, status, count in rows.all()]

    async def erase_quarantine_mentioning(self, needles: Collection[str], now: datetime) -> int:
        """Dismiss every undecided row whose body contains one of `needles` (case-insensitive), erasing the body."""
        if not needles:
            return 0
        body = func.lower(QuarantinedSubmission.body)
        result = await self.session.execute(
            update(QuarantinedSubmission)
            .where(
                QuarantinedSubmission.status == "pending",
                or_(*(body.contains(needle.lower(), autoescape=True) for needle in needles)),
            )
            .values(status="dismissed", decided_at=now, note="erased on the person's request", body=None)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def purge_quarantine(self, received_before: datetime, limit: int) -> int:
        """Delete up to `limit` rows received before `received_before`, whatever their status; how many went."""
        oldest = (
            select(QuarantinedSubmission.id)
            .where(QuarantinedSubmission.received_at < received_before)
            .order_by(QuarantinedSubmission.received_at)
            .limit(limit)
        )
        result = await self.session.execute(
            delete(QuarantinedSubmission)
            .where(QuarantinedSubmission.id.in_(oldest.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
