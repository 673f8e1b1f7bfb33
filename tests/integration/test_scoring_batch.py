"""Scoring a consumer poll as one batch gives the answers of scoring its leads one at a time, in a few statements."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import event as sa_event
from sqlalchemy import select

from common.consumer import ConsumerLoop
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event, loads
from scoring.app import MIGRATIONS
from scoring.consumer import batch_handlers, event_handlers
from scoring.domain import DEFAULT_RULESET_YAML, load_ruleset, parse_firmographics_csv
from scoring.handlers import Scoring
from scoring.settings import ScoringSettings
from scoring.store import Base, ScoredLead, outbox, processed

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
TOPIC = "t.leads.received.v1"
FIRMOGRAPHICS = (
    "domain,name,employee_band,industry,country,revenue_band\n"
    "acme-corp.com,Acme,1001-5000,fintech,GB,\n"
    "globex.io,Globex,11-50,saas,US,\n"
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    database = Database(database_url)
    yield database
    await database.dispose()


def _settings() -> ScoringSettings:
    return ScoringSettings(env="test", conversion_min_outcomes=4, topic_namespace="t.")


def _received(lead_id: str, n: int, duplicate_of: str | None = None) -> Event:
    emails = ["ceo@mail.eu.acme-corp.com", "ops@globex.io", "jane@gmail.com", "cto@unknown-co.de"]
    lead: dict[str, Any] = {
        "email": emails[n % len(emails)],
        "first_name": "Jane",
        "last_name": f"Doe {n}",
        "job_title": ["VP Sales", "Intern", "Head of Operations", "CTO"][n % 4],
        "country": ["DE", "FR", "US"][n % 3],
        "form_id": "demo-request" if n % 2 else "ebook",
        "message": "please call me back" if n % 5 == 0 else None,
        "utm": {},
        "click_ids": {},
        "consent": {},
        "custom": {},
    }
    data = {
        "lead_id": lead_id,
        "source": {"id": "src-1", "kind": "web", "name": "Website"},
        "external_id": None,
        "is_test": False,
        "duplicate_of": duplicate_of,
        "received_at": NOW.isoformat(),
        "lead": lead,
    }
    return Event(type="lead.received", source="/tests", subject=lead_id, data=data)


def _leads(n: int, stored_root: str) -> list[Event]:
    """`n` leads: some repeat an earlier lead of the same list (chains of three), one repeats a stored lead."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    roots = {i: ids[i - 3] if i % 3 == 0 and i >= 3 else None for i in range(n)}
    roots[1] = stored_root
    return [_received(ids[i], i, roots[i]) for i in range(n)]


class _Consumer:
    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        pass


async def _consume(scoring: Scoring, db: Database, events: Sequence[Event]) -> None:
    """What the running consumer does with one poll holding `events`."""
    loop = ConsumerLoop(
        settings=scoring.settings,
        db=db,
        processed=processed,
        topics=["leads.received.v1"],
        handlers=event_handlers(scoring),
        batch_handlers=batch_handlers(scoring),
        prepare=scoring.prepare,
    )
    records = [
        ConsumerRecord(TOPIC, 0, n, 0, 0, e.key(), e.value(), None, 0, 0, e.headers()) for n, e in enumerate(events)
    ]
    await loop._process(_Consumer(), {TopicPartition(TOPIC, 0): records})


async def _history(scoring: Scoring, db: Database) -> list[str]:
    """Firmographics and eight stored leads with outcomes (so conversion is estimated); the leads' ids."""
    async with db.transaction() as session:
        await scoring.load_firmographics(session, parse_firmographics_csv(FIRMOGRAPHICS))
    past = [_received(str(uuid.uuid4()), n) for n in range(8)]
    await _consume(scoring, db, past)
    outcomes = [
        Event(type="lead.converted" if n % 3 else "lead.disqualified", source="/t", subject=e.subject, data={})
        for n, e in enumerate(past)
    ]
    await _consume(scoring, db, outcomes)
    return [e.subject for e in past]


def _comparable(row: ScoredLead, ids: dict[str, int]) -> dict[str, Any]:
    return {
        "lead": row.lead,
        "enrichment": row.enrichment,
        "score": row.score,
        "conversion": row.conversion,
        "features": row.features,
        "duplicate_of": ids.get(row.duplicate_of, "stored") if row.duplicate_of else None,
        "grade": row.grade,
        "qualified": row.qualified,
    }


async def _rows(db: Database, events: Sequence[Event]) -> list[dict[str, Any]]:
    ids = {e.subject: n for n, e in enumerate(events)}
    async with db.read() as session:
        rows = {r.lead_id: r for r in (await session.execute(select(ScoredLead))).scalars()}
    return [_comparable(rows[e.subject], ids) for e in events]


async def _scored_events(db: Database, events: Sequence[Event]) -> list[dict[str, Any]]:
    wanted = {e.subject: n for n, e in enumerate(events)}
    async with db.read() as session:
        rows = (await session.execute(select(outbox).order_by(outbox.c.seq))).all()
    published = [Event.from_record(r.key, r.value, [(k, v.encode()) for k, v in loads(r.headers)]) for r in rows]
    found = [dict(e.data) for e in published if e.subject in wanted]
    for data in found:
        data["lead_id"] = wanted[data["lead_id"]]
        data["duplicate_of"] = wanted.get(data["duplicate_of"], "stored") if data["duplicate_of"] else None
        data.pop("scored_at")
    return found


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", count)


async def test_a_batch_scores_stores_and_publishes_exactly_what_one_lead_at_a_time_does(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    stored = await _history(scoring, db)

    one_by_one = _leads(24, stored[0])
    for event in one_by_one:
        await _consume(scoring, db, [event])
    batch = _leads(24, stored[1])  # another stored original, repeated as often
    await _consume(scoring, db, batch)

    singly, batched = await _rows(db, one_by_one), await _rows(db, batch)
    assert batched == singly
    assert any(r["conversion"]["status"] == "ok" for r in batched), "the outcomes feed the estimate"
    assert any(r["enrichment"]["company"]["name"] == "Acme" for r in batched), "firmographics by parent domain"
    assert "came_back" in {rule["id"] for rule in batched[3]["score"]["fired"]}, "a repeat within the batch"
    assert await _scored_events(db, batch) == await _scored_events(db, one_by_one)


async def test_a_batch_costs_the_same_statements_whatever_its_size(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    stored = await _history(scoring, db)
    costs = []
    for size in (10, 60):
        with _statements(db) as seen:
            await _consume(scoring, db, _leads(size, stored[size % 8]))
        costs.append(len(seen))
    assert costs[0] == costs[1], costs
    assert costs[1] <= 16, costs  # dedupe, state, lookups, one INSERT of rows, one of the outbox, commit


async def test_a_lead_erased_before_its_receipt_in_the_same_poll_is_scored_without_its_data(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    first, second = _received(str(uuid.uuid4()), 1), _received(str(uuid.uuid4()), 2)
    erased = Event(type="lead.erased", source="/t", subject=second.subject, data={})
    await _consume(scoring, db, [first, erased, second])
    rows = await _rows(db, [first, second])
    assert rows[0]["lead"] is not None and rows[1]["lead"] is None
    published = await _scored_events(db, [first, second])
    assert [bool(p["lead"]) for p in published] == [True, False]


async def test_a_ruleset_another_process_activates_scores_the_next_batch(db: Database) -> None:
    """The compiled ruleset is kept per stored version, but which version is active is asked per transaction."""
    consumer, admin = (Scoring(_settings(), provider=None, clock=lambda: NOW) for _ in range(2))
    stricter = DEFAULT_RULESET_YAML.replace("\nname: Handoff default", "\nname: Handoff stricter", 1)
    versions = []
    for text in (None, stricter, DEFAULT_RULESET_YAML, stricter):
        if text is not None:
            async with db.transaction() as session:
                await admin.install_ruleset(session, text)
        lead = _received(str(uuid.uuid4()), 1)
        await _consume(consumer, db, [lead])
        async with db.read() as session:
            versions.append((await session.get(ScoredLead, lead.subject)).ruleset_version)  # type: ignore[union-attr]
    default, other = load_ruleset(DEFAULT_RULESET_YAML).version, load_ruleset(stricter).version
    assert default != other
    assert versions == [default, other, default, other]


async def test_polls_of_one_lead_score_each_lead_once_and_keep_an_earlier_erasure(db: Database) -> None:
    """A poll of one lead reads its stored state with the id bound as itself (not a JSON array): a redelivery under
    another event id is not scored again, and an erasure that came first still wins."""
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    lead, later = _received(str(uuid.uuid4()), 1), _received(str(uuid.uuid4()), 2)
    await _consume(scoring, db, [lead])
    again = Event(type="lead.received", source="/tests", subject=lead.subject, data=dict(lead.data))
    await _consume(scoring, db, [again])
    await _consume(scoring, db, [Event(type="lead.erased", source="/t", subject=later.subject, data={})])
    await _consume(scoring, db, [later])
    assert again.id != lead.id
    assert [p["lead_id"] for p in await _scored_events(db, [lead, later])] == [0, 1]  # each lead scored once
    rows = await _rows(db, [lead, later])
    assert rows[0]["lead"] is not None and rows[1]["lead"] is None
