"""webhook deliveries know their lead, so an erasure can redact the stored bodies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 07:17:20
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lead_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_lead_id"), ["lead_id"], unique=False)
    # Deliveries written before this revision: the lead is the `lead_id` of the body's data, where there is one.
    deliveries = sa.table(
        "webhook_deliveries", sa.column("id", sa.String), sa.column("payload", sa.Text), sa.column("lead_id", sa.String)
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(deliveries.c.id, deliveries.c.payload).where(deliveries.c.lead_id.is_(None))).all()
    for delivery_id, payload in rows:
        try:
            lead_id = (json.loads(payload).get("data") or {}).get("lead_id")
        except (ValueError, AttributeError):
            continue
        if isinstance(lead_id, str):
            conn.execute(sa.update(deliveries).where(deliveries.c.id == delivery_id).values(lead_id=lead_id))


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_lead_id"))
        batch_op.drop_column("lead_id")
