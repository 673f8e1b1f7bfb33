"""CRM connections, owner mappings and the links between leads and CRM records

`connectors`: one row per CRM system (hubspot, salesforce, ...) with its settings; secrets inside `config` are
stored sealed (common.crypto). `crm_owners` maps a rep to the CRM's owner id, one to one. `crm_links` ties a lead
to its CRM record (a HubSpot contact, a Salesforce lead), one to one per system. `crm_signals` remembers every
inbound signal by the CRM's own reference, so a redelivered webhook or a re-read page acts once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connectors",
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("system", name=op.f("pk_connectors")),
    )
    op.create_table(
        "crm_owners",
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("rep_id", sa.String(length=64), nullable=False),
        sa.Column("external_owner_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("system", "rep_id", name=op.f("pk_crm_owners")),
        sa.UniqueConstraint("system", "external_owner_id", name=op.f("uq_crm_owners_system")),
    )
    op.create_table(
        "crm_links",
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("lead_id", sa.String(length=36), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("owner_external_id", sa.String(length=128), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("system", "lead_id", name=op.f("pk_crm_links")),
        sa.UniqueConstraint("system", "external_id", name=op.f("uq_crm_links_system")),
    )
    op.create_table(
        "crm_signals",
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("source_ref", sa.String(length=255), nullable=False),
        sa.Column("lead_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("system", "source_ref", name=op.f("pk_crm_signals")),
    )


def downgrade() -> None:
    op.drop_table("crm_signals")
    op.drop_table("crm_links")
    op.drop_table("crm_owners")
    op.drop_table("connectors")
