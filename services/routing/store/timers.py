"""The SLA clock's questions: due timers claimed in bulk, what a notice says, what an escalation carries."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from routing.store._base import Repository
from routing.store.tables import ESCALATE, AssignmentRow, LeadRow, SlaTimer


class TimerRepository(Repository):
    async def add_escalation_markers(self, markers: Iterable[Mapping[str, Any]]) -> None:
        """Durable escalation markers (lead_id, assignment_id, kind, due_at), one statement for a whole burst."""
        markers = list(markers)
        if markers:
            await self.session.execute(insert(SlaTimer.__table__), markers)  # type: ignore[arg-type]

    async def due_timers(self, now: datetime, limit: int, *, escalations: bool = False) -> list[SlaTimer]:
        """Due clock timers (warnings, breaches, holds), or with `escalations` the pending escalation markers."""
        kind = SlaTimer.kind == ESCALATE if escalations else SlaTimer.kind != ESCALATE
        query = (
            select(SlaTimer)
            .where(SlaTimer.fired_at.is_(None), SlaTimer.due_at <= now, kind)
            .order_by(SlaTimer.due_at)
            .limit(limit)
        )
        if self._on_postgres():
            # Two routing processes never claim the same timer; a killed one's rows unlock with its connection.
            query = query.with_for_update(skip_locked=True)
        return list((await self.session.execute(query)).scalars())

    async def claim_due_timers(self, now: datetime, limit: int) -> list[Any]:
        """Mark up to `limit` due clock timers fired and return them, in one statement: a burst of thousands is
        claimed without loading a row object each. Columns: id, lead_id, assignment_id, kind, fraction, due_at."""
        due = (
            select(SlaTimer.id)
            .where(SlaTimer.fired_at.is_(None), SlaTimer.due_at <= now, SlaTimer.kind != ESCALATE)
            .order_by(SlaTimer.due_at)
            .limit(limit)
        )
        if self._on_postgres():
            # Two routing processes never claim the same timer; a killed one's rows unlock with its connection.
            due = due.with_for_update(skip_locked=True)
        claimed = await self.session.execute(
            update(SlaTimer)
            .where(SlaTimer.id.in_(due.scalar_subquery()))
            .values(fired_at=now)
            .returning(
                SlaTimer.id, SlaTimer.lead_id, SlaTimer.assignment_id, SlaTimer.kind, SlaTimer.fraction, SlaTimer.due_at
            )
            .execution_options(synchronize_session=False)
        )
        # RETURNING keeps no order: fire in due order, so notices and timeline rows follow the clock.
        return sorted(claimed.all(), key=lambda row: (row.due_at, row.id))

    async def cancel_timers(self, timer_ids: Collection[int]) -> None:
        if timer_ids:
            await self.session.execute(
                update(SlaTimer)
                .where(SlaTimer.id.in_(timer_ids))
                .values(cancelled=True)
                .execution_options(synchronize_session=False)
            )

    async def clock_facts(self, lead_ids: Collection[str]) -> dict[str, Any]:
        """What an SLA notice says of each lead's running assignment, by lead id (no row objects, no JSON)."""
        if not lead_ids:
            return {}
        a, lead = AssignmentRow.__table__, LeadRow.__table__
        rows = await self.session.execute(
            select(
                a.c.lead_id,
                a.c.id,
                a.c.rep_id,
                a.c.team_id,
                a.c.sla_policy,
                a.c.sla_due_at,
                lead.c.grade,
                lead.c.source_kind,
            )
            .join(lead, lead.c.lead_id == a.c.lead_id)
            .where(a.c.lead_id.in_(sorted(lead_ids)), a.c.ended_at.is_(None))
        )
        return {row.lead_id: row for row in rows}

    async def escalation_facts(self, assignment_ids: Collection[int]) -> dict[int, tuple[Any, int]]:
        """By assignment id: the SLA policy kept with it (its `sla` in the decision) and its lead's ladder steps."""
        if not assignment_ids:
            return {}
        a, lead = AssignmentRow.__table__, LeadRow.__table__
        rows = await self.session.execute(
            select(a.c.id, a.c.decision["sla"].label("sla"), lead.c.reassignments)
            .join(lead, lead.c.lead_id == a.c.lead_id)
            .where(a.c.id.in_(sorted(assignment_ids)))
        )
        return {row.id: (row.sla, row.reassignments or 0) for row in rows}

    async def next_due(self) -> datetime | None:
        return (
            await self.session.execute(select(func.min(SlaTimer.due_at)).where(SlaTimer.fired_at.is_(None)))
        ).scalar_one_or_none()

    async def open_timers(self) -> int:
        """Timers waiting to fire (SLA warnings, breaches and holds)."""
        return int((await self.session.execute(select(func.count()).where(SlaTimer.fired_at.is_(None)))).scalar_one())

    async def pending_timers(self, assignment_id: int) -> list[SlaTimer]:
        return list(
            (
                await self.session.execute(
                    select(SlaTimer).where(SlaTimer.assignment_id == assignment_id, SlaTimer.fired_at.is_(None))
                )
            ).scalars()
        )

    async def escalation_due(self, now: datetime) -> bool:
        """Whether any detected breach waits for its escalation (read before taking the routing lock)."""
        query = select(SlaTimer.id).where(
            SlaTimer.fired_at.is_(None), SlaTimer.due_at <= now, SlaTimer.kind == ESCALATE
        )
        return (await self.session.execute(query.limit(1))).first() is not None

    async def pending_escalations(self, lead_id: str) -> list[SlaTimer]:
        """This lead's breaches detected but not yet escalated."""
        query = select(SlaTimer).where(
            SlaTimer.lead_id == lead_id, SlaTimer.kind == ESCALATE, SlaTimer.fired_at.is_(None)
        )
        return list((await self.session.execute(query)).scalars())
