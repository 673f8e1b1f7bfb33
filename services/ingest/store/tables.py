"""Ingest's tables (SQLAlchemy 2 typed models) and the shared outbox, dead-letter and dedupe tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.consumer import processed_table
from common.db import UtcDateTime, new_metadata
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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        # Partial: only a platform lead has an external id (migration 0004), so a web lead adds nothing to it.
        Index(
            "uq_leads_source_external",
            "source_id",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
        Index("ix_leads_source_received", "source_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_id: Mapped[str | None] = mapped_column(ForeignKey("sources.id"))
    source_kind: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(255))
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    duplicate_of: Mapped[str | None] = mapped_column(String(36))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


ERASED_IDENTITY = "erased"  # what an erased lead's identity hashes become: they match no one, and are purged


class LeadIdentity(Base):
    """Keyed hashes of a lead's normalized email and phone: finds repeats without indexing PII in clear."""

    __tablename__ = "lead_identities"
    __table_args__ = (Index("ix_lead_identities_key_seen", "identity", "seen_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    identity: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[str] = mapped_column(String(36), index=True)
    # Read only through (identity, seen_at): no index of its own (migration 0004).
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime)


# A new lead's rows as the group-commit writer hands them to its store, plain tuples in the tables' column order:
# each store turns them into its own values (ingest.store.batch_sqlite into sqlite3's, built there without
# common.sqlprep's per-column processors, ~4 us a lead less; IngestRepository into Core's rows).
class LeadRow(NamedTuple):
    """A new row of `leads` (its `erased_at` NULL); `data` is the lead's JSON text, as the column stores it."""

    id: str
    source_id: str | None
    source_kind: str
    external_id: str | None
    is_test: bool
    duplicate_of: str | None
    data: str
    received_at: datetime
    correlation_id: str | None


class IdentityRow(NamedTuple):
    """A new row of `lead_identities`."""

    identity: str
    lead_id: str
    seen_at: datetime


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    scope_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class PlatformFetch(Base):
    """A platform notification acknowledged but whose lead must still be fetched (Meta Graph API, LinkedIn)."""

    __tablename__ = "platform_fetches"
    __table_args__ = (Index("uq_platform_fetches_source_external", "source_id", "external_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    external_id: Mapped[str] = mapped_column(String(255))
    notification: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


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
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    correlation_id: Mapped[str | None] = mapped_column(String(128))


outbox = outbox_table(Base.metadata)
outbox_dead = outbox_dead_table(Base.metadata)
processed = processed_table(Base.metadata)
