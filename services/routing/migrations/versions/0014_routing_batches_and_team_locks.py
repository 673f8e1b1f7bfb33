"""routing decides in batches and locks per team

Decisions no longer serialize on the `routing_lock` row of `routing_state` (a SELECT ... FOR UPDATE every
decision took): they take PostgreSQL advisory transaction locks instead, one per team and per person's thread,
under a shared routing-wide lock that roster and rules changes take exclusively (routing.store.roster). The row
is retired; a downgrade puts it back. No table changes: assignment ids already come from the database's counter
(migration 0005), reserved for a whole batch in one statement.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM routing_state WHERE key = 'routing_lock'"))


def downgrade() -> None:
    op.execute(sa.text("INSERT INTO routing_state (key, value) VALUES ('routing_lock', 0)"))
