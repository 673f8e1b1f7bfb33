"""a repeat of an open lead joins it: leads carry their person's thread and what they were merged into

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("thread_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("merged_into", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_leads_thread_id"), ["thread_id"], unique=False)
    # Leads from before this revision: a repeat's thread is the lead ingest named as its original.
    leads = sa.table(
        "leads",
        sa.column("lead_id", sa.String),
        sa.column("duplicate_of", sa.String),
        sa.column("thread_id", sa.String),
    )
    op.execute(sa.update(leads).values(thread_id=sa.func.coalesce(leads.c.duplicate_of, leads.c.lead_id)))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_thread_id"))
        batch_op.drop_column("merged_into")
        batch_op.drop_column("thread_id")
