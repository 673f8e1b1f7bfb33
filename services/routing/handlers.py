"""The router: routing's use cases behind one object that the consumer, the timer loop and the app hold.

A thin facade: the state (settings, clock, cached roster and rules) lives in `RoutingContext`, the work in the
use case modules under `routing.usecases` (assign, clock, actions, roster, erasure, preview).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from routing.domain import RoutingRules
from routing.usecases import actions, batch, clock, erasure, roster
from routing.usecases.context import COMPILED_RULES, Roster, RoutingContext
from routing.usecases.shared import EVENT_SOURCE

__all__ = ["COMPILED_RULES", "EVENT_SOURCE", "Roster", "Router"]


class Router(RoutingContext):
    """One per process: every write goes through the caller's session; the caller commits."""

    async def on_scored(self, session: AsyncSession, event: Event) -> None:
        """lead.scored -> one routing decision (or a repeat joining the person's open lead)."""
        await batch.on_scored_batch(self, session, [event])

    async def on_scored_batch(self, session: AsyncSession, events: Sequence[Event]) -> None:
        """A poll's lead.scored -> their decisions, made in memory and written together (repeats one by one)."""
        await batch.on_scored_batch(self, session, events)

    async def on_erased(self, session: AsyncSession, event: Event) -> None:
        """lead.erased -> the personal data goes; the anonymous decision record stays."""
        await erasure.on_erased(self, session, event)

    async def act(
        self,
        session: AsyncSession,
        lead_id: str,
        action: str,
        *,
        rep_id: str | None,
        reason: str | None,
        correlation_id: str | None,
    ) -> dict[str, Any]:
        """A rep's action on a lead (see routing.usecases.actions)."""
        return await actions.act(
            self, session, lead_id, action, rep_id=rep_id, reason=reason, correlation_id=correlation_id
        )

    async def detect_due_timers(self, session: AsyncSession, now: datetime, limit: int) -> int:
        """Fire one batch of due timers; breaches leave escalation markers."""
        return await clock.detect_due_timers(self, session, now, limit)

    async def escalate_due(self, session: AsyncSession, now: datetime, limit: int) -> int:
        """Make one batch of detected breaches' escalations."""
        return await clock.escalate_due(self, session, now, limit)

    async def fire_due_timers(self, session: AsyncSession, now: datetime, limit: int) -> int:
        """Detect and escalate in one transaction (tests and tools; the timer loop splits the two)."""
        return await clock.fire_due_timers(self, session, now, limit)

    async def install_rules(self, session: AsyncSession, text: str) -> RoutingRules:
        """Validate and activate routing rules (RulesError leaves the old ones in force)."""
        return await roster.install_rules(self, session, text)

    async def replace_roster(self, session: AsyncSession, data: Mapping[str, Any]) -> Roster:
        """Load teams, reps and accounts from a seed mapping."""
        return await roster.replace_roster(self, session, data)
