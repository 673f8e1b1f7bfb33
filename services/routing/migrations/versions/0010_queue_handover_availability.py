"""queue claims, reassignment and hand-over; self-service availability and calendar feeds

Claims, reassignments and hand-overs need no table of their own (assignments and the timeline record them);
reps' calendar feeds keep their last good away windows and the last fetch's outcome in rep_calendars.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rep_calendars",
        sa.Column("rep_id", sa.String(length=64), nullable=False),
        sa.Column("url_hash", sa.String(length=64), nullable=False),
        sa.Column("away", sa.JSON(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("rep_id", name=op.f("pk_rep_calendars")),
    )


def downgrade() -> None:
    op.drop_table("rep_calendars")
