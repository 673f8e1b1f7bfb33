"""A routing batch's rows go to the driver as tuples (routing.store.decision_rows): what they store is what Core's rows
(dicts through each column type's bind processor) store, on both stores: JSON text, times, flags, NULLs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, Table, text
from sqlalchemy.orm import Session

from common.db import Database
from common.db_schema import upgrade_schema_async
from common.sqlprep import insert_many
from routing.engine import MIGRATIONS
from routing.store import AssignmentRow, Base, LeadRow, SlaTimer, TimelineRow
from routing.store.decision_rows import AssignmentValues, LeadValues, TimelineValues, TimerValues, write_rows

pytestmark = pytest.mark.integration

PAIRS = 35  # 70 leads and assignments, 105 timers: two runs of 32 rows a table, then rows one at a time
NOW = datetime(2026, 12, 4, 23, 1, 2, 345678, tzinfo=UTC)
BERLIN = timezone(timedelta(hours=1))


def rows(prefix: str, first_id: int) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """Two leads unlike each other in every column that is converted: an assigned one, an erased held test lead."""
    view = {"lead": {"name": "Zoë", "tags": ["x", "ü"]}, "score": {"grade": "A", "total": 91.5}, "is_test": False}
    decision = {"outcome": "assigned", "candidates": [{"rep_id": "r1", "eligible": True}], "sla": None}
    later = NOW.replace(microsecond=0) + timedelta(minutes=30)
    lead = LeadValues(f"{prefix}-1", "assigned", "r1", "t", "A", "api", None, None, False, view, NOW, None, NOW,
                      None, 0, None, None, None)  # fmt: skip
    held = lead._replace(lead_id=f"{prefix}-2", status="held", current_rep_id=None, grade=None, source_kind="web",
                         source_id="s-1", is_test=True, view={}, received_at=NOW.astimezone(BERLIN),
                         submitted_at=later, erased_at=NOW)  # fmt: skip
    assignment = AssignmentValues(first_id, lead.lead_id, "assigned", "r1", "t", "everyone", "v1", "round_robin",
                                  "why", decision, 1, NOW, "A", 5, True, later)  # fmt: skip
    waits = assignment._replace(id=first_id + 1, lead_id=held.lead_id, outcome="held", rep_id=None, rule_id=None,
                                method=None, decision={}, sla_policy=None, sla_minutes=None, sla_business_hours=None,
                                sla_due_at=None)  # fmt: skip
    timers = [
        TimerValues(lead.lead_id, first_id, "warning", 0.5, NOW + timedelta(minutes=2, microseconds=1), False),
        TimerValues(lead.lead_id, first_id, "breach", None, later, False),
        TimerValues(held.lead_id, first_id + 1, "hold", None, later.astimezone(BERLIN), False),
    ]
    timeline = [
        TimelineValues(lead.lead_id, NOW, "assigned", {"assignment_id": first_id, "note": "ä", "n": None}),
        TimelineValues(held.lead_id, NOW, "assigned", {"assignment_id": first_id + 1}),
    ]
    return [lead, held], [assignment, waits], timers, timeline


def many_rows(pairs: int) -> tuple[list[Any], ...]:
    """`pairs` of rows() (two leads each, with their ids): runs of multi-row INSERTs and the rest one a row."""
    batches: tuple[list[Any], ...] = ([], [], [], [])
    for pair in range(pairs):
        for batch, made in zip(batches, rows(f"lead{pair:03d}", 2 * pair + 1), strict=True):
            batch.extend(made)
    return batches


def core_rows(connection: Connection, batches: tuple[list[Any], ...]) -> None:
    for model, batch in zip((LeadRow, AssignmentRow, SlaTimer, TimelineRow), batches, strict=True):
        table: Table = model.__table__  # type: ignore[assignment]
        insert_many(connection, table, [row._asdict() for row in batch])


STORED = {
    "leads": "SELECT * FROM leads ORDER BY lead_id",
    "assignments": "SELECT * FROM assignments ORDER BY id",
    # Without their own ids (a PostgreSQL sequence does not roll back).
    "sla_timers": "SELECT lead_id, assignment_id, kind, fraction, due_at, fired_at, cancelled, escalate_at"
    " FROM sla_timers ORDER BY id",
    "timeline": "SELECT lead_id, at, kind, detail FROM timeline ORDER BY id",
}


def _on_connection(session: Session, write: Callable[[Connection], None]) -> None:
    write(session.connection())


class RolledBack(Exception):
    """Raised to leave the store as it was for the other writer."""


async def test_the_batch_rows_store_what_cores_rows_store(database_url: str) -> None:
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    db = Database(database_url)

    def tuples(connection: Connection) -> None:
        write_rows(connection, *many_rows(PAIRS))

    def core(connection: Connection) -> None:
        core_rows(connection, many_rows(PAIRS))

    writers: dict[str, Callable[[Connection], None]] = {"tuples": tuples, "core": core}
    stored: dict[str, dict[str, list[Any]]] = {}
    try:
        for name, write in writers.items():
            try:
                async with db.transaction() as session:
                    await session.run_sync(_on_connection, write)
                    stored[name] = {
                        table: list((await session.execute(text(sql))).all()) for table, sql in STORED.items()
                    }
                    raise RolledBack  # the same ids again for the next writer
            except RolledBack:
                pass
    finally:
        await db.dispose()
    assert stored["tuples"] == stored["core"]
    assert [len(stored["tuples"][table]) for table in STORED] == [2 * PAIRS, 2 * PAIRS, 3 * PAIRS, 2 * PAIRS]
