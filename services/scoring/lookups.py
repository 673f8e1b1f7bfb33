"""The enrichment provider's answers for a consumer batch, asked concurrently before the batch's transaction opens.

A slow provider must not hold the database transaction (and SQLite's single writer) open: the consumer calls
`prepare` with the batch first, and scoring then reads the answers from here inside the transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from common.envelope import Event
from scoring.clients import EnrichmentClient
from scoring.domain import lookup_domain
from scoring.settings import ScoringSettings

log = structlog.get_logger(__name__)

ProviderAnswer = tuple[dict[str, Any] | None, str]
"""The provider's record (or None) and its status: ok, not_found, timeout, disabled, no_domain, ..."""


class ProviderLookups:
    """The provider client and the answers gathered for the batch being handled."""

    def __init__(self, settings: ScoringSettings, provider: EnrichmentClient | None) -> None:
        self.settings = settings
        self.provider = provider
        self._answers: dict[str, ProviderAnswer] = {}

    async def prepare(self, events: Sequence[Event]) -> None:
        """Ask the provider for a batch's domains concurrently.

        The whole batch waits at most one lookup's worth of time: whatever the provider has not answered
        by then is scored as a timeout (partial) rather than holding the other leads back.
        """
        self._answers.clear()
        if self.provider is None:
            return
        provider = self.provider
        limit = asyncio.Semaphore(self.settings.enrichment_concurrency)

        async def lookup(domain: str) -> ProviderAnswer:
            async with limit:
                return await provider.lookup(domain)

        pending: dict[str, asyncio.Task[ProviderAnswer]] = {}
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
                self._answers[lead_id] = (None, "timeout")
            else:
                self._answers[lead_id] = task.result()

    def _batch_budget_s(self) -> float:
        attempts = self.settings.enrichment_attempts
        # The client's own bound per lookup (timeouts plus backoff), and a little for the event loop.
        return attempts * self.settings.enrichment_timeout_s + 0.05 * (2**attempts) + 0.5

    def prepared(self, leads: Sequence[tuple[str, str | None]]) -> list[ProviderAnswer | None]:
        """For each (lead id, domain), the answer known without asking the provider now (None: `answer` must ask)."""
        if self.provider is None:
            return [(None, "disabled")] * len(leads)
        answers = self._answers
        return [(None, "no_domain") if not d else answers.get(lead_id) if lead_id else None for lead_id, d in leads]

    async def answer(self, lead_id: str, domain: str | None) -> ProviderAnswer:
        """The batch's answer for the lead, or a lookup now (a preview, or a lead outside the batch)."""
        if self.provider is None:
            return None, "disabled"
        if not domain:
            return None, "no_domain"
        if lead_id and lead_id in self._answers:
            return self._answers[lead_id]
        return await self.provider.lookup(domain)
