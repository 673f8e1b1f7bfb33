"""Scoring use cases, called by the consumer loop (which owns the transaction) and by the HTTP API."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
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
    enrich,
    load_ruleset,
    lookup_domain,
    outcome_features,
    score_lead,
)
from scoring.settings import ScoringSettings
from scoring.store import (
    ErasedLead,
    FirmographicRow,
    RulesetVersion,
    ScoredLead,
    ScoringRepository,
    outbox,
)

log = structlog.get_logger(__name__)

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
        self._rulesets: OrderedDict[str, Ruleset] = OrderedDict()
        self._provider_results: dict[str, tuple[dict[str, Any] | None, str]] = {}
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
        if await repo.ruleset(ruleset.version) is None:
            session.add(RulesetVersion(version=ruleset.version, source_text=text, created_at=now))
            await session.flush()
        await repo.activate(ruleset.version, now)
        _facts(session).ruleset = ruleset
        return ruleset

    # -- enrichment provider (outside the transaction) -----------------------------------------------------------

    async def prepare(self, events: Sequence[Event]) -> None:
        """Ask the provider for a batch's domains concurrently, before the transaction opens.

        The whole batch waits at most one lookup's worth of time: whatever the provider has not answered
        by then is scored as a timeout (partial) rather than holding the other leads back.
        """
        self._provider_results.clear()
        self._batch = {event.subject for event in events if event.type == "lead.received"}
        if self.provider is None:
            return
        provider = self.provider
        limit = asyncio.Semaphore(self.settings.enrichment_concurrency)

        async def lookup(domain: str) -> tuple[dict[str, Any] | None, str]:
            async with limit:
                return await provider.lookup(domain)

        pending: dict[str, asyncio.Task[tuple[dict[str, Any] | None, str]]] = {}
        wanted: list[tuple[str, str]] = []
        for event in events:
            if event.type != "lead.received":
                continue
            domain = lookup_domain(event.data.get("lead") or {})
            if domain:
                wanted.append((event.subject, domain))
                if domain not in pending:
                    pending[domain] = asyncio.create_task(lookup(domain))
        if pending:
            _done, late = await asyncio.wait(pending.values(), timeout=self._batch_budget_s())
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
                log.warning("enrichment_batch_budget_exceeded", unanswered=len(late))
        for lead_id, domain in wanted:
            task = pending[domain]
            if task.cancelled() or task.exception() is not None:
                self._provider_results[lead_id] = (None, "timeout")
            else:
                self._provider_results[lead_id] = task.result()

    def _batch_budget_s(self) -> float:
        attempts = self.settings.enrichment_attempts
        # The client's own bound per lookup (timeouts plus backoff), and a little for the event loop.
        return attempts * self.settings.enrichment_timeout_s + 0.05 * (2**attempts) + 0.5

    async def _provider_for(self, lead_id: str, domain: str | None) -> tuple[dict[str, Any] | None, str]:
        if self.provider is None:
            return None, "disabled"
        if not domain:
            return None, "no_domain"
        if lead_id and lead_id in self._provider_results:
            return self._provider_results[lead_id]
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
        provider_result, provider_status = await self._provider_for(lead_id or "", domain)
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
        if await session.get(ErasedLead, lead_id) is None:
            session.add(ErasedLead(lead_id=lead_id, erased_at=now))
        row = await ScoringRepository(session).scored(lead_id)
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

    # -- firmographics --------------------------------------------------------------------------------------------

    async def load_firmographics(self, session: AsyncSession, rows: Sequence[Firmographic]) -> int:
        """Insert or replace company facts by domain; returns how many rows were loaded."""
        now = self.clock()
        repo = ScoringRepository(session)
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            existing = await repo.firmographics_by_domain([item.domain.lower() for item in chunk])
            for item in chunk:
                values = {
                    "name": item.name,
                    "employee_band": item.employee_band,
                    "industry": item.industry,
                    "country": item.country,
                    "revenue_band": item.revenue_band,
                    "updated_at": now,
                }
                row = existing.get(item.domain.lower())
                if row is None:
                    session.add(FirmographicRow(domain=item.domain.lower(), **values))
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
            await session.flush()
        _facts(session).has_firmographics = None
        return len(rows)


# What an erased lead's enrichment keeps: categories shared by many leads, never what names one person or company.
_ANONYMOUS_ENRICHMENT = ("email_type", "phone_country", "phone_line_type", "seniority", "function", "partial")
_ANONYMOUS_COMPANY = ("employee_band", "industry", "country", "revenue_band")
# Steps whose detail is a domain.
_IDENTIFYING_STEPS = frozenset({"domain", "firmographics"})


def anonymous_enrichment(enrichment: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The enrichment record without the domain, company name, provider answer and step details naming them."""
    if enrichment is None:
        return None
    kept: dict[str, Any] = {key: enrichment.get(key) for key in _ANONYMOUS_ENRICHMENT}
    company = enrichment.get("company")
    kept["domain"] = None
    kept["provider"] = None
    kept["company"] = (
        {"domain": None, "name": None, **{key: company.get(key) for key in _ANONYMOUS_COMPANY}}
        if isinstance(company, Mapping)
        else None
    )
    kept["steps"] = [
        {**step, "detail": None} if step.get("step") in _IDENTIFYING_STEPS else dict(step)
        for step in enrichment.get("steps") or []
        if isinstance(step, Mapping)
    ]
    return kept


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
