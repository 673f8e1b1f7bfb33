"""The database layer under concurrency and contention: migrations raced by processes started together."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from common.consumer import is_transient
from common.db import Database
from scoring.app import create_app as create_scoring_app
from scoring.settings import ScoringSettings
from tests.support.stack import ADMIN, ADMIN_TOKEN

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


@pytest.mark.postgres
@pytest.mark.kafka
async def test_a_request_waiting_on_a_held_lock_answers_503_within_the_lock_timeout(
    pg_database: str, kafka_bootstrap: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds a table lock: the request gives up after the lock timeout with a 503 (never a
    500, never a hang), and the same error in a consumer is transient, so its batch is redelivered."""
    for key, value in {
        "HANDOFF_ENV": "test",
        "HANDOFF_ADMIN_TOKEN": ADMIN_TOKEN,
        "HANDOFF_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HANDOFF_TOPIC_NAMESPACE": namespace,
        "HANDOFF_TOPIC_PARTITIONS": "1",
        "HANDOFF_LOG_LEVEL": "WARNING",
        "SCORING_DATABASE_URL": pg_database,
        "HANDOFF_PG_LOCK_TIMEOUT_S": "0.5",
    }.items():
        monkeypatch.setenv(key, value)
    settings = ScoringSettings()
    app = create_scoring_app(settings)
    async with app.router.lifespan_context(app):
        holder = await asyncpg.connect(pg_database.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE scored_leads IN ACCESS EXCLUSIVE MODE")
                transport = httpx.ASGITransport(app=app)
                # Without a lock timeout this request would wait for as long as the lock is held: the client's
                # own timeout (far above the bound) would fail the test.
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://scoring", headers=ADMIN, timeout=30
                ) as client:
                    response = await asyncio.wait_for(client.get("/v1/scores/some-lead"), 30)
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "unavailable"
                assert response.headers["retry-after"]

                db = Database(pg_database, pg_lock_timeout_s=0.5)
                try:
                    with pytest.raises(DBAPIError) as raised:
                        async with db.transaction() as session:
                            await session.execute(text("SELECT count(*) FROM scored_leads"))
                    assert is_transient(raised.value)
                finally:
                    await db.dispose()
        finally:
            await holder.close()
