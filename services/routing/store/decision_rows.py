"""A routing batch's rows as tuples in column order (a lead, its assignment, its timers, its timeline entry), and their
executemanys: on the inline SQLite dialect each row's values are made here as sqlite3 takes them (a JSON column's
text, a time's text once per distinct time) instead of going through common.sqlprep's per-column processors; on
any other dialect Core's rows (dicts) through common.sqlprep.insert_many, as before.

Why: at drain polls a lead's four rows went through a dict each, then a tuple per row built from it with ~10
processor calls (three JSON columns, six times, two flags): ~10 us a lead of Python around SQLite's own ~20. The
values written are the processors' (a test holds the two to the same rows)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Dialect, Table

from common.db_types import json_column_dumps, sqlite_time_text
from common.sqlprep import insert_many, insert_plan, is_inline_sqlite, run_sqlite
from routing.store.tables import AssignmentRow, LeadRow, SlaTimer, TimelineRow


class LeadValues(NamedTuple):
    """A new lead's row (LeadRow's columns); its attributes are what the event data reads of a lead."""

    lead_id: str
    status: str
    current_rep_id: str | None
    team_id: str | None
    grade: str | None
    source_kind: str | None
    source_id: str | None
    duplicate_of: str | None
    is_test: bool
    view: dict[str, Any]
    received_at: datetime | None
    submitted_at: datetime | None
    routed_at: datetime
    first_touch_at: datetime | None
    reassignments: int
    erased_at: datetime | None
    thread_id: str | None
    merged_into: str | None


class AssignmentValues(NamedTuple):
    """An assignment's row as a decision starts it (AssignmentRow's columns but ended_at and end_reason)."""

    id: int
    lead_id: str
    outcome: str
    rep_id: str | None
    team_id: str | None
    rule_id: str | None
    ruleset_version: str
    method: str | None
    reason: str
    decision: dict[str, Any]
    attempt: int
    assigned_at: datetime
    sla_policy: str | None
    sla_minutes: float | None
    sla_business_hours: bool | None
    sla_due_at: datetime | None


class TimerValues(NamedTuple):
    """A new SLA timer's row (not fired, no escalation pending)."""

    lead_id: str
    assignment_id: int
    kind: str
    fraction: float | None
    due_at: datetime
    cancelled: bool


class TimelineValues(NamedTuple):
    lead_id: str
    at: datetime
    kind: str
    detail: dict[str, Any]


_TABLES: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (LeadRow, LeadValues._fields),
    (AssignmentRow, AssignmentValues._fields),
    (SlaTimer, TimerValues._fields),
    (TimelineRow, TimelineValues._fields),
)


def write_rows(
    connection: Connection,
    leads: Sequence[LeadValues],
    assignments: Sequence[AssignmentValues],
    timers: Sequence[TimerValues],
    timeline: Sequence[TimelineValues],
) -> None:
    """The batch's rows, an executemany a table (in this order: a lead before what refers to it)."""
    batches: tuple[Sequence[tuple[Any, ...]], ...] = (leads, assignments, timers, timeline)
    dialect = connection.dialect
    if not is_inline_sqlite(dialect):
        for (model, columns), rows in zip(_TABLES, batches, strict=True):
            if rows:
                insert_many(connection, _table(model), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    raw = connection.connection.driver_connection
    for (model, columns), rows in zip(_TABLES, sqlite_values(leads, assignments, timers, timeline), strict=True):
        if rows:
            run_sqlite(raw, dialect, _insert_sql(dialect, model, columns), rows, True, False)


def sqlite_values(
    leads: Sequence[LeadValues],
    assignments: Sequence[AssignmentValues],
    timers: Sequence[TimerValues],
    timeline: Sequence[TimelineValues],
) -> tuple[list[tuple[Any, ...]], ...]:
    """Each table's rows as sqlite3 takes them on SQLite: what the columns' bind processors give (JSON text, a time
    as UtcDateTime's text, each distinct time converted once; flags and numbers as they are, sqlite3 storing a
    bool as 1/0 as Boolean's processor does)."""
    texts: dict[datetime, str] = {}

    def text(value: datetime | None) -> str | None:
        if value is None:
            return None
        found = texts.get(value)
        if found is None:
            found = texts[value] = sqlite_time_text(value)
        return found

    dumps = json_column_dumps
    lead_rows = []
    for lead in leads:
        times = text(lead.received_at), text(lead.submitted_at), text(lead.routed_at), text(lead.first_touch_at)
        rest = lead.reassignments, text(lead.erased_at), lead.thread_id, lead.merged_into
        lead_rows.append((*lead[:9], dumps(lead.view), *times, *rest))
    assignment_rows = [
        (*row[:9], dumps(row.decision), row.attempt, text(row.assigned_at), *row[12:15], text(row.sla_due_at))
        for row in assignments
    ]
    timer_rows = [(*row[:4], text(row.due_at), row.cancelled) for row in timers]
    timeline_rows = [(row.lead_id, text(row.at), row.kind, dumps(row.detail)) for row in timeline]
    return lead_rows, assignment_rows, timer_rows, timeline_rows


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


def _insert_sql(dialect: Dialect, model: Any, columns: tuple[str, ...]) -> str:
    """The INSERT of these columns in this order (common.sqlprep's plan, compiled once); refuses a plan whose values
    would not be the row's own (constants, or binds in another order)."""
    plan = insert_plan(dialect, _table(model), columns)
    if plan is None or plan.names != columns or plan.constants:
        raise RuntimeError(f"{model.__tablename__}: no plain insert of {columns}")
    return plan.sql
