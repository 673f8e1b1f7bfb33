"""Routing's CRM tables (HubSpot, Salesforce): connector settings, owner mapping, lead links, inbound signals.

Apart from `tables` so that module stays a screen or so long; registered on the same `Base` (one metadata, one
migration chain: 0011).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from common.db import UtcDateTime
from routing.store.tables import Base


class ConnectorRow(Base):
    """One CRM system's settings; secrets inside `config` are sealed (common.crypto), never stored in clear."""

    __tablename__ = "connectors"

    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Where a polling connector left off (e.g. Salesforce's SystemModstamp); unused by push connectors.
    cursor: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CrmOwnerRow(Base):
    """A rep's owner id in a CRM, one to one both ways."""

    __tablename__ = "crm_owners"
    __table_args__ = (UniqueConstraint("system", "external_owner_id"),)

    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    rep_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    external_owner_id: Mapped[str] = mapped_column(String(128))


class CrmLinkRow(Base):
    """A lead's record in a CRM (a HubSpot contact, a Salesforce lead) and the owner last written there."""

    __tablename__ = "crm_links"
    __table_args__ = (UniqueConstraint("system", "external_id"),)

    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    lead_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128))
    owner_external_id: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CrmSignalRow(Base):
    """An inbound CRM signal, by the CRM's own reference: a redelivery finds it and acts no more."""

    __tablename__ = "crm_signals"

    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    source_ref: Mapped[str] = mapped_column(String(255), primary_key=True)
    lead_id: Mapped[str | None] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))  # touch | convert | disqualify
    result: Mapped[str] = mapped_column(String(32))  # what it did: touched, converted, recorded, unknown_lead, ...
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
