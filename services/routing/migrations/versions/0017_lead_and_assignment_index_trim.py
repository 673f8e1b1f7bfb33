"""two indexes a routed lead no longer writes into: the thread index holds repeats only, the assignments' rep index goes

`ix_leads_thread_id` becomes partial (thread_id IS NOT NULL): since a first lead's thread_id is NULL (read as its
own id), only a repeat's thread is indexed, and the person's open lead is found as before (`thread_id = ?` implies
the index's condition; `lead_id = ?` takes the primary key). `ix_assignments_rep_id` answered no query (a rep's
leads are read from `leads`, on `ix_leads_status_rep`). At a poll of one lead each index is a page of WAL less.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 22:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_THREADED = sa.text("thread_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_assignments_rep_id", table_name="assignments")
    op.drop_index("ix_leads_thread_id", table_name="leads")
    op.create_index("ix_leads_thread_id", "leads", ["thread_id"], sqlite_where=_THREADED, postgresql_where=_THREADED)


def downgrade() -> None:
    op.drop_index("ix_leads_thread_id", table_name="leads")
    op.create_index("ix_leads_thread_id", "leads", ["thread_id"], unique=False)
    op.create_index("ix_assignments_rep_id", "assignments", ["rep_id"], unique=False)
