"""Ingest's tables and the questions handlers ask of them."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.consumer import processed_table
from common.db import new_metadata
from common.outbox import outbox_dead_table, outbox_table


class Base(DeclarativeBase):
    metadata = new_metadata()


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    default_region: Mapped[str | None] = mapped_column(String(2))
    field_mapping: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Platform secrets under the platforms' own names (app_secret, google_key, client_secret, secret, ...).
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    api_key_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    api_key_prefix: Mapped[str | None] = mapped_column(String(24))
    publishable_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    thank_you_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        Index("uq_leads_source_external", "source_id", "external_id", unique=True),
        Index("ix_leads_source_received", "source_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_id: Mapped[str | None] = mapped_column(ForeignKey("sources.id"))
    source_kind: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(255))
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    duplicate_of: Mapped[str | None] = mapped_column(String(36))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


ERASED_IDENTITY = "erased"  # what an erased lead's identity hashes become: they match no one, and are purged


class LeadIdentity(Base):
    """Keyed hashes of a lead's normalized email and phone: finds repeats without indexing PII in clear."""

    __tablename__ = "lead_identities"
    __table_args__ = (Index("ix_lead_identities_key_seen", "identity", "seen_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    identity: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[str] = mapped_column(String(36), index=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)  # for the retention purge


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    scope_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class PlatformFetch(Base):
    """A platform notification acknowledged but whose lead must still be fetched (Meta Graph API, LinkedIn)."""

    __tablename__ = "platform_fetches"
    __table_args__ = (Index("uq_platform_fetches_source_external", "source_id", "external_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    external_id: Mapped[str] = mapped_column(String(255))
    notification: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QuarantinedSubmission(Base):
    """A submission that authenticated but is not a lead (no way to reach anyone, an unlisted origin, a honeypot hit).

    `body` is the request as received: personal data, emptied when the row is released (the lead holds it from
    then on) or dismissed, and deleted with the row after the retention period.
    """

    __tablename__ = "quarantine"
    __table_args__ = (
        Index("ix_quarantine_received", "received_at", "id"),
        Index("ix_quarantine_source_reason", "source_id", "reason", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_id: Mapped[str | None] = mapped_column(ForeignKey("sources.id"))
    reason: Mapped[str] = mapped_column(String(32))  # no_contact | origin_not_allowed | honeypot
    problems: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)  # [{field, reason}]
    content_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str | None] = mapped_column(Text)
    origin: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))  # pending | released | dismissed
    lead_id: Mapped[str | None] = mapped_column(String(36))
    note: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    correlation_id: Mapped[str | None] = mapped_column(String(128))


outbox = outbox_table(Base.metadata)
outbox_dead = outbox_dead_table(Base.metadata)
processed = processed_table(Base.metadata)


class IngestRepository:
    """Queries only; the entrypoint owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def source(self, source_id: str) -> Source | None:
        return await self.session.get(Source, source_id)

    async def source_by_key_hash(self, key_hash: str) -> Source | None:
        return (await self.session.execute(select(Source).where(Source.api_key_hash == key_hash))).scalar_one_or_none()

    async def source_by_publishable_key(self, key: str) -> Source | None:
        return (
            await self.session.execute(select(Source).where(Source.publishable_key == key))
        ).scalar_one_or_none()

    async def sources(self) -> list[Source]:
        return list((await self.session.execute(select(Source).order_by(Source.created_at, Source.id))).scalars())

    async def sources_by_id(self, source_ids: Iterable[str]) -> dict[str, Source]:
        wanted = {source_id for source_id in source_ids if source_id}
        if not wanted:
            return {}
        rows = await self.session.execute(select(Source).where(Source.id.in_(wanted)))
        return {source.id: source for source in rows.scalars()}

    async def lead(self, lead_id: str) -> Lead | None:
        return await self.session.get(Lead, lead_id)

    async def lead_by_external_id(self, source_id: str, external_id: str) -> Lead | None:
        return (
            await self.session.execute(
                select(Lead).where(Lead.source_id == source_id, Lead.external_id == external_id)
            )
        ).scalar_one_or_none()

    async def earlier_lead_for(self, identities: list[str], since: datetime) -> str | None:
        """The first lead with any of these identities seen since `since` (the original of a repeat)."""
        if not identities:
            return None
        row = (
            await self.session.execute(
                select(LeadIdentity.lead_id)
                .where(LeadIdentity.identity.in_(identities), LeadIdentity.seen_at >= since)
                .order_by(LeadIdentity.seen_at)
                .limit(1)
            )
        ).first()
        return row[0] if row else None

    async def idempotency(self, scope_key: str) -> IdempotencyRecord | None:
        return await self.session.get(IdempotencyRecord, scope_key)

    # -- batches (the group-commit writer): one statement per question for a whole batch ----------------

    async def idempotency_many(self, scope_keys: Collection[str]) -> dict[str, IdempotencyRecord]:
        """The stored responses of these scoped keys, by key."""
        if not scope_keys:
            return {}
        rows = await self.session.execute(select(IdempotencyRecord).where(IdempotencyRecord.scope_key.in_(scope_keys)))
        return {record.scope_key: record for record in rows.scalars()}

    async def drop_idempotency(self, scope_keys: Collection[str]) -> None:
        """Forget expired keys, so they can be stored afresh in the same transaction."""
        if scope_keys:
            await self.session.execute(
                delete(IdempotencyRecord)
                .where(IdempotencyRecord.scope_key.in_(scope_keys))
                .execution_options(synchronize_session=False)
            )

    async def purge_idempotency(self, created_before: datetime, limit: int) -> int:
        """Delete up to `limit` keys stored before `created_before`; returns how many went."""
        oldest = (
            select(IdempotencyRecord.scope_key)
            .where(IdempotencyRecord.created_at < created_before)
            .order_by(IdempotencyRecord.created_at)
            .limit(limit)
        )
        result = await self.session.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.scope_key.in_(oldest.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def purge_identities(self, limit: int) -> int:
        """Delete up to `limit` identity rows of erased leads; returns how many went."""
        oldest = select(LeadIdentity.id).where(LeadIdentity.identity == ERASED_IDENTITY).limit(limit)
        result = await self.session.execute(
            delete(LeadIdentity)
            .where(LeadIdentity.id.in_(oldest.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def leads_by_external_ids(
        self, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str | None, bool]]:
        """(lead id, duplicate_of, is_test) of the leads already stored under these (source id, external id)."""
        if not keys:
            return {}
        rows = await self.session.execute(
            select(Lead.id, Lead.source_id, Lead.external_id, Lead.duplicate_of, Lead.is_test).where(
                Lead.external_id.in_({external_id for _, external_id in keys})
            )
        )
        wanted = set(keys)
        found: dict[tuple[str, str], tuple[str, str | None, bool]] = {}
        for lead_id, source_id, external_id, duplicate_of, is_test in rows.all():
            if source_id is not None and external_id is not None and (source_id, external_id) in wanted:
                found[(source_id, external_id)] = (lead_id, duplicate_of, bool(is_test))
        return found

    async def first_leads_for(self, identities: Collection[str], since: datetime) -> dict[str, tuple[datetime, str]]:
        """For each identity, (seen_at, lead id) of its earliest sighting since `since`."""
        if not identities:
            return {}
        first = (
            select(LeadIdentity.identity, func.min(LeadIdentity.seen_at).label("seen_at"))
            .where(LeadIdentity.identity.in_(identities), LeadIdentity.seen_at >= since)
            .group_by(LeadIdentity.identity)
            .subquery()
        )
        rows = await self.session.execute(
            select(LeadIdentity.identity, LeadIdentity.seen_at, LeadIdentity.lead_id)
            .join(first, (first.c.identity == LeadIdentity.identity) & (first.c.seen_at == LeadIdentity.seen_at))
            .order_by(LeadIdentity.id)
        )
        found: dict[str, tuple[datetime, str]] = {}
        for identity, seen_at, lead_id in rows.all():
            found.setdefault(identity, (seen_at, lead_id))
        return found

    async def insert_rows(self, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
        """One multi-row Core insert: no ORM unit of work for rows written once and never changed here."""
        if rows:
            await self.session.execute(insert(model.__table__), list(rows))  # type: ignore[arg-type]

    async def leads(
        self, *, source_id: str | None, since: datetime | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[Lead]:
        query = select(Lead).order_by(Lead.received_at.desc(), Lead.id.desc()).limit(limit)
        if source_id:
            query = query.where(Lead.source_id == source_id)
        if since:
            query = query.where(Lead.received_at >= since)
        if before:
            at, lead_id = before
            query = query.where((Lead.received_at < at) | ((Lead.received_at == at) & (Lead.id < lead_id)))
        return list((await self.session.execute(query)).scalars())

    async def leads_of_subject(self, identities: Collection[str], *, limit: int) -> list[Lead]:
        """Every lead (newest first) filed under any of these identity hashes: one person's leads. An erased lead's
        identities are forgotten, so it is not found again."""
        ids = select(LeadIdentity.lead_id).where(LeadIdentity.identity.in_(list(identities))).distinct()
        query = (
            select(Lead)
            .where(Lead.id.in_(ids.scalar_subquery()))
            .order_by(Lead.received_at.desc(), Lead.id.desc())
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars())

    async def forget_identities(self, lead_id: str) -> None:
        await self.session.execute(
            update(LeadIdentity).where(LeadIdentity.lead_id == lead_id).values(identity=ERASED_IDENTITY)
        )

    async def count_leads(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(Lead))).scalar_one())

    # -- quarantine ---------------------------------------------------------------------------------------------

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

    # -- platform fetches (leads announced by id, fetched later) ------------------------------------------

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
