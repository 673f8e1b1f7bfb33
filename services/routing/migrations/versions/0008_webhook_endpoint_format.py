"""webhook endpoints get a format: standard (Standard Webhooks), slack (Block Kit) or teams (an Adaptive Card)

Existing endpoints keep receiving Standard Webhooks bodies.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("format", sa.String(length=16), nullable=False, server_default="standard"))


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_column("format")
