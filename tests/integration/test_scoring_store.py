"""Scoring's handlers against its real store, on SQLite and on PostgreSQL, built by its migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event, loads
from common.erasure import anonymous_enrichment
from scoring.app import MIGRATIONS
from scoring.clients import CircuitBreaker, EnrichmentClient, TTLCache
from scoring.domain import (
    DEFAULT_RULESET_YAML,
    OutcomeCounts,
    RulesetError,
    conversion_probability,
    load_ruleset,
    parse_firmographics_csv,
)
from scoring.handlers import Scoring
from scoring.settings import ScoringSettings
from scoring.store import Base, ErasedLead, OutcomeCount, ScoredLead, ScoringRepository, outbox

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def _settings(**overrides: Any) -> ScoringSettings:
    values: dict[str, Any] = {"env": "test", "conversion_min_outcomes": 4, "enrichment_timeout_s": 0.2}
    values.update(overrides)
    return ScoringSettings(**values)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    database = Database(database_url)
    yield database
    await database.dispose()


def _lead(**fields: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {
        "email": f"jane.doe.{uuid.uuid4().hex[:6]}@acme-corp.com",
        "first_name": "Jane",
        "last_name": "Doe",
        "job_title": "VP Sales",
        "country": "DE",
        "form_id": "demo-request",
        "utm": {},
        "click_ids": {},
        "consent": {},
        "custom": {},
    }
    lead.update(fields)
    return lead


def _received(lead: dict[str, Any], lead_id: str | None = None, **data: Any) -> Event:
    lead_id = lead_id or str(uuid.uuid4())
    return Event(
        type="lead.received",
        source="/tests",
        subject=lead_id,
        data={
            "lead_id": lead_id,
            "source": {"id": "src-1", "kind": "web", "name": "Website"},
            "external_id": None,
            "is_test": False,
            "duplicate_of": None,
            "received_at": NOW.isoformat(),
            "lead": lead,
            **data,
        },
    )


def _outcome(lead_id: str, won: bool) -> Event:
    kind = "lead.converted" if won else "lead.disqualified"
    return Event(type=kind, source="/tests", subject=lead_id, data={"lead_id": lead_id, "reason": "no_budget"})


async def _apply(db: Database, handler: Any, event: Event) -> None:
    async with db.transaction() as session:
        await handler(session, event)


async def _scored(db: Database, lead_id: str) -> ScoredLead | None:
    async with db.read() as session:
        return await session.get(ScoredLead, lead_id)


async def _published(db: Database) -> list[Event]:
    async with db.read() as session:
        rows = (await session.execute(select(outbox).order_by(outbox.c.seq))).all()
    return [Event.from_record(row.key, row.value, [(k, v.encode()) for k, v in loads(row.headers)]) for row in rows]


async def test_a_lead_is_scored_once_even_when_it_is_received_twice(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    first = _received(_lead())
    again = _received(first.data["lead"], lead_id=first.subject)  # a re-published lead: new event id
    await _apply(db, scoring.on_received, first)
    await _apply(db, scoring.on_received, again)

    row = await _scored(db, first.subject)
    assert row is not None and row.lead == first.data["lead"]
    events = await _published(db)
    assert [(e.type, e.subject) for e in events] == [("lead.scored", first.subject)]
    scored = events[0].data
    assert scored["score"]["ruleset_version"] == load_ruleset(DEFAULT_RULESET_YAML).version
    assert {"work_email", "decision_maker", "demo_or_pricing_form"} <= {r["id"] for r in scored["score"]["fired"]}
    assert scored["enrichment"]["partial"] is False
    assert scored["conversion"]["status"] == "insufficient_data"
    assert scored["lead"] == first.data["lead"] and scored["received_at"] == NOW.isoformat()


async def test_stored_times_read_back_as_aware_utc_on_both_databases(db: Database) -> None:
    # SQLite keeps no zone: without the shared UTC column type its times came back naive (and a score's
    # scored_at was shown without its zone), unlike PostgreSQL's.
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    event = _received(_lead())
    await _apply(db, scoring.on_received, event)
    row = await _scored(db, event.subject)
    assert row is not None
    assert row.scored_at.tzinfo is UTC and row.scored_at == NOW
    assert row.received_at is not None and row.received_at.tzinfo is UTC and row.received_at == NOW


async def test_an_outcome_counts_once_per_lead_whatever_arrives_later(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    won, lost = _received(_lead(country="DE")), _received(_lead(country="FR"))
    for event in (won, lost):
        await _apply(db, scoring.on_received, event)

    await _apply(db, scoring.on_outcome, _outcome(won.subject, won=True))
    await _apply(db, scoring.on_outcome, _outcome(won.subject, won=True))  # redelivered under a new id
    await _apply(db, scoring.on_outcome, _outcome(won.subject, won=False))  # contradicts: first one stands
    await _apply(db, scoring.on_outcome, _outcome(lost.subject, won=False))
    await _apply(db, scoring.on_outcome, _outcome(str(uuid.uuid4()), won=True))  # never scored here

    async with db.read() as session:
        counts = {
            (c.feature, c.value): (c.won, c.lost) for c in (await session.execute(select(OutcomeCount))).scalars()
        }
    assert counts[("__total__", "__total__")] == (1, 1)
    assert counts[("lead.country", "DE")] == (1, 0)
    assert counts[("lead.country", "FR")] == (0, 1)
    assert counts[("enrichment.seniority", "vp")] == (1, 1)
    assert (await _scored(db, won.subject)).outcome == "won"  # type: ignore[union-attr]


async def test_conversion_probability_appears_once_enough_outcomes_exist_and_matches_the_domain(
    db: Database,
) -> None:
    scoring = Scoring(_settings(conversion_min_outcomes=5), provider=None, clock=lambda: NOW)
    history = [("DE", True), ("DE", True), ("DE", False), ("FR", False), ("US", True)]
    recorded = OutcomeCounts()
    for i, (country, won) in enumerate(history):
        event = _received(_lead(country=country, form_id="demo-request" if won else "ebook"))
        await _apply(db, scoring.on_received, event)
        if i == 4:
            probe = _received(_lead(country="DE"))
            await _apply(db, scoring.on_received, probe)
            assert (await _scored(db, probe.subject)).conversion["status"] == "insufficient_data"  # type: ignore[union-attr]
        await _apply(db, scoring.on_outcome, _outcome(event.subject, won=won))
        recorded.record([tuple(f) for f in (await _scored(db, event.subject)).features], won=won)  # type: ignore[union-attr]

    newcomer = _received(_lead(country="DE"))
    await _apply(db, scoring.on_received, newcomer)
    row = await _scored(db, newcomer.subject)
    assert row is not None
    conversion = row.conversion
    assert conversion is not None and conversion["status"] == "ok" and conversion["outcomes_seen"] == 5
    # The store hands the model only the lead's own values, yet it must weigh them against all values seen:
    # the same answer as the domain gives on the complete table of counts.
    expected = conversion_probability([tuple(f) for f in row.features], recorded, min_outcomes=5)
    assert conversion["probability"] == pytest.approx(expected.probability)
    assert conversion["factors_for"] == expected.to_dict()["factors_for"]
    assert ("lead.country", "DE") in {(f["field"], f["value"]) for f in conversion["factors_for"]}


async def test_erasure_removes_personal_data_and_keeps_the_anonymous_counts(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    await _apply(
        db,
        scoring.load_firmographics,
        parse_firmographics_csv(
            "domain,name,employee_band,industry,country,revenue_band\n"
            "acme-corp.com,Acme Corp,201-500,software,DE,10M-50M\n"
        ),
    )
    event = _received(_lead(phone="+4930901820"))
    await _apply(db, scoring.on_received, event)
    await _apply(db, scoring.on_outcome, _outcome(event.subject, won=True))
    before = await _scored(db, event.subject)
    assert before is not None and before.enrichment["company"]["name"] == "Acme Corp"  # type: ignore[index]

    erased = Event(type="lead.erased", source="/tests", subject=event.subject, data={"lead_id": event.subject})
    await _apply(db, scoring.on_erased, erased)

    row = await _scored(db, event.subject)
    assert row is not None and row.lead is None and row.erased_at is not None
    stored = repr({"enrichment": row.enrichment, "score": row.score, "features": row.features})
    for personal in (event.data["lead"]["email"], "jane", "Jane", "Doe", "acme-corp", "Acme Corp", "901820"):
        assert personal not in stored
    # What remains is anonymous and still useful: the score, the categories, the outcome counts.
    assert row.score == before.score and row.features == before.features
    assert row.enrichment["company"]["employee_band"] == "201-500"  # type: ignore[index]
    assert row.enrichment["seniority"] == "vp"  # type: ignore[index]
    async with db.read() as session:
        total = await session.get(OutcomeCount, ("__total__", "__total__"))
        assert total is not None and (total.won, total.lost) == (1, 0)


async def test_an_erased_score_keeps_exactly_what_the_shared_erasure_rule_keeps(db: Database) -> None:
    # Scoring and routing store the same enrichment: after an erasure both must keep the same fields.
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    await _apply(
        db,
        scoring.load_firmographics,
        parse_firmographics_csv(
            "domain,name,employee_band,industry,country,revenue_band\n"
            "acme-corp.com,Acme Corp,201-500,software,DE,10M-50M\n"
        ),
    )
    event = _received(_lead())
    await _apply(db, scoring.on_received, event)
    before = await _scored(db, event.subject)
    assert before is not None and before.enrichment is not None and before.enrichment["steps"]

    await _apply(db, scoring.on_erased, Event(type="lead.erased", source="/t", subject=event.subject, data={}))

    row = await _scored(db, event.subject)
    assert row is not None and row.enrichment == anonymous_enrichment(before.enrichment)
    # No trace of the domain is left, not even as an emptied key or a step that once named it.
    assert "steps" not in row.enrichment and "domain" not in row.enrichment
    assert row.enrichment["company"] == {
        "employee_band": "201-500",
        "industry": "software",
        "country": "DE",
        "revenue_band": "10M-50M",
    }


async def test_an_erasure_that_overtakes_the_lead_keeps_its_data_out(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    event = _received(_lead())
    await _apply(db, scoring.on_erased, Event(type="lead.erased", source="/t", subject=event.subject, data={}))
    await _apply(db, scoring.on_received, event)
    row = await _scored(db, event.subject)
    assert row is not None and row.lead is None and row.erased_at is not None
    [scored] = await _published(db)
    assert scored.data["lead"] == {}
    assert event.data["lead"]["email"] not in repr(scored.data)
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ErasedLead)) == 1


async def test_an_invalid_ruleset_is_refused_and_the_old_one_stays_in_force(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    tuned = DEFAULT_RULESET_YAML.replace("points: 15\n", "points: 16\n", 1)
    async with db.transaction() as session:
        installed = await scoring.install_ruleset(session, tuned)
    broken = tuned.replace("{enrichment.email_type: corporate}", "{enrichment.email_type: {equal: corporate}}")
    with pytest.raises(RulesetError) as refused:
        async with db.transaction() as session:
            await scoring.install_ruleset(session, broken)
    line = broken.splitlines().index(next(x for x in broken.splitlines() if "equal: corporate" in x)) + 1
    assert any(ln == line and "equal" in reason for ln, reason in refused.value.errors), refused.value.errors
    async with db.read() as session:
        assert (await scoring.active_ruleset(session)).version == installed.version
    event = _received(_lead())
    await _apply(db, scoring.on_received, event)
    assert (await _scored(db, event.subject)).ruleset_version == installed.version  # type: ignore[union-attr]


async def test_firmographics_load_replaces_by_domain_and_subdomains_find_their_company(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    header = "domain,name,employee_band,industry,country,revenue_band\n"
    async with db.transaction() as session:
        assert (
            await scoring.load_firmographics(session, parse_firmographics_csv(header + "acme-corp.com,Acme,11-50,,,\n"))
            == 1
        )
    async with db.transaction() as session:
        await scoring.load_firmographics(
            session, parse_firmographics_csv(header + "ACME-corp.com,Acme Corp,1001-5000,fintech,GB,\n")
        )
    event = _received(_lead(email="jane@mail.eu.acme-corp.com"))
    await _apply(db, scoring.on_received, event)
    row = await _scored(db, event.subject)
    assert row is not None
    assert row.enrichment["company"] == {  # type: ignore[index]
        "domain": "acme-corp.com",
        "name": "Acme Corp",
        "employee_band": "1001-5000",
        "industry": "fintech",
        "country": "GB",
        "revenue_band": None,
    }
    assert {"company_enterprise", "target_industry"} <= {r["id"] for r in row.score["fired"]}


def _provider(answers: dict[str, Any], *, threshold: int = 5) -> EnrichmentClient:
    async def answer(request: httpx.Request) -> httpx.Response:
        domain = request.url.params["domain"]
        result = answers.get(domain, 404)
        if result == "hang":
            await asyncio.sleep(10)
        if isinstance(result, int):
            return httpx.Response(result)
        return httpx.Response(200, json=result)

    return EnrichmentClient(
        httpx.AsyncClient(transport=httpx.MockTransport(answer)),
        "http://provider.test/",
        token=None,
        timeout_s=0.2,
        attempts=1,
        breaker=CircuitBreaker(threshold, 30),
        cache=TTLCache(60),
    )


async def test_the_provider_answer_and_status_are_recorded_and_a_silent_provider_only_marks_leads_partial(
    db: Database,
) -> None:
    provider = _provider(
        {
            "answers.com": {"company": {"name": "Answers Inc", "employee_band": "51-200", "industry": "saas"}},
            "broken.com": 503,
            "slow.com": "hang",
        }
    )
    scoring = Scoring(_settings(enrichment_timeout_s=0.2, enrichment_attempts=1), provider, clock=lambda: NOW)
    events = {
        name: _received(_lead(email=email))
        for name, email in {
            "ok": "a@answers.com",
            "not_found": "b@unknown-to-provider.com",
            "unavailable": "c@broken.com",
            "timeout": "d@slow.com",
            "no_domain": "e@gmail.com",
        }.items()
    }
    started = asyncio.get_running_loop().time()
    await scoring.prepare(list(events.values()))
    assert asyncio.get_running_loop().time() - started < 2.0  # the hanging provider held the batch briefly
    async with db.transaction() as session:
        for event in events.values():
            await scoring.on_received(session, event)
    for status, event in events.items():
        row = await _scored(db, event.subject)
        assert row is not None and row.enrichment is not None
        provider_step = next(s for s in row.enrichment["steps"] if s["step"] == "provider")
        assert provider_step["detail"] == status
        assert row.enrichment["partial"] is (status in ("unavailable", "timeout")), status
    answered = await _scored(db, events["ok"].subject)
    assert answered.enrichment["company"]["employee_band"] == "51-200"  # type: ignore[union-attr,index]
    assert "company_mid_market" in {r["id"] for r in answered.score["fired"]}  # type: ignore[union-attr]


async def test_a_consumer_batch_in_one_transaction_scores_each_lead_once_and_sees_its_own_effects(
    db: Database,
) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    earlier = _received(_lead())
    await scoring.prepare([earlier])
    await _apply(db, scoring.on_received, earlier)

    first = _received(_lead())
    repeat = _received(_lead(), duplicate_of=first.subject)
    erased_first = _received(_lead())
    converted = _received(_lead())
    batch = [
        first,
        _received(first.data["lead"], lead_id=first.subject),
        repeat,
        Event(type="lead.erased", source="/t", subject=erased_first.subject, data={}),
        erased_first,
        converted,
        _outcome(converted.subject, won=True),
        _received(earlier.data["lead"], lead_id=earlier.subject),
    ]
    handlers = {
        "lead.received": scoring.on_received,
        "lead.erased": scoring.on_erased,
        "lead.converted": scoring.on_outcome,
    }
    # What the consumer loop does: prepare outside the transaction, then every event in one transaction.
    await scoring.prepare(batch)
    async with db.transaction() as session:
        for event in batch:
            await handlers[event.type](session, event)

    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ScoredLead)) == 5
        total = await session.get(OutcomeCount, ("__total__", "__total__"))
        assert total is not None and (total.won, total.lost) == (1, 0)
    assert [e.subject for e in await _published(db)] == [
        earlier.subject,
        first.subject,
        repeat.subject,
        erased_first.subject,
        converted.subject,
    ]
    assert "came_back" in {r["id"] for r in (await _scored(db, repeat.subject)).score["fired"]}  # type: ignore[union-attr]
    assert (await _scored(db, erased_first.subject)).lead is None  # type: ignore[union-attr]
    assert (await _scored(db, converted.subject)).outcome == "won"  # type: ignore[union-attr]
    assert (await _scored(db, first.subject)).lead == first.data["lead"]  # type: ignore[union-attr]


async def test_concurrent_outcomes_are_all_counted(db: Database) -> None:
    """Outcomes counted in concurrent transactions (two consumers, or one batch retried) add up, none lost."""
    features = [("lead.country", "DE"), ("enrichment.seniority", "vp")]
    async with db.transaction() as session:  # the counters exist already, as they do after the first outcome
        await ScoringRepository(session).add_outcome(features, won=False)

    async def count_one(won: bool) -> None:
        async with db.transaction() as session:
            await ScoringRepository(session).add_outcome(features, won=won)

    await asyncio.gather(*(count_one(won=i % 2 == 0) for i in range(12)))
    async with db.read() as session:
        counts = await ScoringRepository(session).outcome_counts(features)
    assert (counts.won_total, counts.lost_total) == (6, 7)
    assert counts.by_feature[("lead.country", "DE")] == (6, 7)
    assert counts.by_feature[("enrichment.seniority", "vp")] == (6, 7)


async def test_a_catastrophic_regex_on_a_crafted_message_is_scored_by_the_real_handler(db: Database) -> None:
    scoring = Scoring(_settings(), provider=None, clock=lambda: NOW)
    ruleset = DEFAULT_RULESET_YAML.replace(
        "intent:\n",
        "intent:\n"
        "  - {id: one_word_lines, points: 5, when: {lead.message: {regex: '^(\\w+\\s?)*$'}}}\n"
        "  - {id: flagged, points: 1, when: {quality.flags: {contains: phone_unparsed}}}\n",
        1,
    )
    async with db.transaction() as session:
        await scoring.install_ruleset(session, ruleset)
    crafted = _received(_lead(message="a" * 9_999 + "!"))  # backtracks for hours under Python's re
    plain = _received(_lead(message="call me back", quality={"flags": ["phone_unparsed"]}))
    for event in (crafted, plain):
        await _apply(db, scoring.on_received, event)
    fired = {}
    for event in (crafted, plain):
        row = await _scored(db, event.subject)
        assert row is not None
        fired[event.subject] = {rule["id"] for rule in row.score["fired"]}
    assert not fired[crafted.subject] & {"one_word_lines", "flagged"}
    assert {"one_word_lines", "flagged"} <= fired[plain.subject]
