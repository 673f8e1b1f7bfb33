"""Group commit of web leads: leads stored together in one transaction keep every guarantee of a lead stored alone.

The app runs in-process on SQLite and points at a broker address where nothing listens, so the outbox rows a
request wrote stay in place to be counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

from ingest import handlers
from ingest.app import create_app
from ingest.domain import normalize_lead
from ingest.settings import IngestSettings
from ingest.store import IdempotencyRecord, IdentityRow, Lead, LeadIdentity, LeadRow, outbox
from ingest.store.batch_sqlite import BatchTransaction, SQLiteBatches
from ingest.store.repository import lead_dicts
from tests.support.stack import ADMIN, ADMIN_TOKEN

pytestmark = [pytest.mark.integration]

NO_BROKER = "127.0.0.1:1"


@dataclass
class Ingest:
    app: FastAPI
    client: httpx.AsyncClient
    settings: IngestSettings


def _settings(tmp_path: Path, **more: Any) -> IngestSettings:
    fields: dict[str, Any] = {
        "env": "test",
        "admin_token": ADMIN_TOKEN,
        "kafka_bootstrap": NO_BROKER,
        "topic_namespace": f"t{uuid.uuid4().hex[:10]}.",
        "log_format": "console",
        "log_level": "WARNING",
        "INGEST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}",
    }
    return IngestSettings(**fields, **more)


@pytest.fixture
async def ingest(tmp_path: Path) -> AsyncIterator[Ingest]:
    settings = _settings(tmp_path)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield Ingest(app, client, settings)


def _email() -> str:
    return f"lead-{uuid.uuid4().hex[:10]}@example.org"


def _prepared(raw: dict[str, Any], now: datetime, **fields: Any) -> handlers.PreparedLead:
    lead = normalize_lead(raw, default_region=None, field_mapping=None, now=now)
    return handlers.PreparedLead(lead, None, now, None, **fields)


async def _count(ingest: Ingest, table: Any) -> int:
    async with ingest.app.state.runtime.db.read() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def _stored(ingest: Ingest) -> tuple[int, int, int, int]:
    """(leads, identities, idempotency records, outbox rows)."""
    return (
        await _count(ingest, Lead),
        await _count(ingest, LeadIdentity),
        await _count(ingest, IdempotencyRecord),
        await _count(ingest, outbox),
    )


@contextlib.contextmanager
def _failing_commits(ingest: Ingest) -> Iterator[None]:
    """Every COMMIT of the app's writer engine fails, as when the disk is full or the database goes away."""
    engine = ingest.app.state.runtime.db.engine.sync_engine

    def refuse(_conn: Any) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(engine, "commit", refuse)
    try:
        yield
    finally:
        event.remove(engine, "commit", refuse)


async def test_in_one_batch_a_later_lead_of_the_same_person_is_a_repeat_of_the_earlier(ingest: Ingest) -> None:
    now = datetime.now(UTC)
    email = _email()
    items = [
        _prepared({"email": email, "phone": "+4930901820"}, now),
        _prepared({"email": email.upper()}, now),
        _prepared({"email": _email(), "phone": "+49 30 901820"}, now),  # the same person by phone only
        _prepared({"email": _email()}, now),
    ]
    async with ingest.app.state.runtime.db.transaction() as session:
        outcomes = await handlers.accept_leads(session, ingest.settings, items)

    bodies = [o.body for o in outcomes if isinstance(o, handlers.Stored)]
    assert len(bodies) == 4 and len({b["lead_id"] for b in bodies}) == 4
    first = bodies[0]["lead_id"]
    assert [b["duplicate_of"] for b in bodies] == [None, first, first, None]
    assert await _count(ingest, Lead) == 4 and await _count(ingest, outbox) == 4
    # The next batch sees what this one stored.
    async with ingest.app.state.runtime.db.transaction() as session:
        (later,) = await handlers.accept_leads(session, ingest.settings, [_prepared({"email": email}, now)])
    assert isinstance(later, handlers.Stored) and later.body["duplicate_of"] == first


async def test_in_one_batch_a_reused_idempotency_key_replays_or_conflicts(ingest: Ingest) -> None:
    now = datetime.now(UTC)
    lead = {"email": _email()}
    items = [
        _prepared(lead, now, scope_key="k1", fingerprint="body-a"),
        _prepared(lead, now, scope_key="k1", fingerprint="body-a"),
        _prepared({"email": _email()}, now, scope_key="k1", fingerprint="body-b"),
    ]
    async with ingest.app.state.runtime.db.transaction() as session:
        first, again, other = await handlers.accept_leads(session, ingest.settings, items)

    assert isinstance(first, handlers.Stored) and not first.replayed
    assert isinstance(again, handlers.Stored) and again.replayed and again.body == first.body
    assert isinstance(other, handlers.IdempotencyConflict)
    assert await _stored(ingest) == (1, 1, 1, 1)


async def test_concurrent_posts_are_answered_with_their_own_leads_and_repeats(ingest: Ingest) -> None:
    email = _email()
    responses = await asyncio.gather(
        *[ingest.client.post("/v1/leads", json={"email": email, "company": f"C{i}"}, headers=ADMIN) for i in range(20)]
    )
    assert {r.status_code for r in responses} == {202}
    bodies = [r.json() for r in responses]
    originals = [b for b in bodies if b["duplicate_of"] is None]
    assert len(originals) == 1, "exactly one lead of the person is the original"
    assert all(b["duplicate_of"] == originals[0]["lead_id"] for b in bodies if b is not originals[0])
    assert await _stored(ingest) == (20, 20, 0, 20)


async def test_a_202_comes_only_after_commit_a_failed_commit_is_a_503_and_nothing_is_kept(ingest: Ingest) -> None:
    leads = [{"email": _email()} for _ in range(5)]
    with _failing_commits(ingest):
        refused = await asyncio.gather(*[ingest.client.post("/v1/leads", json=lead, headers=ADMIN) for lead in leads])
        keyed = await ingest.client.post("/v1/leads", json=leads[0], headers={**ADMIN, "Idempotency-Key": "k"})
    assert [r.status_code for r in [*refused, keyed]] == [503] * 6
    assert all(r.headers["retry-after"] == "1" and r.json()["error"] == "unavailable" for r in refused)
    assert await _stored(ingest) == (0, 0, 0, 0)

    # Once the store commits again, the retry is stored once, not as a replay of an answer never given.
    kept = await ingest.client.post("/v1/leads", json=leads[0], headers={**ADMIN, "Idempotency-Key": "k"})
    assert kept.status_code == 202 and "idempotent-replayed" not in kept.headers
    assert await _stored(ingest) == (1, 1, 1, 1)


async def test_a_lead_the_store_refuses_fails_alone_and_the_rest_of_its_batch_is_kept(ingest: Ingest) -> None:
    async with ingest.app.state.runtime.db.transaction() as session:
        await session.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON leads WHEN NEW.data LIKE '%poison%' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
    leads = [{"email": _email(), "company": "poison" if i == 2 else f"Fine {i}"} for i in range(6)]

    responses = await asyncio.gather(*[ingest.client.post("/v1/leads", json=lead, headers=ADMIN) for lead in leads])

    assert [r.status_code for r in responses] == [202, 202, 503, 202, 202, 202]
    assert await _stored(ingest) == (5, 5, 0, 5)


async def test_invalid_input_stores_nothing_and_a_key_reused_for_an_invalid_body_is_a_conflict(
    ingest: Ingest,
) -> None:
    headers = {**ADMIN, "Idempotency-Key": "reuse"}
    assert (await ingest.client.post("/v1/leads", json={"email": _email()}, headers=headers)).status_code == 202
    invalid = {"company": "no email or phone"}

    assert (await ingest.client.post("/v1/leads", json=invalid, headers=ADMIN)).status_code == 422
    reused = await ingest.client.post("/v1/leads", json=invalid, headers=headers)
    assert reused.status_code == 409 and reused.json()["error"] == "idempotency_key_reused"
    assert await _stored(ingest) == (1, 1, 1, 1)


async def _outbox_seqs(ingest: Ingest) -> list[int]:
    async with ingest.app.state.runtime.db.read() as session:
        return list((await session.execute(select(outbox.c.seq).order_by(outbox.c.seq))).scalars())


async def test_a_batch_hands_its_rows_to_the_relay_and_takes_the_published_deletes_only_when_it_commits(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's transaction (no ORM session on SQLite) keeps the outbox's hand-off: rows go to the relay at
    commit, the relay's published rows are deleted in the same transaction, and a failed commit does neither."""
    relay = ingest.app.state.runtime.relay
    handed: list[Any] = []
    monkeypatch.setattr(relay, "handoff", lambda rows: handed.extend(rows))
    first = await ingest.client.post("/v1/leads", json={"email": _email()}, headers=ADMIN)
    assert first.status_code == 202
    (published,) = await _outbox_seqs(ingest)
    assert [row.seq for row in handed] == [published]
    relay.published.settle([published])  # the broker acknowledged it: the next writer deletes it

    with _failing_commits(ingest):
        refused = await ingest.client.post("/v1/leads", json={"email": _email()}, headers=ADMIN)
    assert refused.status_code == 503
    assert await _outbox_seqs(ingest) == [published] and len(handed) == 1
    assert relay.published.settling == {published}, "a rolled-back delete is still owed"

    kept = await ingest.client.post("/v1/leads", json={"email": _email()}, headers=ADMIN)
    assert kept.status_code == 202
    (written,) = await _outbox_seqs(ingest)
    assert written != published and [row.seq for row in handed] == [published, written]
    assert relay.published.settling == set()


def _received(kind: str) -> float:
    return REGISTRY.get_sample_value("handoff_leads_received_total", {"source_kind": kind}) or 0.0


async def test_accepted_leads_are_counted_once_their_batch_commits_and_a_failed_batch_counts_none(
    ingest: Ingest,
) -> None:
    before = _received("api")
    with _failing_commits(ingest):
        refused = await asyncio.gather(*[ingest.client.post("/v1/leads", json={"email": _email()}, headers=ADMIN)])
    assert [r.status_code for r in refused] == [503]
    assert _received("api") == before

    leads = [{"email": _email()} for _ in range(3)]
    kept = await asyncio.gather(*[ingest.client.post("/v1/leads", json=lead, headers=ADMIN) for lead in leads])
    assert [r.status_code for r in kept] == [202] * 3
    assert _received("api") == before + 3


async def test_the_databases_commit_listeners_hear_each_committed_batch_and_no_failed_one(ingest: Ingest) -> None:
    # The writer commits on a connection of its own (no Database.transaction): a listener of the database's (as
    # routing's sender and timers are of theirs) must still hear every commit, and only commits.
    heard: list[Any] = []

    def hear(session: Any) -> None:
        if isinstance(session, BatchTransaction):  # the writer's, not housekeeping's transactions
            heard.append(session)

    ingest.app.state.runtime.db.on_commit(hear)
    with _failing_commits(ingest):
        refused = await ingest.client.post("/v1/leads", json={"email": _email()}, headers=ADMIN)
    assert refused.status_code == 503
    assert heard == []
    kept = await ingest.client.post("/v1/leads", json={"email": _email()}, headers=ADMIN)
    assert kept.status_code == 202
    assert len(heard) == 1


async def test_the_sqlite_writers_lead_rows_are_the_rows_core_writes(ingest: Ingest) -> None:
    """`insert_leads` builds sqlite3's values itself: they are those common.sqlprep's column processors give the
    same rows as dicts (the JSON text, the flag, the times' text, NULL for erased_at)."""
    db = ingest.app.state.runtime.db
    now = datetime(2026, 12, 4, 23, 1, 2, 345678, tzinfo=UTC)
    data = '{"email":"ä@example.org","tags":["x"],"n":1}'

    def rows(prefix: str) -> tuple[list[LeadRow], list[IdentityRow]]:
        leads = [
            LeadRow(f"{prefix}-1", None, "api", None, False, None, data, now, None),
            LeadRow(f"{prefix}-2", None, "web", "ext-1", True, f"{prefix}-1", data, now.replace(microsecond=0), "c"),
        ]
        return leads, [IdentityRow(f"{prefix}-h{i}", f"{prefix}-{i}", now) for i in (1, 2)]

    batches = SQLiteBatches(db)
    try:
        async with batches.transaction() as batch:
            await batch.insert_leads(*rows("fast"))
            leads, identities = rows("core")
            await batch.insert_rows(Lead, lead_dicts(leads))
            await batch.insert_rows(LeadIdentity, [row._asdict() for row in identities])
    finally:
        await batches.close()

    async with db.read() as session:
        stored = (await session.execute(text("SELECT * FROM leads ORDER BY id"))).all()
        seen = (await session.execute(text("SELECT identity, lead_id, seen_at FROM lead_identities"))).all()
    by_id = {row[0]: tuple(v.replace("core", "fast") if isinstance(v, str) else v for v in row) for row in stored}
    assert [by_id[f"core-{i}"] for i in (1, 2)] == [tuple(row) for row in stored if row[0].startswith("fast")]
    core_seen = sorted(tuple(v.replace("core", "fast") for v in row) for row in seen if row[1].startswith("core"))
    assert core_seen == sorted(tuple(row) for row in seen if row[1].startswith("fast"))
    assert len(stored) == 4 and len(seen) == 4


async def test_ingest_checkpoints_its_wal_at_its_own_page_bounds(tmp_path: Path) -> None:
    settings = _settings(tmp_path, sqlite_checkpoint_pages=100, sqlite_wal_restart_pages=400)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        checkpointer = app.state.runtime.db.checkpointer
        assert (checkpointer.wake_pages, checkpointer.restart_pages) == (100, 400)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            for _ in range(50):  # each batch of new people adds pages to the WAL: past 100, a checkpoint runs
                leads = [client.post("/v1/leads", json={"email": _email()}, headers=ADMIN) for _ in range(20)]
                assert {r.status_code for r in await asyncio.gather(*leads)} == {202}
                if checkpointer.checkpoints:
                    break
                await asyncio.sleep(0.05)
        assert checkpointer.checkpoints >= 1


def test_the_wal_restart_bound_must_lie_past_the_checkpoint_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HANDOFF_SQLITE_WAL_RESTART_PAGES"):
        _settings(tmp_path, sqlite_checkpoint_pages=4000, sqlite_wal_restart_pages=4000)
