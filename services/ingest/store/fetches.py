"""The questions about platform fetches: leads a platform announced by id, fetched later."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ingest.store.tables import PlatformFetch, Source


class PlatformFetchRepository:
    """Queries only; the entrypoint owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def platform_fetch(self, fetch_id: int) -> PlatformFetch | None:
        return await self.session.get(PlatformFetch, fetch_id)

    async def platform_fetch_queued(self, source_id: str, external_id: str) -> bool:
        row = (
            await self.session.execute(
                select(PlatformFetch.id).where(
                    PlatformFetch.source_id == source_id, PlatformFetch.external_id == external_id
                )
            )
        ).first()
        return row is not None

    async def drop_platform_fetch(self, source_id: str, external_id: str) -> int:
        """Forget a pending fetch; the number of rows removed (0 or 1)."""
        result = await self.session.execute(
            delete(PlatformFetch).where(PlatformFetch.source_id == source_id, PlatformFetch.external_id == external_id)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def due_platform_fetches(self, now: datetime, *, limit: int) -> list[tuple[PlatformFetch, Source]]:
        """Fetches due by `now`, oldest first, each with its source; locked against other workers on PostgreSQL."""
        rows = await self.session.execute(
            select(PlatformFetch, Source)
            .join(Source, Source.id == PlatformFetch.source_id)
            .where(PlatformFetch.next_attempt_at <= now)
            .order_by(PlatformFetch.next_attempt_at, PlatformFetch.id)
            .limit(limit)
            # PostgreSQL: concurrent fetchers skip each other's rows; SQLite has one writer and no FOR UPDATE.
            .with_for_update(of=PlatformFetch, skip_locked=True)
        )
        return [(fetch, source) for fetch, source in rows.all()]

    async def remove(self, fetch: PlatformFetch) -> None:
        """Drop a fetch whose lead is stored."""
        await self.session.delete(fetch)
