"""SLA notices: lead.sla_warning and lead.sla_breached as the clock fires them, each with a timeline entry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from common.ids import new_ids
from routing.store import RoutingRepository
from routing.usecases.context import RoutingContext
from routing.usecases.shared import EVENT_SOURCE, publish


class _LeadFacts(Protocol):
    """What an SLA notice reads of a lead: a LeadRow, or a row of RoutingRepository.clock_facts."""

    lead_id: str
    grade: str | None
    source_kind: str | None


class _ClockFacts(Protocol):
    """What an SLA notice reads of the running assignment: an AssignmentRow, or a row of clock_facts."""

    id: int
    rep_id: str | None
    team_id: str | None
    sla_policy: str | None
    sla_due_at: datetime | None


class _TimerFacts(Protocol):
    id: int
    fraction: float | None
    due_at: datetime


def sla_event(
    kind: str,
    lead: _LeadFacts,
    current: _ClockFacts,
    timer: _TimerFacts,
    now: datetime,
    *,
    clock_kind: str = "first_contact",
    step: str | None = None,
    manager_id: str | None = None,
    event_id: str | None = None,
    fired_at: str | None = None,
) -> Event:
    """lead.sla_warning / lead.sla_breached: which clock, how late it fired, and for a breach the ladder step.
    A firing batch passes each event's id (event_ids) and `now` formatted once (fired_at)."""
    due = timer.due_at
    detail = {
        "lead_id": lead.lead_id,
        "assignment_id": current.id,
        "rep_id": current.rep_id,
        "team_id": current.team_id,
        "grade": lead.grade,
        "source_kind": lead.source_kind,
        "policy": current.sla_policy,
        "fraction": timer.fraction,
        "due_at": due.isoformat(),
        "sla_due_at": current.sla_due_at.isoformat() if current.sla_due_at else None,
        "fired_at": fired_at or now.isoformat(),
        "late_ms": max(0, round((now - due).total_seconds() * 1000)),
        "clock": clock_kind,  # first_contact, or follow_up: the touches after the first one
    }
    if kind == "lead.sla_breached":
        detail["step"] = step  # the ladder step this breach calls for (null: none, or a follow-up breach)
        detail["manager_id"] = manager_id  # who a notify_manager step tells
    if event_id is None:
        return Event(type=kind, source=EVENT_SOURCE, subject=lead.lead_id, time=now, data=detail)
    return Event(type=kind, source=EVENT_SOURCE, subject=lead.lead_id, time=now, data=detail, id=event_id)


# A firing batch's event ids (clock.py), made together: time-ordered, they key the consumers' dedupe indexes.
event_ids = new_ids


async def emit_sla(rt: RoutingContext, session: AsyncSession, events: Sequence[Event]) -> None:
    """SLA warnings and breaches: a timeline row each, the events and their webhook deliveries."""
    if not events:
        return
    await RoutingRepository(session).add_timeline_rows(
        {"lead_id": e.subject, "at": e.time, "kind": e.type.removeprefix("lead."), "detail": e.data} for e in events
    )
    await publish(rt, session, events)
