"""A routing batch's questions after its locks: which leads are routed or erased already, the new assignment ids,
and the state the decisions read (every rep's load, every team's rotation, the worked open leads), as
LeadRepository.batch_state asks them on the session's connection."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, func, literal, select, text
from sqlalchemy.sql.expression import ClauseElement

from common.sqlprep import Statement, execute, is_inline_sqlite, keyed
from routing.store.roster import read_loads, read_roster_version, read_rotation, read_worked
from routing.store.tables import ROSTER_VERSION, AssignmentRow, ErasedLead, LeadRow


@dataclass
class BatchState:
    """What LeadRepository.batch_state answers (loads, rotation and worked are None when not asked for)."""

    routed: set[str]
    erased: set[str]
    ids: list[int] = field(default_factory=list)
    loads: dict[str, tuple[int, str, int]] | None = None
    rotation: dict[str, dict[str, int]] | None = None
    worked: dict[str, int] | None = None
    version: int | None = None  # the stored roster version, when asked for


def reserve_ids(connection: Connection, count: int) -> list[int]:
    """`count` new assignment ids from the database's own counter, in one statement."""
    if count <= 0:
        return []
    if connection.dialect.name == "postgresql":
        # The serial's sequence: nextval is atomic and outside transactions (a rollback leaves a gap).
        return sorted(int(i) for (i,) in _NEXTVAL.fetch(connection, {"n": count}))
    # AUTOINCREMENT's counter (migration 0004). SQLite has one writer at a time, so a counter bumped inside the
    # write transaction is atomic; rows inserted with these ids keep it at the maximum.
    bumped = next((seq for (seq,) in _BUMP.fetch(connection, {"n": count})), None)
    if bumped is None:
        last = int(connection.execute(select(func.max(AssignmentRow.id))).scalar_one() or 0) + count
        connection.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES ('assignments', :seq)"), {"seq": last})
        bumped = last
    return list(range(int(bumped) - count + 1, int(bumped) + 1))


def next_ids(connection: Connection, count: int) -> list[int]:
    """`count` assignment ids for rows this transaction inserts before it reserves any other (a routing batch's,
    written before the batch returns). On SQLite the counter is read, not bumped: the rows' inserts move it
    (AUTOINCREMENT keeps it at the largest id ever inserted), and the transaction holds SQLite's write lock (BEGIN
    IMMEDIATE, as common.outbox_sqlite's seqs), so no other takes ids between; ids reserved earlier in this one
    (reserve_ids: the one-lead path's, its rows perhaps not flushed yet) are at or below it. Else reserve_ids."""
    if count <= 0 or connection.dialect.name == "postgresql":
        return reserve_ids(connection, count)
    seq = next((seq for (seq,) in _SEQUENCE.fetch(connection)), None)
    if seq is None:
        seq = int(connection.execute(select(func.max(AssignmentRow.id))).scalar_one() or 0)
    return list(range(int(seq) + 1, int(seq) + count + 1))


# Driver SQL, compiled once (a consumer poll asks these every time; SQLAlchemy's execution cost more than the
# database's answer).
_NEXTVAL = Statement(text("SELECT nextval(pg_get_serial_sequence('assignments', 'id')) FROM generate_series(1, :n)"))
_SEQUENCE = Statement(text("SELECT seq FROM sqlite_sequence WHERE name = 'assignments'"))
_BUMP = Statement(text("UPDATE sqlite_sequence SET seq = seq + :n WHERE name = 'assignments' RETURNING seq"))


def _seen(count: int) -> ClauseElement:
    """Which of `count` leads (binds id0...) are routed (1) or erased (0): compiled once per count."""
    ids: list[Any] = [bindparam(f"id{i}") for i in range(count)]
    return (
        select(LeadRow.lead_id, literal(1))
        .where(LeadRow.lead_id.in_(ids))
        .union_all(select(ErasedLead.lead_id, literal(0)).where(ErasedLead.lead_id.in_(ids)))
    )


def read_seen(connection: Connection, lead_ids: Collection[str]) -> list[tuple[str, bool]]:
    """(lead id, routed) for those of these leads routed already or erased: one statement per 500 ids."""
    ids, found = sorted(lead_ids), list[tuple[str, bool]]()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        compiled = keyed(connection.dialect, ("routing.seen", len(chunk)), partial(_seen, len(chunk)))
        values = compiled.params({f"id{i}": lead_id for i, lead_id in enumerate(chunk)})
        rows = execute(connection, compiled.sql, values, fetch=True)
        found.extend((lead_id, bool(routed)) for lead_id, routed in rows)
    return found


# A batch's questions on SQLite in one statement (a UNION ALL, each part's rows tagged) up to this many leads:
# sqlite3 prepares, steps and resets one statement instead of five (~4 us each in a one-lead poll).
_ONE_READ = 64
_ONE_READ_SQL: dict[tuple[int, bool, bool, bool], str] = {}


_VERSION_PART = "SELECT 6, value, NULL, NULL, NULL FROM routing_state WHERE key = 'roster_version'"
assert ROSTER_VERSION in _VERSION_PART


def _one_read_sql(count: int, state: bool, worked: bool, version: bool) -> str:
    key = (count, state, worked, version)
    found = _ONE_READ_SQL.get(key)
    if found is None:
        marks = ", ".join("?" * count)  # placeholders only: the SQL holds no value
        parts = [
            f"SELECT 0, lead_id, NULL, NULL, NULL FROM leads WHERE lead_id IN ({marks})",  # noqa: S608
            f"SELECT 1, lead_id, NULL, NULL, NULL FROM erased_leads WHERE lead_id IN ({marks})",  # noqa: S608
            "SELECT 2, seq, NULL, NULL, NULL FROM sqlite_sequence WHERE name = 'assignments'",
        ]
        if state:
            parts.append("SELECT 3, rep_id, open_leads, day, assigned_today FROM rep_loads")
            parts.append('SELECT 4, team_id, rep_id, "current", NULL FROM rotation')
            if worked:
                parts.append(
                    "SELECT 5, rep_id, sum(worked), NULL, NULL FROM rep_worked_counts GROUP BY rep_id"
                    " HAVING sum(worked) != 0"
                )
        if version:
            parts.append(_VERSION_PART)
        found = _ONE_READ_SQL[key] = " UNION ALL ".join(parts)
    return found


def read_batch_sqlite(
    connection: Connection, lead_ids: Collection[str], *, state: bool, worked: bool, version: bool
) -> BatchState:
    """read_batch on the inline SQLite dialect, in one statement: the same answers as read_seen, next_ids,
    read_loads, read_rotation, read_worked and read_roster_version (the same rows, as sqlite3 gives them)."""
    ids = sorted(lead_ids)
    rows = execute(connection, _one_read_sql(len(ids), state, worked, version), (*ids, *ids), fetch=True)
    found = BatchState(set(), set(), version=0 if version else None)
    seq: int | None = None
    loads: dict[str, tuple[int, str, int]] = {}
    rotation: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    for part, a, b, c, d in rows:
        if part == 0:
            found.routed.add(a)
        elif part == 1:
            found.erased.add(a)
        elif part == 2:
            seq = a
        elif part == 3:
            loads[a] = (b, c, d)
        elif part == 4:
            rotation.setdefault(a, {})[b] = c
        elif part == 5:
            counts[str(a)] = int(b)
        else:
            found.version = int(a)
    count = len(set(lead_ids) - found.routed)
    if seq is None:
        found.ids = next_ids(connection, count)  # no counter row yet: the table's largest id
    else:
        found.ids = list(range(int(seq) + 1, int(seq) + count + 1)) if count > 0 else []
    if state:
        found.loads, found.rotation, found.worked = loads, rotation, counts if worked else {}
    return found


def read_batch(
    connection: Connection, *, lead_ids: Collection[str], state: bool, worked: bool, version: bool = False
) -> BatchState:
    """LeadRepository.batch_state's answers: which of these leads are routed or erased already, new assignment ids
    for the others, and (`state`) every rep's load, every team's rotation and per rep the open leads someone has
    touched already (`worked`; else none), and (`version`) the stored roster version. On SQLite in one statement
    up to _ONE_READ leads."""
    if is_inline_sqlite(connection.dialect) and len(lead_ids) <= _ONE_READ:
        return read_batch_sqlite(connection, lead_ids, state=state, worked=worked, version=version)
    rows = read_seen(connection, lead_ids)
    routed = {lead_id for lead_id, was_routed in rows if was_routed}
    found = BatchState(routed, {lead_id for lead_id, was_routed in rows if not was_routed})
    found.ids = next_ids(connection, len(set(lead_ids) - routed))
    if state:
        found.loads, found.rotation = read_loads(connection), read_rotation(connection)
        found.worked = read_worked(connection) if worked else {}
    if version:
        found.version = read_roster_version(connection)
    return found
