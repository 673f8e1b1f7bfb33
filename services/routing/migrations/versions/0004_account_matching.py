"""accounts group several domains and are matched by company name too

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 20:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("name_key", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_accounts_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_accounts_name_key"), ["name_key"], unique=False)
    # Rows from before this revision: each domain was its own account.
    accounts = sa.table("accounts", sa.column("domain", sa.String), sa.column("account_id", sa.String))
    op.execute(sa.update(accounts).where(accounts.c.account_id.is_(None)).values(account_id=accounts.c.domain))


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_name_key"))
        batch_op.drop_index(batch_op.f("ix_accounts_account_id"))
        batch_op.drop_column("name_key")
        batch_op.drop_column("account_id")
