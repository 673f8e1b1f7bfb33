# ruff: noqa: S608  # the SQL is built from this module's constants only, never from input
"""each rep's worked open leads kept by the writes (triggers on leads), not counted per poll

Capacity (routing.usecases.capacity) takes a rep's open leads someone has touched already off their max_open
load. Every poll that can read a load counted them: O(touched open leads) a poll (~1.4 ms at 6,700), so a busy
desk's routing slowed as its backlog grew. `rep_worked_counts` holds the count per rep, moved by triggers on every
write to `leads` (insert, update of status, rep or first touch, delete: assignment, touch, accept, close,
reassign, claim, hand-over, escalation, erasure, and any write added later), inside the writing transaction, so
it is right through a kill -9 and across processes. SQLite keeps one row per rep (shard 0: one writer at a time);
PostgreSQL adds each statement's change to its server process's row (shard = pg_backend_pid(), as the open-timers
counter of 0013), so two writers never wait on each other's counter row and never deadlock on it; rows of gone
processes are folded into shard 0 by the timer engine's housekeeping. A lead is worked open when its status is
one of routing.domain.lifecycle.OPEN_STATUSES (frozen here: a test compares them), it has a rep and a first
touch. `ix_leads_worked` (0015), which only that count read, goes.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "'assigned', 'queued', 'held', 'touched', 'accepted'"


def _worked(row: str) -> str:
    return f"({row}.status IN ({OPEN}) AND {row}.current_rep_id IS NOT NULL AND {row}.first_touch_at IS NOT NULL)"


def _sqlite_add(row: str, delta: int) -> str:
    return (
        f"INSERT INTO rep_worked_counts (rep_id, shard, worked) VALUES ({row}.current_rep_id, 0, {delta}) "
        f"ON CONFLICT (rep_id, shard) DO UPDATE SET worked = worked + {delta};"
    )


_SAME = "(OLD.current_rep_id IS NEW.current_rep_id)"


def sqlite_triggers(worked: Callable[[str], str]) -> tuple[str, ...]:
    """The four triggers on leads, for a row's `worked` condition (0020 asks the same terms in another order)."""
    return (
        f"CREATE TRIGGER leads_worked_insert AFTER INSERT ON leads WHEN {worked('NEW')} BEGIN {_sqlite_add('NEW', 1)} END",
        f"CREATE TRIGGER leads_worked_delete AFTER DELETE ON leads WHEN {worked('OLD')} BEGIN {_sqlite_add('OLD', -1)} END",
        # An update that moves a worked lead out (closed, reopened untouched, or to another rep), then one that
        # moves one in; an update that changes none of the three leaves the counter alone.
        f"""CREATE TRIGGER leads_worked_leave AFTER UPDATE OF status, current_rep_id, first_touch_at ON leads
    WHEN {worked("OLD")} AND NOT ({worked("NEW")} AND {_SAME}) BEGIN {_sqlite_add("OLD", -1)} END""",
        f"""CREATE TRIGGER leads_worked_enter AFTER UPDATE OF status, current_rep_id, first_touch_at ON leads
    WHEN {worked("NEW")} AND NOT ({worked("OLD")} AND {_SAME}) BEGIN {_sqlite_add("NEW", 1)} END""",
    )


_SQLITE_TRIGGERS = sqlite_triggers(_worked)

_PG_CHANGES = {
    "INSERT": f"SELECT current_rep_id, 1 FROM new_rows WHERE {_worked('new_rows')}",
    "DELETE": f"SELECT current_rep_id, -1 FROM old_rows WHERE {_worked('old_rows')}",
}
_PG_CHANGES["UPDATE"] = f"{_PG_CHANGES['INSERT']} UNION ALL {_PG_CHANGES['DELETE']}"


def _pg_add(changes: str) -> str:
    return f"""
        INSERT INTO rep_worked_counts (rep_id, shard, worked)
        SELECT rep_id, pg_backend_pid(), sum(delta) FROM ({changes}) AS moved (rep_id, delta)
        GROUP BY rep_id HAVING sum(delta) <> 0
        ON CONFLICT (rep_id, shard) DO UPDATE SET worked = rep_worked_counts.worked + EXCLUDED.worked;"""


_PG_FUNCTION = f"""
CREATE FUNCTION leads_worked_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN {_pg_add(_PG_CHANGES["INSERT"])}
    ELSIF TG_OP = 'DELETE' THEN {_pg_add(_PG_CHANGES["DELETE"])}
    ELSE {_pg_add(_PG_CHANGES["UPDATE"])}
    END IF;
    RETURN NULL;
END $$
"""

_PG_TRIGGERS = (
    """CREATE TRIGGER leads_worked_insert AFTER INSERT ON leads REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION leads_worked_count()""",
    """CREATE TRIGGER leads_worked_update AFTER UPDATE ON leads
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION leads_worked_count()""",
    """CREATE TRIGGER leads_worked_delete AFTER DELETE ON leads REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION leads_worked_count()""",
)

_SQLITE_NAMES = ("leads_worked_insert", "leads_worked_delete", "leads_worked_leave", "leads_worked_enter")
_PG_NAMES = ("leads_worked_insert", "leads_worked_update", "leads_worked_delete")
_TOUCHED = sa.text("first_touch_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "rep_worked_counts",
        sa.Column("rep_id", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("worked", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("rep_id", "shard", name=op.f("pk_rep_worked_counts")),
    )
    op.execute(
        "INSERT INTO rep_worked_counts (rep_id, shard, worked) SELECT current_rep_id, 0, count(*) FROM leads "
        f"WHERE {_worked('leads')} GROUP BY current_rep_id"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    op.drop_index("ix_leads_worked", table_name="leads")


def downgrade() -> None:
    op.create_index(
        "ix_leads_worked", "leads", ["status", "current_rep_id"], sqlite_where=_TOUCHED, postgresql_where=_TOUCHED
    )
    if op.get_bind().dialect.name == "postgresql":
        for name in _PG_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON leads")
        op.execute("DROP FUNCTION IF EXISTS leads_worked_count()")
    else:
        for name in _SQLITE_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("rep_worked_counts")
