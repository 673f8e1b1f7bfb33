"""Scoring's tables and the questions handlers ask of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.consumer import processed_table
from common.db import new_metadata
from common.outbox import outbox_table


class Base(DeclarativeBase):
    metadata = new_metadata()


class ScoredLead(Base):
    __tablename__ = "scored_leads"

    lead_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_kind: Mapped[str | None] = mapped_column(String(32))
    duplicate_of: Mapped[str | None] = mapped_column(String(36), index=True)
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    # The lead as received (personal data: emptied on erasure) and the anonymous scoring record.
    lead: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    enrichment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    score: Mapped[dict[str, Any]] = mapped_column(JSON)
    conversion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Categorical, non-personal features kept for learning from outcomes after erasure.
    features: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    ruleset_version: Mapped[str] = mapped_column(String(64))
    grade: Mapped[str] = mapped_column(String(2))
    qualified: Mapped[bool] = mapped_column(Boolean)
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    outcome: Mapped[str | None] = mapped_column(String(32))
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RulesetVersion(Base):
    __tablename__ = "rulesets"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_text: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FirmographicRow(Base):
    __tablename__ = "firmographics"

    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    employee_band: Mapped[str | None] = mapped_column(String(32))
    industry: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str | None] = mapped_column(String(2))
    revenue_band: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutcomeCount(Base):
    """Per-(feature, value) counts of won and lost leads: anonymous, kept through erasure."""

    __tablename__ = "outcome_counts"

    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    won: Mapped[int] = mapped_column(Integer, default=0)
    lost: Mapped[int] = mapped_column(Integer, default=0)


class ErasedLead(Base):
    """A tombstone: an erasure may overtake the lead's own events, which then must not bring its data back."""

    __tablename__ = "erased_leads"

    lead_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


outbox = outbox_table(Base.metadata)
processed = processed_table(Base.metadata)

TOTAL = ("__total__", "__total__")


class ScoringRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def active_ruleset(self) -> RulesetVersion | None:
        return (
            await self.session.execute(select(RulesetVersion).where(RulesetVersion.active.is_(True)).limit(1))
        ).scalar_one_or_none()

    async def ruleset(self, version: str) -> RulesetVersion | None:
        return await self.session.get(RulesetVersion, version)

    async def activate(self, version: str, now: datetime) -> None:
        await self.session.execute(update(RulesetVersion).where(RulesetVersion.active.is_(True)).values(active=False))
        await self.session.execute(
            update(RulesetVersion).where(RulesetVersion.version == version).values(active=True, activated_at=now)
        )

    async def scored(self, lead_id: str) -> ScoredLead | None:
        return await self.session.get(ScoredLead, lead_id)

    async def firmographic(self, candidates: list[str]) -> FirmographicRow | None:
        """The most specific match: mail.eu.acme.co.uk finds acme.co.uk."""
        if not candidates:
            return None
        rows = {
            row.domain: row
            for row in (
                await self.session.execute(select(FirmographicRow).where(FirmographicRow.domain.in_(candidates)))
            ).scalars()
        }
        return next((rows[c] for c in candidates if c in rows), None)

    async def repeat_count(self, root_lead_id: str) -> int:
        """How many leads of the same person were scored before (the original and its repeats)."""
        result = await self.session.execute(
            select(func.count())
            .select_from(ScoredLead)
            .where((ScoredLead.lead_id == root_lead_id) | (ScoredLead.duplicate_of == root_lead_id))
        )
        return int(result.scalar_one())

    async def outcome_counts(self, features: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        wanted = {*features, TOTAL}
        rows = (
            await self.session.execute(
                select(OutcomeCount).where(OutcomeCount.feature.in_({f for f, _ in wanted}))
            )
        ).scalars()
        return {(r.feature, r.value): (r.won, r.lost) for r in rows if (r.feature, r.value) in wanted}

    async def is_erased(self, lead_id: str) -> bool:
        return await self.session.get(ErasedLead, lead_id) is not None
