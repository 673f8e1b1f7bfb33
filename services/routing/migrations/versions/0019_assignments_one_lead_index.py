"""one index of the assignments by lead, which also keeps one current assignment per lead

`uq_assignments_current` (lead_id, unique where ended_at IS NULL) and `ix_assignments_lead_id` (lead_id) were two
entries at a random place for every assignment (lead ids are UUIDs): ~12.5 WAL pages each for a poll of 10 leads
on a store of 20,000. One unique index on (lead_id, 0 for the current assignment else its id) does both: a lead's
current assignment has the key (lead, 0), which only one row can hold, an ended one (lead, its id), which never
collides; a lead's assignments are read on its leading column as before.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("ended_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "uq_assignments_lead",
        "assignments",
        ["lead_id", sa.text("(CASE WHEN ended_at IS NULL THEN 0 ELSE id END)")],
        unique=True,
    )
    op.drop_index("uq_assignments_current", table_name="assignments")
    op.drop_index("ix_assignments_lead_id", table_name="assignments")


def downgrade() -> None:
    op.create_index("ix_assignments_lead_id", "assignments", ["lead_id"], unique=False)
    op.create_index(
        "uq_assignments_current", "assignments", ["lead_id"], unique=True, sqlite_where=_OPEN, postgresql_where=_OPEN
    )
    op.drop_index("uq_assignments_lead", table_name="assignments")
