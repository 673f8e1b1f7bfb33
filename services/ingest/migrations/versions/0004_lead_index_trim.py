"""leads: the platform-id index covers only leads that have one; lead_identities: the unused seen_at index dropped

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 21:45:00

Why: every stored lead updated each index of its rows. A web lead has no platform id, yet each one added a
(source_id, NULL) entry to uq_leads_source_external, which only answers (and only constrains) leads that have
one: made partial, web leads skip it. ix_lead_identities_seen_at served a retention purge of identities that no
longer exists (an identity lives as long as its lead; erased ones are found by identity): no query reads it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HAS_EXTERNAL = sa.text("external_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("uq_leads_source_external", table_name="leads")
    op.create_index(
        "uq_leads_source_external",
        "leads",
        ["source_id", "external_id"],
        unique=True,
        sqlite_where=_HAS_EXTERNAL,
        postgresql_where=_HAS_EXTERNAL,
    )
    op.drop_index("ix_lead_identities_seen_at", table_name="lead_identities")


def downgrade() -> None:
    op.create_index("ix_lead_identities_seen_at", "lead_identities", ["seen_at"], unique=False)
    op.drop_index("uq_leads_source_external", table_name="leads")
    op.create_index("uq_leads_source_external", "leads", ["source_id", "external_id"], unique=True)
