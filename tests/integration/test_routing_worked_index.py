"""Each rep's worked open leads are kept by the writes (triggers on leads, migration 0018): after any sequence of
inserts, updates and deletes, ORM or Core, one row or many a statement, the kept count is the counted one, on both
stores."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Executable, delete, func, select, update

from common.db import Database
from common.db_schema import upgrade_schema_async
from routing.domain.lifecycle import OPEN_STATUSES
from routing.engine import MIGRATIONS
from routing.store import Base
from routing.store.roster import read_worked
from routing.store.tables import LeadRow

pytestmark = pytest.mark.integration

STATUSES = (*OPEN_STATUSES, "nurture", "converted", "disqualified", "merged", "new")
REPS = ("r1", "r2", "r3", None)


class Failed(Exception):
    """Raised in a transaction to roll it back."""


def unsynced(statement: Executable) -> Executable:
    """A bulk write as the use cases make them (no ORM session synchronization)."""
    return statement.execution_options(synchronize_session=False)


def counted(connection: Connection) -> dict[str, int]:
    query = (
        select(LeadRow.current_rep_id, func.count())
        .where(
            LeadRow.status.in_(OPEN_STATUSES),
            LeadRow.current_rep_id.is_not(None),
            LeadRow.first_touch_at.is_not(None),
        )
        .group_by(LeadRow.current_rep_id)
    )
    return {str(rep): int(n) for rep, n in connection.execute(query)}


def test_the_migration_counts_the_open_statuses_of_the_lifecycle() -> None:
    from importlib import import_module

    migration = import_module("routing.migrations.versions.0018_rep_worked_counter")
    assert ", ".join(f"'{status}'" for status in OPEN_STATUSES) == migration.OPEN


@pytest.mark.parametrize("seed", [1, 2])
async def test_kept_worked_counts_equal_the_counted_ones_after_random_writes(database_url: str, seed: int) -> None:
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    db = Database(database_url)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ids: list[str] = []

    def some() -> list[str]:
        return rng.sample(ids, min(len(ids), rng.randint(1, 6)))

    try:
        for step in range(60):
            try:
                async with db.transaction() as session:
                    # common.db's kept SQLite connection is taken by an execute, not by a first flush (reported)
                    await session.connection()
                    for _ in range(rng.randint(1, 4)):
                        action = rng.choice(("add", "add", "orm", "touch", "close", "reassign", "hand_over", "erase"))
                        if action == "add" or not ids:
                            fresh = [f"l{step}-{len(ids) + i}" for i in range(rng.randint(1, 5))]
                            ids.extend(fresh)
                            session.add_all(
                                LeadRow(
                                    lead_id=lead_id,
                                    status=rng.choice(STATUSES),
                                    current_rep_id=rng.choice(REPS),
                                    routed_at=now,
                                    first_touch_at=rng.choice((None, now)),
                                )
                                for lead_id in fresh
                            )
                            await session.flush()
                        elif action == "orm":  # one lead, any of the three columns, as the desk's actions write them
                            lead = await session.get(LeadRow, rng.choice(ids))
                            assert lead is not None
                            lead.status = rng.choice(STATUSES)
                            lead.current_rep_id = rng.choice(REPS)
                            lead.first_touch_at = rng.choice((None, lead.first_touch_at, now))
                            await session.flush()
                        elif action == "touch":
                            rows = update(LeadRow).where(LeadRow.lead_id.in_(some()))
                            await session.execute(unsynced(rows.values(first_touch_at=now, status="touched")))
                        elif action == "close":
                            rows = update(LeadRow).where(LeadRow.lead_id.in_(some()))
                            closed = rng.choice(("converted", "disqualified"))
                            await session.execute(unsynced(rows.values(status=closed)))
                        elif action == "reassign":  # a new rep and a fresh clock: untouched again
                            rows = update(LeadRow).where(LeadRow.lead_id.in_(some()))
                            moved = rows.values(current_rep_id=rng.choice(REPS), first_touch_at=None)
                            await session.execute(unsynced(moved))
                        elif action == "hand_over":  # every open lead of one rep to another, touches kept
                            source, target = rng.sample(REPS[:3], 2)
                            rows = update(LeadRow).where(
                                LeadRow.current_rep_id == source, LeadRow.status.in_(OPEN_STATUSES)
                            )
                            await session.execute(unsynced(rows.values(current_rep_id=target)))
                        else:
                            gone = some()
                            await session.execute(unsynced(delete(LeadRow).where(LeadRow.lead_id.in_(gone))))
                            ids[:] = [lead_id for lead_id in ids if lead_id not in gone]
                    if rng.random() < 0.2:
                        raise Failed
            except Failed:  # a transaction that fails leaves the counter as it was
                ids[:] = [lead_id for lead_id in ids if not lead_id.startswith(f"l{step}-")]
            async with db.read() as session:
                kept = await session.run_sync(lambda sync: read_worked(sync.connection()))
                assert kept == await session.run_sync(lambda sync: counted(sync.connection())), step
        assert sum(kept.values()) > 0
    finally:
        await db.dispose()
