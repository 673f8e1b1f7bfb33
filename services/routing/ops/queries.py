"""Ops read side: the questions the ops views ask of routing's tables (the only ops module with SQL).

Everything here reads and nothing writes. The webhook tables are read through their models (routing.store), so a
renamed column breaks here at type-check and test time instead of silently on a live dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Label, Row, and_, exists, func, or_, select, type_coerce
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from common.db import UtcDateTime
from routing.ops.compliance import LeadFacts, OpenClock, SlaClock
from routing.store import (
    AssignmentRow,
    LeadRow,
    RepLoadRow,
    RepRow,
    SlaTimer,
    TimelineRow,
    WebhookDelivery,
    WebhookEndpoint,
)

log = structlog.get_logger(__name__)

# Delivery states that count as given up; a pending delivery already tried at least once is retrying.
_WEBHOOK_FAILED = ("failed", "exhausted", "dead")


@dataclass(frozen=True)
class RepOnBoard:
    """A rep as the board shows them: who, which team, present or not, and how many leads are open on them."""

    rep_id: str
    name: str | None
    team_id: str | None
    status: str
    open_leads: int


@dataclass(frozen=True)
class Board:
    """What the dashboard shows now: running clocks (soonest deadline first), reps with their load, failures."""

    open_clocks: list[OpenClock]
    reps: list[RepOnBoard]
    webhook_failures: list[Row[Any]]


class OpsRepository:
    """The questions the ops views ask of routing's tables."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lead_facts(self, since: datetime, until: datetime, *, include_test: bool) -> list[LeadFacts]:
        """Leads routed in [since, until) with their SLA clocks."""
        in_window = [LeadRow.routed_at >= since, LeadRow.routed_at < until]
        if not include_test:
            in_window.append(LeadRow.is_test.is_(False))
        leads = await self.session.execute(
            select(
                LeadRow.lead_id,
                _utc(LeadRow.routed_at),
                _utc(LeadRow.first_touch_at),
                LeadRow.team_id,
                LeadRow.source_kind,
                LeadRow.source_id,
                LeadRow.grade,
            ).where(*in_window)
        )
        clocks = await self.session.execute(
            select(
                AssignmentRow.id,
                AssignmentRow.lead_id,
                AssignmentRow.rep_id,
                AssignmentRow.team_id,
                _utc(AssignmentRow.assigned_at),
                _utc(AssignmentRow.sla_due_at),
                _utc(AssignmentRow.ended_at),
                AssignmentRow.end_reason,
            )
            .join(LeadRow, LeadRow.lead_id == AssignmentRow.lead_id)
            .where(*in_window, AssignmentRow.sla_due_at.is_not(None))
            .order_by(AssignmentRow.id)
        )
        by_lead: dict[str, list[SlaClock]] = {}
        for c in clocks:
            by_lead.setdefault(c.lead_id, []).append(
                SlaClock(
                    assignment_id=c.id,
                    lead_id=c.lead_id,
                    rep_id=c.rep_id,
                    team_id=c.team_id,
                    assigned_at=c.assigned_at,
                    due_at=c.sla_due_at,
                    ended_at=c.ended_at,
                    end_reason=c.end_reason,
                )
            )
        return [
            LeadFacts(
                lead_id=r.lead_id,
                routed_at=r.routed_at,
                first_touch_at=r.first_touch_at,
                team_id=r.team_id,
                source_kind=r.source_kind,
                source_id=r.source_id,
                grade=r.grade,
                clocks=tuple(by_lead.get(r.lead_id, ())),
            )
            for r in leads
        ]

    async def open_clocks(self, *, include_test: bool) -> list[OpenClock]:
        """Every running SLA clock, soonest deadline first."""
        warning = aliased(SlaTimer)
        warned = (
            exists()
            .where(
                warning.assignment_id == SlaTimer.assignment_id,
                warning.kind == "warning",
                warning.fired_at.is_not(None),
                warning.cancelled.is_(False),
            )
            .label("warned")
        )
        query = (
            select(
                SlaTimer.lead_id,
                SlaTimer.assignment_id,
                _utc(SlaTimer.due_at),
                AssignmentRow.rep_id,
                AssignmentRow.team_id,
                _utc(AssignmentRow.assigned_at),
                LeadRow.grade,
                LeadRow.source_kind,
                LeadRow.source_id,
                LeadRow.status,
                warned,
            )
            .join(AssignmentRow, AssignmentRow.id == SlaTimer.assignment_id)
            .join(LeadRow, LeadRow.lead_id == SlaTimer.lead_id)
            .where(SlaTimer.kind == "breach", SlaTimer.fired_at.is_(None), AssignmentRow.ended_at.is_(None))
            .order_by(SlaTimer.due_at, SlaTimer.id)
        )
        if not include_test:
            query = query.where(LeadRow.is_test.is_(False))
        return [
            OpenClock(
                lead_id=r.lead_id,
                assignment_id=r.assignment_id,
                rep_id=r.rep_id,
                team_id=r.team_id,
                grade=r.grade,
                source_kind=r.source_kind,
                source_id=r.source_id,
                status=r.status,
                assigned_at=r.assigned_at,
                due_at=r.due_at,
                warned=bool(r.warned),
            )
            for r in await self.session.execute(query)
        ]

    async def breaches(
        self,
        *,
        since: datetime,
        until: datetime,
        team: str | None = None,
        rep: str | None = None,
        source: str | None = None,
        grade: str | None = None,
        include_test: bool = False,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[Row[Any]]:
        """SLA breaches, newest first; team and rep are who held the lead when it breached."""
        query = (
            select(
                TimelineRow.id,
                TimelineRow.lead_id,
                _utc(TimelineRow.at),
                TimelineRow.detail,
                LeadRow.grade,
                LeadRow.source_kind,
                LeadRow.source_id,
                LeadRow.status,
                LeadRow.current_rep_id,
                _utc(LeadRow.first_touch_at),
            )
            .outerjoin(LeadRow, LeadRow.lead_id == TimelineRow.lead_id)
            .where(TimelineRow.kind == "sla_breached", TimelineRow.at >= since, TimelineRow.at < until)
            .order_by(TimelineRow.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(TimelineRow.id < before_id)
        if team:
            query = query.where(TimelineRow.detail["team_id"].as_string() == team)
        if rep:
            query = query.where(TimelineRow.detail["rep_id"].as_string() == rep)
        if source:
            query = query.where(or_(LeadRow.source_kind == source, LeadRow.source_id == source))
        if grade:
            query = query.where(LeadRow.grade == grade)
        if not include_test:
            query = query.where(or_(LeadRow.is_test.is_(False), LeadRow.lead_id.is_(None)))
        return list(await self.session.execute(query))

    async def last_event_id(self) -> int:
        return int((await self.session.execute(select(func.coalesce(func.max(TimelineRow.id), 0)))).scalar_one())

    async def events_after(self, after_id: int, kinds: Sequence[str], limit: int) -> list[Row[Any]]:
        """Timeline rows of these kinds after an id, oldest first, with the lead's grade and source."""
        query = (
            select(
                TimelineRow.id,
                TimelineRow.lead_id,
                _utc(TimelineRow.at),
                TimelineRow.kind,
                TimelineRow.detail,
                LeadRow.grade,
                LeadRow.source_kind,
                LeadRow.source_id,
                LeadRow.status,
                LeadRow.is_test,
            )
            .outerjoin(LeadRow, LeadRow.lead_id == TimelineRow.lead_id)
            .where(TimelineRow.id > after_id, TimelineRow.kind.in_(kinds))
            .order_by(TimelineRow.id)
            .limit(limit)
        )
        return list(await self.session.execute(query))

    async def reps(self) -> list[RepOnBoard]:
        """Every rep with the number of leads open on them."""
        rows = await self.session.execute(
            select(RepRow, func.coalesce(RepLoadRow.open_leads, 0))
            .outerjoin(RepLoadRow, RepLoadRow.rep_id == RepRow.id)
            .order_by(RepRow.id)
        )
        return [
            RepOnBoard(
                rep_id=rep.id,
                name=rep.data.get("name"),
                team_id=rep.data.get("team"),
                status=rep.data.get("status", "active"),
                open_leads=int(load),
            )
            for rep, load in rows
        ]

    async def webhook_failures(self, limit: int) -> list[Row[Any]]:
        """Deliveries that are retrying after a failure or gave up, newest first; none when the tables are absent.

        A database whose webhook tables are missing (dropped, or restored from before them) still gets a board:
        the query runs in a savepoint, so its failure leaves the rest of the read usable.
        """
        d, e = WebhookDelivery, WebhookEndpoint
        query = (
            select(
                d.id,
                d.endpoint_id,
                d.event_type,
                d.status,
                d.attempt_count,
                d.last_status_code,
                d.last_error,
                _utc(d.last_attempt_at),
                _utc(d.next_attempt_at),
                _utc(d.created_at),
                e.url.label("endpoint_url"),
                e.description.label("endpoint_description"),
                e.enabled.label("endpoint_enabled"),
                e.disabled_reason.label("endpoint_disabled_reason"),
            )
            .outerjoin(e, e.id == d.endpoint_id)
            .where(or_(d.status.in_(_WEBHOOK_FAILED), and_(d.status == "pending", d.attempt_count > 0)))
            .order_by(d.last_attempt_at.desc())
            .limit(limit)
        )
        try:
            async with self.session.begin_nested():
                return list(await self.session.execute(query))
        except (OperationalError, ProgrammingError):
            log.warning("ops.webhook_tables_unreadable")
            return []

    async def compliance_facts(
        self, since: datetime, until: datetime, *, include_test: bool
    ) -> tuple[list[LeadFacts], list[OpenClock]]:
        """What the SLA summary counts: the window's leads with their clocks, and every clock running now."""
        return (
            await self.lead_facts(since, until, include_test=include_test),
            await self.open_clocks(include_test=include_test),
        )

    async def board(self, *, include_test: bool, webhook_limit: int) -> Board:
        """Everything the dashboard shows now, read in one session."""
        return Board(
            open_clocks=await self.open_clocks(include_test=include_test),
            reps=await self.reps(),
            webhook_failures=await self.webhook_failures(webhook_limit) if webhook_limit else [],
        )


def _utc(column: InstrumentedAttribute[Any]) -> Label[Any]:
    """A time column read as an aware UTC datetime (common.db.UtcDateTime), under its own name.

    Routing's tables still declare plain DateTime columns, which SQLite hands back naive; reading them through the
    shared column type here spares every view a time helper.
    """
    return type_coerce(column, UtcDateTime()).label(column.key)
