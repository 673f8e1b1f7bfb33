"""The per-poll count of each rep's worked open leads reads the touched leads only (migration 0015), on both stores."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from common.db import Database
from common.db_schema import upgrade_schema_async
from routing.engine import MIGRATIONS
from routing.store import Base
from routing.store.roster import read_worked
from routing.store.tables import LeadRow

pytestmark = pytest.mark.integration

OPEN = ("assigned", "touched")


async def test_worked_counts_come_from_the_touched_leads_index(database_url: str) -> None:
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    db = Database(database_url)
    now = datetime.now(UTC)
    try:
        async with db.transaction() as session:
            # A backlog waiting for its first touch, touched open leads, and touched leads that are closed.
            waiting = [
                LeadRow(lead_id=f"w{i}", status="assigned", current_rep_id=f"rep{i % 3}", routed_at=now)
                for i in range(300)
            ]
            touched = [
                LeadRow(
                    lead_id=f"t{i}", status="touched", current_rep_id=f"rep{i % 2}", routed_at=now, first_touch_at=now
                )
                for i in range(5)
            ]
            closed = [
                LeadRow(lead_id=f"c{i}", status="converted", current_rep_id="rep0", routed_at=now, first_touch_at=now)
                for i in range(4)
            ]
            session.add_all([*waiting, *touched, *closed])
        async with db.read() as session:
            worked = await session.run_sync(lambda sync: read_worked(sync.connection(), OPEN))
            assert worked == {"rep0": 3, "rep1": 2}
            if db.is_sqlite:
                sql = (
                    "EXPLAIN QUERY PLAN SELECT current_rep_id, count(*) FROM leads WHERE status IN ('assigned', "
                    "'touched') AND current_rep_id IS NOT NULL AND first_touch_at IS NOT NULL GROUP BY current_rep_id"
                )
                plan = " ".join(str(row[-1]) for row in (await session.execute(text(sql))).all())
                assert "ix_leads_worked" in plan, plan
            else:
                found = await session.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE tablename = 'leads' AND indexname = 'ix_leads_worked'")
                )
                assert "first_touch_at IS NOT NULL" in found.scalar_one()
    finally:
        await db.dispose()
