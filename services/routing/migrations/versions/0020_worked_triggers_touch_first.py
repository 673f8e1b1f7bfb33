"""SQLite: the worked-leads triggers (0018) ask about the first touch before the status

A lead is worked open when its status is open, it has a rep and a first touch (0018). SQLite evaluates a trigger's
WHEN left to right and stops at the first false term; 0018 put the status first, whose `IN (five statuses)` is built
anew for every row the trigger looks at. A lead routed is never touched yet, so asking about the first touch first
answers every routing insert at once: on a store of 20,000 leads, a 1-lead poll's INSERT INTO leads 38-41 -> 29-33
us. The same terms, the same counts; PostgreSQL's statement triggers are left as they are.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 23:50:00
"""

from collections.abc import Sequence
from importlib import import_module

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_0018 = import_module("routing.migrations.versions.0018_rep_worked_counter")


def _worked(row: str) -> str:
    return f"({row}.first_touch_at IS NOT NULL AND {row}.current_rep_id IS NOT NULL AND {row}.status IN ({_0018.OPEN}))"


_TRIGGERS = _0018.sqlite_triggers(_worked)


def _replace(triggers: Sequence[str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        return
    for name in _0018._SQLITE_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in triggers:
        op.execute(statement)


def upgrade() -> None:
    _replace(_TRIGGERS)


def downgrade() -> None:
    _replace(_0018._SQLITE_TRIGGERS)
