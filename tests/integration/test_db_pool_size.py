"""Database pools sized to the requests served at once (issue 13 item 5): a burst of concurrent readers reuses the
pool's connections instead of opening (and closing) one per request, on SQLite's read engine and on PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text

from common.db import Database
from ingest.settings import IngestSettings

pytestmark = [pytest.mark.integration]


async def _burst(db: Database, readers: int) -> None:
    """`readers` sessions at once, each holding its connection until all have one."""
    all_in = asyncio.Barrier(readers)

    async def read() -> None:
        async with db.read() as session:
            await session.execute(text("SELECT 1"))
            await all_in.wait()

    await asyncio.gather(*(read() for _ in range(readers)))


async def test_a_second_burst_of_32_readers_opens_no_connection(database_url: str) -> None:
    db = Database(database_url, pool_size=32)
    opened = [0]
    event.listen(db.read_engine.sync_engine, "connect", lambda *_: opened.__setitem__(0, opened[0] + 1))
    try:
        await _burst(db, 32)
        assert opened[0] == 32
        await _burst(db, 32)
        await _burst(db, 32)
        assert opened[0] == 32  # every connection of the first burst was kept and reused
    finally:
        await db.dispose()


def test_ingest_pools_one_connection_per_lead_post_in_flight_unless_told_otherwise() -> None:
    assert IngestSettings(max_inflight_leads=48).database_pool_size == 48
    assert IngestSettings(max_inflight_leads=48, db_pool_size=8).database_pool_size == 8
