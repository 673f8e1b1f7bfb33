"""Scoring use cases, called by the consumer loop (which owns the transaction) and by the HTTP API.

A consumer batch of lead.received is scored as one: its stored state, firmographics, repeat counts and outcome
counts are read in one query each, its rows stored in one INSERT and its lead.scored events in one outbox insert.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from orjson import Fragment
from sqlalchemy.ext.asyncio import AsyncSession

from common import metrics
from common.envelope import Event, dumps
from common.erasure import anonymous_enrichment
from common.ids import new_ids
from common.outbox import add_events
from common.topics import EVENT_TOPICS
from scoring.clients import EnrichmentClient
from scoring.domain import (
    DEFAULT_RULESET_YAML,
    Enrichment,
    EnrichmentMemo,
    Firmographic,
    OutcomeCounts,
    Ruleset,
    ScoreDicts,
    batch_features,
    conversion_probability,
    load_ruleset,
    lookup_domain,
)
from scoring.lookups import ProviderLookups
from scoring.reads import LeadToScore, companies_of, lead_to_score, outcome_counts, repeat_counts, transaction_facts
from scoring.settings import ScoringSettings
from scoring.store import ScoredLead, ScoringRepository, outbox
from scoring.values import FeatureTexts, serialize_once
from scoring.values import conversion_dict as _conversion_dict
from scoring.values import parse_time as _parse_time

EVENT_SOURCE = "/handoff/scoring"
WON = "lead.converted"
LOST = "lead.disqualified"


def _topic(event: Event) -> str:
    return EVENT_TOPICS[event.type]


class ScoreOutcome(NamedTuple):
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
        self._stored: dict[str, Ruleset] = {}  # stored versions, compiled from their stored text
        # Leads alike share their enrichment, its fields and their score's dict (read only: see each memo).
        self._enrichments = EnrichmentMemo()
        self._score_dicts = ScoreDicts()
        self._features_json = FeatureTexts()

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
        facts = transaction_facts(session)
        if facts.ruleset is None:
            row = await ScoringRepository(session).active_ruleset()
            facts.ruleset = self.parse_ruleset(row.source_text if row else DEFAULT_RULESET_YAML)
        return facts.ruleset

    async def _stored_ruleset(self, session: AsyncSession, version: str | None) -> Ruleset:
        """The active ruleset, given its version (None: none active, the default): a stored version's text never
        changes, so each one is read and compiled once per process."""
        if version is None:
            return self.parse_ruleset(DEFAULT_RULESET_YAML)
        ruleset = self._stored.get(version)
        if ruleset is None:
            row = await ScoringRepository(session).ruleset(version)
            ruleset = self.parse_ruleset(row.source_text if row else DEFAULT_RULESET_YAML)
            if row is not None:
                self._stored[version] = ruleset
                while len(self._stored) > _COMPILED_RULESETS:
                    self._stored.pop(next(iter(self._stored)))
        return ruleset

    async def install_ruleset(self, session: AsyncSession, text: str, actor: str = "admin") -> Ruleset:
        """Validate (raises RulesetError, leaving the old one in force), store as a new version, make it active;
        the change is audited with `actor` (who asked)."""
        ruleset = self.parse_ruleset(text)
        repo = ScoringRepository(session)
        now = self.clock()
        previous = await repo.active_ruleset()
        await repo.save_ruleset(ruleset.version, text, now)
        await repo.activate(ruleset.version, now)
        detail = {"name": ruleset.name, "previous_version": previous.version if previous else None}
        repo.record(now, actor, "ruleset.activate", ruleset.version, detail)
        transaction_facts(session).ruleset = ruleset
        return ruleset

    # -- enrichment provider (outside the transaction) -----------------------------------------------------------

    async def prepare(self, events: Sequence[Event]) -> None:
        """Before a consumer batch's transaction: ask the provider for its leads' domains."""
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
        item = LeadToScore(lead_id, lead, source, is_test, duplicate_of)
        return (await self.evaluate_many(session, [item], ruleset))[0]

    async def evaluate_many(
        self, session: AsyncSession, items: Sequence[LeadToScore], ruleset: Ruleset
    ) -> list[ScoreOutcome]:
        """Score `items` as if each were stored before the next is scored, reading the store once for all of them."""
        repo = ScoringRepository(session)
        facts = transaction_facts(session)
        domains = [lookup_domain(item.lead) for item in items]
        firmographics = await companies_of(repo, facts, domains)
        repeats = await repeat_counts(repo, items)
        asked = self.lookups.prepared([(item.lead_id or "", d) for item, d in zip(items, domains, strict=True)])
        answers = [
            answer or await self.lookups.answer(item.lead_id or "", domain)
            for item, domain, answer in zip(items, domains, asked, strict=True)
        ]
        # Stage by stage over the batch: the stages' lists are what the rows and events are built from.
        remembered = self._enrichments.enrich
        enriched = [
            remembered(
                item.lead, domain=domain, firmographic=firmographic, provider_result=result, provider_status=status
            )
            for item, domain, firmographic, (result, status) in zip(items, domains, firmographics, answers, strict=True)
        ]
        enrichments = [enrichment for enrichment, _fields in enriched]
        all_fields = [fields for _enrichment, fields in enriched]
        contexts = [
            {"source": item.source, "is_test": item.is_test, "duplicate_of": item.duplicate_of, "repeat_count": count}
            for item, count in zip(items, repeats, strict=True)
        ]
        score_dict_of = self._score_dicts.of_lead
        scores = [
            score_dict_of(item.lead, enrichment, ruleset, context=context, fields=fields)
            for item, enrichment, context, fields in zip(items, enrichments, contexts, all_fields, strict=True)
        ]
        all_features = batch_features([item.lead for item in items], all_fields, contexts)
        counts = await outcome_counts(repo, facts, {f for features in all_features for f in features})
        min_outcomes = self.settings.conversion_min_outcomes
        # Too few outcomes (the totals decide, not a lead's features): one answer for the whole batch.
        totals = OutcomeCounts(counts.won_total, counts.lost_total)
        totals_only = conversion_probability([], totals, min_outcomes=min_outcomes)
        shared = _conversion_dict(totals_only) if totals_only.status == "insufficient_data" else None
        outcomes = []
        for enrichment, score_dict, features in zip(enrichments, scores, all_features, strict=True):
            conversion = shared
            if conversion is None:
                own = {f: counts.by_feature[f] for f in features if f in counts.by_feature}
                lead_counts = OutcomeCounts(counts.won_total, counts.lost_total, own, counts.values_per_field)
                conversion = _conversion_dict(conversion_probability(features, lead_counts, min_outcomes=min_outcomes))
            outcomes.append(ScoreOutcome(enrichment, score_dict, conversion, features))
        return outcomes

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
        await self.on_received_batch(session, [event])

    async def on_received_batch(self, session: AsyncSession, events: Sequence[Event]) -> None:
        """A batch of lead.received -> score the leads not scored yet, store them, emit their lead.scored events."""
        repo = ScoringRepository(session)
        facts = transaction_facts(session)
        unchecked = sorted({event.subject for event in events} - facts.checked)
        want_facts = facts.ruleset is None or facts.has_firmographics is None or facts.has_outcomes is None
        if unchecked or want_facts:
            # One round trip for the batch's stored state and the transaction's facts.
            known_scored, known_erased, found = await repo.batch_state(unchecked, facts=want_facts)
            facts.scored |= known_scored
            facts.erased |= known_erased
            facts.checked.update(unchecked)
            if want_facts:
                if facts.has_firmographics is None:
                    facts.has_firmographics = "firmographics" in found
                if facts.has_outcomes is None:
                    facts.has_outcomes = "outcomes" in found
                if facts.ruleset is None:
                    facts.ruleset = await self._stored_ruleset(session, found.get("ruleset"))
        fresh: list[Event] = []
        for event in events:
            if event.subject not in facts.scored:  # scoring is once per lead, whatever the event id
                facts.scored.add(event.subject)
                fresh.append(event)
        if not fresh:
            return
        ruleset = await self.active_ruleset(session)
        items = [lead_to_score(event, erased=event.subject in facts.erased) for event in fresh]
        outcomes = await self.evaluate_many(session, items, ruleset)
        now = self.clock()
        scored_at = now.isoformat()
        rows: list[dict[str, Any]] = []
        scored_events: list[Event] = []
        event_ids = new_ids(len(fresh))
        # Leads alike share their enrichment, score and conversion objects (the memos'): each distinct one is
        # serialized once a batch, by identity (they all live until the batch is written, so no id is reused).
        serialized: dict[int, tuple[bytes, str]] = {}
        features_text_of = self._features_json.text
        for event, item, outcome, event_id in zip(fresh, items, outcomes, event_ids, strict=True):
            data = event.data
            erased = event.subject in facts.erased
            # Serialized once, for the stored row's JSON columns and the event's value alike.
            lead_json = dumps(item.lead)
            enrichment_json, enrichment_text = serialized.get(id(outcome.enrichment)) or serialize_once(
                serialized, outcome.enrichment, outcome.enrichment.to_serialize()
            )
            score_json, score_text = serialized.get(id(outcome.score)) or serialize_once(
                serialized, outcome.score, outcome.score
            )
            conversion_json, conversion_text = serialized.get(id(outcome.conversion)) or serialize_once(
                serialized, outcome.conversion, outcome.conversion
            )
            rows.append(
                {
                    "lead_id": event.subject,
                    "source_kind": item.source.get("kind"),
                    "duplicate_of": item.duplicate_of,
                    "is_test": item.is_test,
                    "lead": "null" if erased else lead_json.decode(),
                    "enrichment": enrichment_text,
                    "score": score_text,
                    "conversion": conversion_text,
                    "features": features_text_of(outcome.features),
                    "ruleset_version": ruleset.version,
                    "grade": outcome.score["grade"],
                    "qualified": outcome.score["qualified"],
                    "received_at": _parse_time(data.get("received_at")),
                    "scored_at": now,
                    "outcome": None,
                    "erased_at": now if erased else None,
                }
            )
            scored_events.append(
                Event(
                    id=event_id,
                    type="lead.scored",
                    source=EVENT_SOURCE,
                    subject=event.subject,
                    time=now,
                    correlation_id=event.correlation_id,
                    data={
                        "lead_id": event.subject,
                        "source": item.source,
                        "external_id": data.get("external_id"),
                        "is_test": item.is_test,
                        "duplicate_of": item.duplicate_of,
                        "received_at": data.get("received_at"),
                        "scored_at": scored_at,
                        "lead": Fragment(lead_json),
                        "enrichment": Fragment(enrichment_json),
                        "score": Fragment(score_json),
                        "conversion": Fragment(conversion_json),
                    },
                )
            )
        await repo.insert_scored(rows)
        await add_events(session, outbox, self.settings, scored_events, _topic)
        grades: dict[str, int] = {}
        for outcome in outcomes:  # a dict, not a Counter: its construction cost more than a one-lead poll's count
            grade = outcome.score["grade"]
            grades[grade] = grades.get(grade, 0) + 1
        for grade, count in grades.items():
            metrics.lead_scored(session, grade, count)

    async def on_erased(self, session: AsyncSession, event: Event) -> None:
        """Delete the lead's personal data; keep the anonymous score, its features and the outcome counts."""
        lead_id = event.subject
        now = self.clock()
        await session.flush()  # the lead may have been scored earlier in this same batch
        transaction_facts(session).erased.add(lead_id)
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
        facts = transaction_facts(session)
        facts.has_outcomes = True
        facts.values_per_field = None  # the outcome may have brought a value not seen before

    async def audit_entries(self, session: AsyncSession, before: int | None, limit: int) -> list[dict[str, Any]]:
        """Ruleset changes, newest first (older than `before` when given)."""
        rows = await ScoringRepository(session).audit_page(before, limit)
        return [
            {
                "id": r.id,
                "at": r.at.isoformat(),
                "who": r.actor,
                "action": r.action,
                "subject": r.subject,
                "detail": r.detail,
            }
            for r in rows
        ]

    async def stored_score(self, session: AsyncSession, lead_id: str) -> ScoredLead | None:
        """The lead's stored score record, if it has been scored."""
        return await ScoringRepository(session).scored(lead_id)

    # -- firmographics --------------------------------------------------------------------------------------------

    async def load_firmographics(self, session: AsyncSession, rows: Sequence[Firmographic]) -> int:
        """Insert or replace company facts by domain; returns how many rows were loaded."""
        await ScoringRepository(session).save_firmographics(rows, self.clock())
        transaction_facts(session).has_firmographics = None
        return len(rows)


_COMPILED_RULESETS = 16
