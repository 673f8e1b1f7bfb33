"""assignment ids from the database's counter; outbox_dead; an index for the dedupe purge

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 19:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_dead",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_dead")),
    )
    with op.batch_alter_table("processed_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_processed_events_processed_at"), ["processed_at"], unique=False)
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        # The serial's sequence was bypassed while ids were max + 1: move it past every id handed out.
        conn.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('assignments', 'id'),"
                " COALESCE((SELECT max(id) FROM assignments), 0) + 1, false)"
            )
        )
    else:
        # AUTOINCREMENT (ids never reused) needs the table rebuilt; its counter starts at the highest id.
        with op.batch_alter_table(
            "assignments", schema=None, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
        conn.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'assignments'"))
        conn.execute(
            sa.text(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'assignments', COALESCE(max(id), 0) FROM assignments"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("processed_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_processed_events_processed_at"))
    op.drop_table("outbox_dead")
