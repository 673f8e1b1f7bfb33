"""SLA timers are found by their assignment: the index of their lead id goes

Every routed lead wrote two entries into `ix_sla_timers_lead_id` (its warning and its breach) at a random place
(lead ids are UUIDs): the largest of routing's per-lead index writes, ~1.6 WAL pages a lead at polls of 10 on a
store of 20,000 leads, and ~3 us of SQLite's work a lead. The two questions that asked by lead id (an action's
case, a lead's pending escalations) now ask for the timers of the lead's assignments, through
`ix_assignments_lead_id` and `ix_sla_timers_assignment_id` (whose ids grow, so its inserts append).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 22:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_sla_timers_lead_id", table_name="sla_timers")


def downgrade() -> None:
    op.create_index("ix_sla_timers_lead_id", "sla_timers", ["lead_id"], unique=False)
