"""A routing batch's rows as tuples in column order (a lead, its assignment, its timers, its timeline entry), and their
executemanys: on the inline SQLite dialect each row's values are made here as sqlite3 takes them (a JSON column's
text, a time's text once per distinct time) instead of going through common.sqlprep's per-column processors; on
any other dialect Core's rows (dicts) through common.sqlprep.insert_many, as before.

Why: at drain polls a lead's four rows went through a dict each, then a tuple per row built from it with ~10
processor calls (three JSON columns, six times, two flags): ~10 us a lead of Python around SQLite's own ~20. The
values written are the processors' (a test holds the two to the same rows, on both stores)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import chain
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


# Each table's model, columns, and whether its rows go in runs of multi-row INSERTs (see _CHUNK).
_TABLES: tuple[tuple[Any, tuple[str, ...], bool], ...] = (
    (LeadRow, LeadValues._fields, False),
    (AssignmentRow, AssignmentValues._fields, True),
    (SlaTimer, TimerValues._fields, True),
    (TimelineRow, TimelineValues._fields, True),
)


def write_rows(
    connection: Connection,
    leads: Sequence[LeadValues],
    assignments: Sequence[AssignmentValues],
    timers: Sequence[TimerValues],
    timeline: Sequence[TimelineValues],
) -> None:
    """The batch's rows, table by table (a lead before what refers to it), each table's rows in their order: on
    SQLite in runs of multi-row INSERTs where that measured cheaper (_CHUNK), the rest an executemany."""
    batches: tuple[Sequence[tuple[Any, ...]], ...] = (leads, assignments, timers, timeline)
    dialect = connection.dialect
    if not is_inline_sqlite(dialect):
        for (model, columns, _), rows in zip(_TABLES, batches, strict=True):
            if rows:
                insert_many(connection, _table(model), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    raw = connection.connection.driver_connection
    for (model, columns, chunked), rows in zip(
        _TABLES, sqlite_values(leads, assignments, timers, timeline), strict=True
    ):
        if rows:
            sql = _insert_sql(dialect, model, columns)
            whole = len(rows) - len(rows) % _CHUNK if chunked else 0
            if whole:  # runs of _CHUNK rows, each one multi-row INSERT of their values in row order
                values = [tuple(chain.from_iterable(rows[at : at + _CHUNK])) for at in range(0, whole, _CHUNK)]
                run_sqlite(raw, dialect, _chunk_sql(sql, len(columns)), values, True, False)
            if whole < len(rows):
                run_sqlite(raw, dialect, sql, rows[whole:], True, False)


# Rows a multi-row INSERT takes on SQLite: sqlite3's executemany steps SQLite's program once a row, binding and
# resetting each time; a statement of 32 rows' values is stepped once for them (an assignment's 16 binds x 32 = 512,
# far under SQLite's 32,766). SQLite's own time in polls of 200 (store of 22,000 leads): timers 8.7 -> 7.1 us a lead,
# assignments 3.9 -> 3.3, timeline 1.8 -> 1.7; the leads' rows (a ~700-byte view each) measured slower so (8.1 ->
# 9.1) and stay one a row. The rows short of a whole run go through the one-row INSERT: a statement per distinct row
# count would crowd sqlite3's statement cache.
_CHUNK = 32
_CHUNKS: dict[str, str] = {}


def _chunk_sql(sql: str, binds: int) -> str:
    """The one-row INSERT's SQL with _CHUNK rows of values."""
    found = _CHUNKS.get(sql)
    if found is None:
        head, _, values = sql.rpartition(" VALUES ")
        one = "(" + ", ".join("?" * binds) + ")"
        if values != one:
            raise RuntimeError(f"not a plain one-row INSERT: {sql!r}")
        found = _CHUNKS[sql] = f"{head} VALUES {', '.join([one] * _CHUNK)}"
    return found


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
