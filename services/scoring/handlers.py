"""Scoring use cases, called by the consumer loop (which owns the transaction) and by the HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from common.outbox import add_events
from common.topics import EVENT_TOPICS
from scoring.clients import EnrichmentClient
from scoring.domain import (
    DEFAULT_RULESET_YAML,
    Enrichment,
    Firmographic,
    OutcomeCounts,
    Ruleset,
    conversion_probability,
    domain_candidates,
    lookup_domain,
    enrich,
    load_ruleset,
    outcome_features,
    score_lead,
)
from scoring.settings import ScoringSettings
from scoring.store import (
    TOTAL,
    ErasedLead,
    FirmographicRow,
    OutcomeCount,
    RulesetVersion,
    ScoredLead,
    ScoringRepository,
    outbox,
)

EVENT_SOURCE = "/handoff/scoring"
WON = "lead.converted"
LOST = "lead.disqualified"


def _topic(event: Event) -> str:
    return EVENT_TOPICS[event.type]


@dataclass(frozen=True)
class ScoreOutcome:
    enrichment: Enrichment
    score: dict[str, Any]
    conversion: dict[str, Any]
    features: list[tuple[str, str]]


class Scoring:
    """Enrich and score leads; one instance per process, holding the provider client and the ruleset cache."""

    def __init__(
        self,
        settings: ScoringSettings,
        provider: EnrichmentClient | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.clock = clock
        self._rulesets: dict[str, Ruleset] = {}
        self._provider_results: dict[str, tuple[dict[str, Any] | None, str]] = {}

    # -- rulesets -------------------------------------------------------------------------------------------------

    def parse_ruleset(self, text: str) -> Ruleset:
        ruleset = self._rulesets.get(text)
        if ruleset is None:
            ruleset = load_ruleset(text)
            self._rulesets[text] = ruleset
        return ruleset

    async def active_ruleset(self, session: AsyncSession) -> Ruleset:
        row = await ScoringRepository(session).active_ruleset()
        return self.parse_ruleset(row.source_text if row else DEFAULT_RULESET_YAML)

    async def install_ruleset(self, session: AsyncSession, text: str) -> Ruleset:
        """Validate (raises RulesetError, leaving the old one in force), store as a new version, make it active."""
        ruleset = self.parse_ruleset(text)
        repo = ScoringRepository(session)
        now = self.clock()
        if await repo.ruleset(ruleset.version) is None:
            session.add(RulesetVersion(version=ruleset.version, source_text=text, created_at=now))
            await session.flush()
        await repo.activate(ruleset.version, now)
        return ruleset

    # -- enrichment provider (outside the transaction) -----------------------------------------------------------

    async def prepare(self, events: Sequence[Event]) -> None:
        """Ask the provider for a batch's domains concurrently, before the transaction opens."""
        if self.provider is None:
            return
        provider = self.provider
        pending: dict[str, asyncio.Task[tuple[dict[str, Any] | None, str]]] = {}
        wanted: list[tuple[str, str]] = []
        for event in events:
            if event.type != "lead.received":
                continue
            domain = lookup_domain(event.data.get("lead") or {})
            if domain:
                wanted.append((event.subject, domain))
                if domain not in pending:
                    pending[domain] = asyncio.create_task(provider.lookup(domain))
        if pending:
            await asyncio.gather(*pending.values())
        for lead_id, domain in wanted:
            self._provider_results[lead_id] = pending[domain].result()

    async def _provider_for(self, lead_id: str, domain: str | None) -> tuple[dict[str, Any] | None, str]:
        if self.provider is None:
            return None, "disabled"
        if lead_id in self._provider_results:
            return self._provider_results.pop(lead_id)
        if not domain:
            return None, "not_found"
        return await self.provider.lookup(domain)

    # -- scoring --------------------------------------------------------------------------------------------------

    async def evaluate(
        self,
        session: AsyncSession,
        *,
        lead_id: str | None,
        lead: Mapping[str, Any],
        source: Mapping[str, Any],
        is_test: bool,
        duplicate_of: str | None,
        ruleset: Ruleset,
    ) -> ScoreOutcome:
        """The one scoring path shared by the pipeline and the preview, so both give the same answer."""
        repo = ScoringRepository(session)
        domain = lookup_domain(lead)
        row = await repo.firmographic(domain_candidates(domain))
        firmographic = (
            Firmographic(
                domain=row.domain,
                name=row.name,
                employee_band=row.employee_band,
                industry=row.industry,
                country=row.country,
                revenue_band=row.revenue_band,
            )
            if row
            else None
        )
        provider_result, provider_status = await self._provider_for(lead_id or "", domain)
        enrichment = enrich(
            lead, firmographic=firmographic, provider_result=provider_result, provider_status=provider_status
        )
        repeat_count = await repo.repeat_count(duplicate_of) if duplicate_of else 0
        context = {"source": dict(source), "is_test": is_test, "duplicate_of": duplicate_of, "repeat_count": repeat_count}
        score = score_lead(lead, enrichment, ruleset, context=context)
        features = outcome_features(lead, enrichment.as_fields(), context=context)
        counts = await repo.outcome_counts(features)
        won_total, lost_total = counts.pop(TOTAL, (0, 0))
        conversion = conversion_probability(
            features,
            OutcomeCounts(won_total=won_total, lost_total=lost_total, by_feature=counts),
            min_outcomes=self.settings.conversion_min_outcomes,
        )
        return ScoreOutcome(enrichment, score.to_dict(), _conversion_dict(conversion), features)

    async def on_received(self, session: AsyncSession, event: Event) -> None:
        """lead.received -> score, store, emit lead.scored in the same transaction."""
        data = event.data
        lead_id = event.subject
        repo = ScoringRepository(session)
        if await repo.scored(lead_id) is not None:
            return  # already scored under another event id (a re-published lead): scoring is once per lead
        erased = await repo.is_erased(lead_id)
        lead = {} if erased else dict(data.get("lead") or {})
        source = dict(data.get("source") or {})
        ruleset = await self.active_ruleset(session)
        outcome = await self.evaluate(
            session,
            lead_id=lead_id,
            lead=lead,
            source=source,
            is_test=bool(data.get("is_test")),
            duplicate_of=data.get("duplicate_of"),
            ruleset=ruleset,
        )
        now = self.clock()
        session.add(
            ScoredLead(
                lead_id=lead_id,
                source_kind=source.get("kind"),
                duplicate_of=data.get("duplicate_of"),
                is_test=bool(data.get("is_test")),
                lead=None if erased else lead,
                enrichment=outcome.enrichment.to_dict(),
                score=outcome.score,
                conversion=outcome.conversion,
                features=[list(f) for f in outcome.features],
                ruleset_version=ruleset.version,
                grade=outcome.score["grade"],
                qualified=outcome.score["qualified"],
                received_at=_parse_time(data.get("received_at")),
                scored_at=now,
                erased_at=now if erased else None,
            )
        )
        scored = Event(
            type="lead.scored",
            source=EVENT_SOURCE,
            subject=lead_id,
            time=now,
            correlation_id=event.correlation_id,
            data={
                "lead_id": lead_id,
                "source": source,
                "external_id": data.get("external_id"),
                "is_test": bool(data.get("is_test")),
                "duplicate_of": data.get("duplicate_of"),
                "received_at": data.get("received_at"),
                "scored_at": now.isoformat(),
                "lead": lead,
                "enrichment": outcome.enrichment.to_dict(),
                "score": outcome.score,
                "conversion": outcome.conversion,
            },
        )
        await session.flush()
        await add_events(session, outbox, self.settings, [scored], _topic)

    async def on_erased(self, session: AsyncSession, event: Event) -> None:
        """Delete the lead's personal data; keep the anonymous score and the outcome counts."""
        lead_id = event.subject
        now = self.clock()
        if await session.get(ErasedLead, lead_id) is None:
            session.add(ErasedLead(lead_id=lead_id, erased_at=now))
        row = await ScoringRepository(session).scored(lead_id)
        if row is not None and row.erased_at is None:
            row.lead = None
            if row.enrichment:
                # The enrichment record is about the company, but the email domain can identify a person.
                row.enrichment = {k: v for k, v in row.enrichment.items() if k not in ("domain", "provider")}
            row.erased_at = now
        await session.flush()

    async def on_outcome(self, session: AsyncSession, event: Event) -> None:
        """A sales outcome updates the won/lost counts of the lead's features, once per lead."""
        if event.type not in (WON, LOST):
            return
        row = await ScoringRepository(session).scored(event.subject)
        if row is None or row.outcome is not None:
            return
        row.outcome = "won" if event.type == WON else "lost"
        won = 1 if event.type == WON else 0
        for feature, value in [*(tuple(f) for f in row.features or []), TOTAL]:
            counter = await session.get(OutcomeCount, (feature, value))
            if counter is None:
                counter = OutcomeCount(feature=feature, value=value, won=0, lost=0)
                session.add(counter)
            counter.won += won
            counter.lost += 1 - won
        await session.flush()

    # -- firmographics --------------------------------------------------------------------------------------------

    async def load_firmographics(self, session: AsyncSession, rows: Sequence[Firmographic]) -> int:
        now = self.clock()
        for item in rows:
            existing = await session.get(FirmographicRow, item.domain.lower())
            values = {
                "name": item.name,
                "employee_band": item.employee_band,
                "industry": item.industry,
                "country": item.country,
                "revenue_band": item.revenue_band,
                "updated_at": now,
            }
            if existing is None:
                session.add(FirmographicRow(domain=item.domain.lower(), **values))
            else:
                for key, value in values.items():
                    setattr(existing, key, value)
        await session.flush()
        return len(rows)


def _conversion_dict(conversion: Any) -> dict[str, Any]:
    return {
        "probability": conversion.probability,
        "status": conversion.status,
        "outcomes_seen": conversion.outcomes_seen,
        "factors_for": list(conversion.factors_for),
        "factors_against": list(conversion.factors_against),
    }


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
