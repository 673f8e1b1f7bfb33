"""the SLA timer engine: escalation marker folded into the timer row, a counter of open timers

A detected breach used to leave a second row (kind `escalate`) until its reassignment was made; it is now a
column, `escalate_at`, on the breach (or hold) row itself, set in the transaction that fires it and cleared in
the one that escalates. Pending markers move onto their assignment's latest fired breach; the old rows go.

`sla_timer_counts` holds the number of open timers (fired_at IS NULL), kept by triggers with every write, so
routing's gauge reads a row or a few instead of counting millions: SQLite keeps one row (one writer at a time);
PostgreSQL adds each statement's change to its server process's own row (shard = pg_backend_pid(), one
transaction at a time per process, so writers never wait on each other), folded into shard 0 once the process
is gone.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER sla_timers_count_insert AFTER INSERT ON sla_timers WHEN NEW.fired_at IS NULL
    BEGIN UPDATE sla_timer_counts SET open = open + 1 WHERE shard = 0; END""",
    """CREATE TRIGGER sla_timers_count_update AFTER UPDATE OF fired_at ON sla_timers
    WHEN (OLD.fired_at IS NULL) <> (NEW.fired_at IS NULL)
    BEGIN UPDATE sla_timer_counts SET open = open + (CASE WHEN NEW.fired_at IS NULL THEN 1 ELSE -1 END)
    WHERE shard = 0; END""",
    """CREATE TRIGGER sla_timers_count_delete AFTER DELETE ON sla_timers WHEN OLD.fired_at IS NULL
    BEGIN UPDATE sla_timer_counts SET open = open - 1 WHERE shard = 0; END""",
)

_PG_FUNCTION = """
CREATE FUNCTION sla_timers_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE delta bigint := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT delta + count(*) INTO delta FROM new_rows WHERE fired_at IS NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT delta - count(*) INTO delta FROM old_rows WHERE fired_at IS NULL;
    END IF;
    IF delta <> 0 THEN
        INSERT INTO sla_timer_counts (shard, open) VALUES (pg_backend_pid(), delta)
        ON CONFLICT (shard) DO UPDATE SET open = sla_timer_counts.open + EXCLUDED.open;
    END IF;
    RETURN NULL;
END $$
"""

_PG_TRIGGERS = (
    """CREATE TRIGGER sla_timers_count_insert AFTER INSERT ON sla_timers REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sla_timers_count()""",
    """CREATE TRIGGER sla_timers_count_update AFTER UPDATE ON sla_timers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sla_timers_count()""",
    """CREATE TRIGGER sla_timers_count_delete AFTER DELETE ON sla_timers REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sla_timers_count()""",
)

_TRIGGER_NAMES = ("sla_timers_count_insert", "sla_timers_count_update", "sla_timers_count_delete")


def upgrade() -> None:
    with op.batch_alter_table("sla_timers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalate_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_sla_timers_escalate_at",
        "sla_timers",
        ["escalate_at"],
        unique=False,
        sqlite_where=sa.text("escalate_at IS NOT NULL"),
        postgresql_where=sa.text("escalate_at IS NOT NULL"),
    )
    # Each pending marker moves onto its assignment's latest fired breach, then the marker rows go.
    op.execute(
        """
        UPDATE sla_timers SET escalate_at = (
            SELECT min(m.due_at) FROM sla_timers m
            WHERE m.kind = 'escalate' AND m.fired_at IS NULL AND m.assignment_id = sla_timers.assignment_id
        )
        WHERE id IN (
            SELECT max(b.id) FROM sla_timers b
            WHERE b.kind = 'breach' AND b.fired_at IS NOT NULL AND b.cancelled = false
              AND b.assignment_id IN (SELECT assignment_id FROM sla_timers WHERE kind = 'escalate' AND fired_at IS NULL)
            GROUP BY b.assignment_id
        )
        """
    )
    op.execute("DELETE FROM sla_timers WHERE kind = 'escalate'")
    op.create_table(
        "sla_timer_counts",
        sa.Column("shard", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("open", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard", name=op.f("pk_sla_timer_counts")),
    )
    op.execute("INSERT INTO sla_timer_counts (shard, open) SELECT 0, count(*) FROM sla_timers WHERE fired_at IS NULL")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in _TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON sla_timers" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS sla_timers_count()")
    op.drop_table("sla_timer_counts")
    # Pending markers become rows of their own again.
    op.execute(
        """
        INSERT INTO sla_timers (lead_id, assignment_id, kind, fraction, due_at, fired_at, cancelled)
        SELECT lead_id, assignment_id, 'escalate', NULL, escalate_at, NULL, false
        FROM sla_timers WHERE escalate_at IS NOT NULL
        """
    )
    op.drop_index("ix_sla_timers_escalate_at", table_name="sla_timers")
    with op.batch_alter_table("sla_timers", schema=None) as batch_op:
        batch_op.drop_column("escalate_at")
