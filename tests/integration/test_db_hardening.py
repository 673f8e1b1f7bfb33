"""The database layer under concurrency and contention: migrations raced by processes started together."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from sqlalchemy import delete, insert, select, text
from sqlalchemy.exc import DBAPIError

from common.consumer import is_transient
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.runtime import Runtime
from ingest.app import MIGRATIONS as INGEST_MIGRATIONS
from ingest.handlers import purge_erased_identities
from ingest.settings import IngestSettings
from ingest.store import Base as IngestBase
from ingest.store import LeadIdentity
from routing.app import MIGRATIONS as ROUTING_MIGRATIONS
from routing.store import AssignmentRow, RoutingRepository
from routing.store import Base as RoutingBase
from scoring.app import MIGRATIONS as SCORING_MIGRATIONS
from scoring.app import create_app as create_scoring_app
from scoring.settings import ScoringSettings
from scoring.store import Base as ScoringBase
from scoring.store import outbox as scoring_outbox
from scoring.store import processed as scoring_processed
from tests.support.stack import ADMIN, ADMIN_TOKEN

pytestmark = pytest.mark.integration


_MIGRATE = """
import sys
from common.db_schema import upgrade_schema
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


async def _routing_db(url: str) -> Database:
    await upgrade_schema_async(url, ROUTING_MIGRATIONS, RoutingBase.metadata)
    return Database(url)


async def test_assignment_ids_come_from_the_database_distinct_without_the_routing_lock_and_never_reused(
    database_url: str,
) -> None:
    db = await _routing_db(database_url)
    try:
        if not db.is_sqlite:
            # Two processes' transactions, open at once and neither holding the routing lock.
            async with db.sessions() as first, db.sessions() as second, first.begin(), second.begin():
                ids = [
                    await RoutingRepository(first).next_assignment_id(),
                    await RoutingRepository(second).next_assignment_id(),
                    await RoutingRepository(first).next_assignment_id(),
                ]
            assert len(set(ids)) == 3
        async with db.transaction() as session:
            newest = await RoutingRepository(session).next_assignment_id()
            session.add(
                AssignmentRow(
                    id=newest,
                    lead_id=str(uuid.uuid4()),
                    outcome="assigned",
                    ruleset_version="v1",
                    reason="test",
                    decision={},
                    attempt=1,
                    assigned_at=datetime.now(UTC),
                )
            )
        async with db.transaction() as session:  # the newest assignment goes (a purge, a manual fix)
            await session.execute(delete(AssignmentRow).where(AssignmentRow.id == newest))
        async with db.transaction() as session:
            following = await RoutingRepository(session).next_assignment_id()
        assert following > newest, "an id once handed out is never handed out again"
    finally:
        await db.dispose()


async def test_dedupe_marks_past_their_retention_are_purged_fresh_ones_kept(database_url: str) -> None:
    now = datetime.now(UTC)
    settings = ScoringSettings(env="test", SCORING_DATABASE_URL=database_url, dedupe_retention_days=14)  # type: ignore[call-arg]
    runtime = Runtime(
        settings=settings,
        metadata=ScoringBase.metadata,
        migrations=SCORING_MIGRATIONS,
        outbox=scoring_outbox,
        processed=scoring_processed,
    )
    await upgrade_schema_async(database_url, SCORING_MIGRATIONS, ScoringBase.metadata)
    try:
        ages = {"old": timedelta(days=15), "fresh": timedelta(days=6)}  # past 14 days; within a 7-day topic
        async with runtime.db.transaction() as session:
            await session.execute(
                insert(scoring_processed),
                [
                    {"event_id": name, "event_type": "lead.received", "processed_at": now - age}
                    for name, age in ages.items()
                ],
            )
        async with runtime.db.transaction() as session:
            assert await runtime.purge_processed(session) == 1
        async with runtime.db.read() as session:
            kept = (await session.execute(select(scoring_processed.c.event_id))).scalars().all()
        assert kept == ["fresh"], "a redelivery of a record still in the topic must stay deduped"
    finally:
        await runtime.db.dispose()


async def test_identity_rows_of_erased_leads_are_purged_and_a_live_leads_are_kept_for_subject_access(
    database_url: str,
) -> None:
    now = datetime.now(UTC)
    await upgrade_schema_async(database_url, INGEST_MIGRATIONS, IngestBase.metadata)
    ingest_db = Database(database_url)
    try:
        ingest = IngestSettings(env="development", repeat_window_hours=72)
        async with ingest_db.transaction() as session:
            session.add_all(
                [
                    LeadIdentity(identity="erased", lead_id="gone", seen_at=now - timedelta(hours=80)),
                    LeadIdentity(identity="past-window", lead_id="a", seen_at=now - timedelta(days=400)),
                    LeadIdentity(identity="in-window", lead_id="b", seen_at=now - timedelta(hours=70)),
                ]
            )
        async with ingest_db.transaction() as session:
            assert await purge_erased_identities(session, ingest, now) == 1
        async with ingest_db.read() as session:
            left = sorted((await session.execute(select(LeadIdentity.identity))).scalars().all())
        # An old live lead stays findable by its person (GET /v1/leads?email=, erase-all); the window is in the query.
        assert left == ["in-window", "past-window"]
    finally:
        await ingest_db.dispose()
