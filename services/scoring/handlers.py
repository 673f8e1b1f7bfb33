"""Scoring use cases, called by the consumer loop (which owns the transaction) and by the HTTP API."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.envelope import Event
from common.erasure import anonymous_enrichment
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
    enrich,
    load_ruleset,
    lookup_domain,
    outcome_features,
    score_lead,
)
from scoring.lookups import ProviderLookups
from scoring.settings import ScoringSettings
from scoring.store import ScoredLead, ScoringRepository, outbox

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
        self.clock = clock
        self.lookups = ProviderLookups(settings, provider)
        self._rulesets: OrderedDict[str, Ruleset] = OrderedDict()
        # The lead ids of the consumer batch being handled, so their store checks take one query, not one each.
        self._batch: set[str] = set()

    # -- rulesets -------------------------------------------------------------------------------------------------

    def parse_ruleset(self, text: str) -> Ruleset:
        """Validate and compile a ruleset (raises RulesetError); recent ones are kept compiled."""
        ruleset = self._rulesets.get(text)
        if ruleset is None:
            ruleset = load_ruleset(text)
            self._rulesets[text] = ruleset
            # Previews may try many candidates; only the last few are worth keeping compiled.
            while len(self._rulesets) > _COMPILED_RULESETS:
                self._rulesets.popitem(last=False)
        self._rulesets.move_to_end(text)
        return ruleset

    async def active_ruleset(self, session: AsyncSession) -> Ruleset:
        """The ruleset in force, read once per transaction (a consumer batch scores with one version)."""
        facts = _facts(session)
        if facts.ruleset is None:
            row = await ScoringRepository(session).active_ruleset()
            facts.ruleset = self.parse_ruleset(row.source_text if row else DEFAULT_RULESET_YAML)
        return facts.ruleset

    async def install_ruleset(self, session: AsyncSession, text: str) -> Ruleset:
        """Validate (raises RulesetError, leaving the old one in force), store as a new version, make it active."""
        ruleset = self.parse_ruleset(text)
        repo = ScoringRepository(session)
        now = self.clock()
        await repo.save_ruleset(ruleset.version, text, now)
        await repo.activate(ruleset.version, now)
        _facts(session).ruleset = ruleset
        return ruleset

    # -- enrichment provider (outside the transaction) -----------------------------------------------------------

    async def prepare(self, events: Sequence[Event]) -> None:
        """Before a consumer batch's transaction: note its leads and ask the provider for their domains."""
        self._batch = {event.subject for event in events if event.type == "lead.received"}
        await self.lookups.prepare(events)

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
        facts = _facts(session)
        domain = lookup_domain(lead)
        if facts.has_firmographics is None:
            facts.has_firmographics = await repo.has_firmographics()
        row = await repo.firmographic(domain_candidates(domain)) if facts.has_firmographics else None
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
        provider_result, provider_status = await self.lookups.answer(lead_id or "", domain)
        enrichment = enrich(
            lead, firmographic=firmographic, provider_result=provider_result, provider_status=provider_status
        )
        repeat_count = 0
        if duplicate_of:
            await session.flush()  # earlier submissions may still be pending in this batch
            repeat_count = await repo.repeat_count(duplicate_of)
        context = {
            "source": dict(source),
            "is_test": is_test,
            "duplicate_of": duplicate_of,
            "repeat_count": repeat_count,
        }
        score = score_lead(lead, enrichment, ruleset, context=context)
        features = outcome_features(lead, enrichment.as_fields(), context=context)
        if facts.has_outcomes is None:
            facts.has_outcomes = await repo.has_outcomes()
        counts = OutcomeCounts()
        if facts.has_outcomes:
            if facts.values_per_field is None:
                facts.values_per_field = await repo.values_per_field()
            counts = await repo.outcome_counts(features, values_per_field=facts.values_per_field)
        conversion = conversion_probability(features, counts, min_outcomes=self.settings.conversion_min_outcomes)
        return ScoreOutcome(enrichment, score.to_dict(), _conversion_dict(conversion), features)

    async def preview(
        self,
        session: AsyncSession,
        *,
        lead: Mapping[str, Any],
        source: Mapping[str, Any],
        is_test: bool,
        duplicate_of: str | None,
        ruleset_yaml: str | None,
    ) -> ScoreOutcome:
        """Score a lead under the active ruleset or a candidate (raises RulesetError); nothing is stored."""
        ruleset = self.parse_ruleset(ruleset_yaml) if ruleset_yaml else await self.active_ruleset(session)
        return await self.evaluate(
            session,
            lead_id=None,
            lead=lead,
            source=source,
            is_test=is_test,
            duplicate_of=duplicate_of,
            ruleset=ruleset,
        )

    async def on_received(self, session: AsyncSession, event: Event) -> None:
        """lead.received -> score, store, emit lead.scored in the same transaction."""
        data = event.data
        lead_id = event.subject
        repo = ScoringRepository(session)
        facts = _facts(session)
        if lead_id not in facts.checked:
            # The first lead of a consumer batch reads the state of the whole batch.
            wanted = self._batch if lead_id in self._batch and not facts.checked else {lead_id}
            known_scored, known_erased = await repo.scored_or_erased(sorted(wanted))
            facts.scored |= known_scored
            facts.erased |= known_erased
            facts.checked |= wanted
        if lead_id in facts.scored:
            return  # already scored under another event id (a re-published lead): scoring is once per lead
        erased = lead_id in facts.erased
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
        repo.add_scored(
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
        # The row is flushed with the rest of the batch at commit: one round trip for all of them rather than
        # one each. Handlers that read scored rows flush first; `facts.scored` covers the batch's repeats.
        facts.scored.add(lead_id)
        await add_events(session, outbox, self.settings, [scored], _topic)
        metrics.lead_scored(session, outcome.score["grade"])

    async def on_erased(self, session: AsyncSession, event: Event) -> None:
        """Delete the lead's personal data; keep the anonymous score, its features and the outcome counts."""
        lead_id = event.subject
        now = self.clock()
        await session.flush()  # the lead may have been scored earlier in this same batch
        _facts(session).erased.add(lead_id)
        repo = ScoringRepository(session)
        await repo.mark_erased(lead_id, now)
        row = await repo.scored(lead_id)
        if row is not None and row.erased_at is None:
            row.lead = None
            row.enrichment = anonymous_enrichment(row.enrichment)
            row.erased_at = now
        await session.flush()

    async def on_outcome(self, session: AsyncSession, event: Event) -> None:
        """A sales outcome updates the won/lost counts of the lead's features, once per lead."""
        if event.type not in (WON, LOST):
            return
        repo = ScoringRepository(session)
        await session.flush()  # the lead may have been scored earlier in this same batch
        row = await repo.scored(event.subject)
        if row is None or row.outcome is not None:
            return
        row.outcome = "won" if event.type == WON else "lost"
        await repo.add_outcome([(f, v) for f, v in row.features or []], won=event.type == WON)
        facts = _facts(session)
        facts.has_outcomes = True
        facts.values_per_field = None  # the outcome may have brought a value not seen before

    async def stored_score(self, session: AsyncSession, lead_id: str) -> ScoredLead | None:
        """The lead's stored score record, if it has been scored."""
        return await ScoringRepository(session).scored(lead_id)

    # -- firmographics --------------------------------------------------------------------------------------------

    async def load_firmographics(self, session: AsyncSession, rows: Sequence[Firmographic]) -> int:
        """Insert or replace company facts by domain; returns how many rows were loaded."""
        await ScoringRepository(session).save_firmographics(rows, self.clock())
        _facts(session).has_firmographics = None
        return len(rows)


_COMPILED_RULESETS = 16


@dataclass
class _TransactionFacts:
    """What one transaction reads once instead of once per lead; a consumer batch is one transaction."""

    ruleset: Ruleset | None = None
    has_firmographics: bool | None = None
    has_outcomes: bool | None = None
    values_per_field: dict[str, int] | None = None
    # Leads known to be scored or erased in this transaction, and the ids whose stored state has been read.
    scored: set[str] = field(default_factory=set)
    erased: set[str] = field(default_factory=set)
    checked: set[str] = field(default_factory=set)


def _facts(session: AsyncSession) -> _TransactionFacts:
    facts = session.info.get("scoring_facts")
    if facts is None:
        facts = session.info["scoring_facts"] = _TransactionFacts()
    return facts


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
