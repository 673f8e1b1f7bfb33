"""The database layer under concurrency and contention: migrations raced by processes started together."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import text

from common.db import Database

pytestmark = pytest.mark.integration


_MIGRATE = """
import sys
from common.db import upgrade_schema
from ingest.app import MIGRATIONS
from ingest.store import Base
sys.stdin.readline()  # both processes are ready: go together
upgrade_schema(sys.argv[1], MIGRATIONS, Base.metadata)
"""


@pytest.mark.postgres
def test_two_processes_migrating_a_fresh_postgres_database_together_both_succeed(pg_database: str) -> None:
    """Two ingest processes started together on a fresh database: both migrate (one waits), one schema results."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, pg_database],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outcomes = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _out, err in outcomes]

    async def schema() -> tuple[int, int]:
        db = Database(pg_database)
        try:
            async with db.read() as session:
                versions = (await session.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one()
                tables = (
                    await session.execute(
                        text("SELECT count(*) FROM information_schema.tables WHERE table_name = 'lead_identities'")
                    )
                ).scalar_one()
            return int(versions), int(tables)
        finally:
            await db.dispose()

    assert asyncio.run(schema()) == (1, 1)
