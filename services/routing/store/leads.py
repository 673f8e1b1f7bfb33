"""The leads' questions: a lead, its assignments and timeline, the case an action needs, windows for backtests."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select

from routing.domain.lifecycle import CurrentAssignment, LeadCase, Outcome, PendingTimer, sla_of
from routing.store._base import Repository
from routing.store.batch_state import BatchState, read_batch, read_seen, reserve_ids
from routing.store.decision_rows import AssignmentValues, LeadValues, TimelineValues, TimerValues, write_rows
from routing.store.roster import write_loads, write_positions
from routing.store.tables import AssignmentRow, ErasedLead, LeadRow, SlaTimer, TimelineRow
from routing.store.timers import timers_of_lead


@dataclass
class CaseRecord:
    """The rows of one lead's case, loaded together: the lead, its assignments (oldest first), its timers that
    have not fired, and the touches since its first one. `case()` is the pure aggregate they stand for."""

    lead: LeadRow
    assignments: list[AssignmentRow]
    timers: list[SlaTimer]
    touches_since_first: int

    @property
    def current(self) -> AssignmentRow | None:
        return next((a for a in self.assignments if a.ended_at is None), None)

    @property
    def escalations(self) -> list[SlaTimer]:
        """Breaches detected but not yet escalated: they happened first, so they are escalated before the action."""
        return [t for t in self.timers if t.escalate_at is not None]

    def case(self) -> LeadCase:
        current = self.current
        return LeadCase(
            lead_id=self.lead.lead_id,
            status=self.lead.status,
            routed_at=self.lead.routed_at,
            first_touch_at=self.lead.first_touch_at,
            erased=self.lead.erased_at is not None,
            current=CurrentAssignment(current.id, current.rep_id, current.sla_due_at, sla_of(current.decision))
            if current is not None
            else None,
            pending=tuple(
                PendingTimer(t.id, t.kind)
                for t in self.timers
                if current is not None and t.assignment_id == current.id and t.fired_at is None
            ),
            tried_reps=frozenset(a.rep_id for a in self.assignments if a.rep_id),
            touches_since_first=self.touches_since_first,
        )


class LeadRepository(Repository):
    async def load_case(self, lead_id: str) -> CaseRecord | None:
        """One lead's case for an action: the lead, its assignments, its pending timers, its touches since the
        first one (a later touch counts them against the follow-up clock). None when routing never saw the lead."""
        lead = await self.session.get(LeadRow, lead_id)
        if lead is None:
            return None
        # Open timers and fired ones whose escalation is pending; on PostgreSQL locked, so the timer loop (which
        # takes no routing lock) skips what this action is about to cancel, and this waits for what it fires.
        timers = (
            select(SlaTimer)
            .where(timers_of_lead(lead_id), or_(SlaTimer.fired_at.is_(None), SlaTimer.escalate_at.is_not(None)))
            .order_by(SlaTimer.id)
        )
        if self._on_postgres():
            timers = timers.with_for_update()
        touches = 0
        if lead.first_touch_at is not None:
            touches = await self.count_timeline(lead_id, "touched", since=lead.first_touch_at)
        return CaseRecord(
            lead,
            await self.assignments(lead_id),
            list((await self.session.execute(timers)).scalars()),
            touches,
        )

    def save_case(self, record: CaseRecord, outcome: Outcome, now: datetime) -> None:
        """Write what an action produced onto the case's rows (flushed with the transaction)."""
        lead, current = record.lead, record.current
        lead.status = outcome.status
        if outcome.first_touch_at is not None:
            lead.first_touch_at = outcome.first_touch_at
        cancel = set(outcome.cancel_timers)
        for timer in record.timers:
            if timer.id in cancel:
                timer.fired_at, timer.cancelled = now, True
        if current is not None:
            for new in outcome.new_timers:
                self.session.add(
                    SlaTimer(lead_id=lead.lead_id, assignment_id=current.id, kind=new.kind, due_at=new.due_at)
                )
            if outcome.end_assignment:
                current.ended_at, current.end_reason = now, outcome.end_assignment
        for kind, detail in outcome.timeline:
            self.session.add(TimelineRow(lead_id=lead.lead_id, at=now, kind=kind, detail=detail))

    async def mark_erased(self, lead_id: str, now: datetime) -> None:
        """Remember an erasure, so a lead scored after it is routed without personal data."""
        if await self.session.get(ErasedLead, lead_id) is None:
            self.session.add(ErasedLead(lead_id=lead_id, erased_at=now))

    async def add_timeline_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Many timeline rows in one statement (a burst of SLA notices)."""
        rows = list(rows)
        if rows:
            await self.session.execute(insert(TimelineRow.__table__), rows)  # type: ignore[arg-type]

    async def lead_team(self, lead_id: str) -> str | None:
        """The team a lead is with, read as a value (no row is loaded before the caller's locks are taken)."""
        query = select(LeadRow.team_id).where(LeadRow.lead_id == lead_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def lead(self, lead_id: str) -> LeadRow | None:
        return await self.session.get(LeadRow, lead_id)

    async def open_lead_in_thread(self, thread_id: str, closed: Collection[str]) -> LeadRow | None:
        """The person's lead that is still open (not closed, merged or erased), the latest if there are several."""
        query = (
            select(LeadRow)
            .where(
                or_(LeadRow.thread_id == thread_id, LeadRow.lead_id == thread_id),
                LeadRow.status.not_in(list(closed)),
                LeadRow.merged_into.is_(None),
                LeadRow.erased_at.is_(None),
            )
            .order_by(LeadRow.routed_at.desc(), LeadRow.lead_id)
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def seen(self, lead_id: str) -> tuple[bool, bool]:
        """(routed already, erased already), in one round trip and without loading a row (the consumer's
        question for every new lead)."""
        routed = select(LeadRow.lead_id).where(LeadRow.lead_id == lead_id).exists()
        erased = select(ErasedLead.lead_id).where(ErasedLead.lead_id == lead_id).exists()
        row = (await self.session.execute(select(routed, erased))).one()
        return bool(row[0]), bool(row[1])

    async def seen_many(self, lead_ids: Collection[str]) -> tuple[set[str], set[str]]:
        """Of these leads, (those routed already, those erased already): a consumer batch's one question."""
        if not lead_ids:
            return set(), set()
        rows = await self._on_connection(lambda connection: read_seen(connection, lead_ids))
        return {lead_id for lead_id, was_routed in rows if was_routed}, {i for i, was in rows if not was}

    async def insert_decisions(
        self,
        leads: Sequence[LeadValues],
        assignments: Sequence[AssignmentValues],
        timers: Sequence[TimerValues],
        timeline: Sequence[TimelineValues],
        *,
        rotation: Mapping[str, Mapping[str, int]] | None = None,
        loads: Mapping[str, tuple[int, str | None, int]] | None = None,
        dropped: Collection[str] = (),
    ) -> None:
        """A batch of routing decisions in four executemany statements (ids are given: nothing is read back), on
        the session's connection, the rows as tuples (routing.store.decision_rows), none of the ORM's
        per-statement work. With `rotation` and `loads`, the teams' rotation states and the reps' load deltas the
        batch moved go in the same call (RosterRepository.add_loads; the rotation as roster.write_positions: the
        teams in `dropped`, whose stored rows name a rep the state no longer has, replaced whole, the others' rows
        updated in place)."""
        if self.session.new or self.session.dirty or self.session.deleted:
            await self.session.flush()  # rows the ORM holds go first, as the session's own execute would send them

        def write(connection: Connection) -> None:
            write_rows(connection, leads, assignments, timers, timeline)
            if rotation:
                write_positions(connection, rotation, dropped)
            if loads:
                write_loads(connection, loads)

        await self._on_connection(write)

    async def escalation_teams(self, now: datetime, limit: int) -> set[str]:
        """The teams of the leads whose escalations are due, read without locks: the team locks to take before
        the escalations are claimed."""
        due = (
            select(SlaTimer.lead_id)
            .where(SlaTimer.escalate_at.is_not(None), SlaTimer.escalate_at <= now)
            .order_by(SlaTimer.escalate_at, SlaTimer.id)
            .limit(limit)
        )
        query = select(LeadRow.team_id).where(LeadRow.lead_id.in_(due.scalar_subquery())).distinct()
        return {team for team in (await self.session.execute(query)).scalars() if team}

    async def leads(self, lead_ids: set[str]) -> dict[str, LeadRow]:
        if not lead_ids:
            return {}
        rows = await self.session.execute(select(LeadRow).where(LeadRow.lead_id.in_(sorted(lead_ids))))
        return {row.lead_id: row for row in rows.scalars()}

    async def current_assignments(self, lead_ids: set[str]) -> dict[str, AssignmentRow]:
        if not lead_ids:
            return {}
        query = select(AssignmentRow).where(
            AssignmentRow.lead_id.in_(sorted(lead_ids)), AssignmentRow.ended_at.is_(None)
        )
        return {row.lead_id: row for row in (await self.session.execute(query)).scalars()}

    async def current_assignment(self, lead_id: str) -> AssignmentRow | None:
        return (
            await self.session.execute(
                select(AssignmentRow).where(AssignmentRow.lead_id == lead_id, AssignmentRow.ended_at.is_(None))
            )
        ).scalar_one_or_none()

    async def assignments(self, lead_id: str) -> list[AssignmentRow]:
        return list(
            (
                await self.session.execute(
                    select(AssignmentRow).where(AssignmentRow.lead_id == lead_id).order_by(AssignmentRow.id)
                )
            ).scalars()
        )

    async def timeline(self, lead_id: str) -> list[TimelineRow]:
        return list(
            (
                await self.session.execute(
                    select(TimelineRow).where(TimelineRow.lead_id == lead_id).order_by(TimelineRow.id)
                )
            ).scalars()
        )

    async def next_assignment_id(self) -> int:
        """A new assignment id from the database's own counter, before the row is written (its timers, timeline
        and event carry it): distinct across concurrent transactions, and never reused, lock or no lock."""
        return (await self.reserve_assignment_ids(1))[0]

    async def reserve_assignment_ids(self, count: int) -> list[int]:
        """`count` new assignment ids from the database's counter in one statement (a batch's decisions)."""
        if count <= 0:
            return []
        return await self._on_connection(lambda connection: reserve_ids(connection, count))

    async def batch_state(
        self, lead_ids: Collection[str], *, state: bool, worked: bool = True, version: bool = False
    ) -> BatchState:
        """A routing batch's questions after its locks, in one call to the connection: which of these leads are
        routed or erased already, new assignment ids for the others, and (`state`) every rep's load, every team's
        rotation and per rep the open leads someone has touched already (`worked`; else none), and (`version`) the
        stored roster version."""
        read = partial(read_batch, lead_ids=lead_ids, state=state, worked=worked, version=version)
        return await self._on_connection(read)

    async def count_timeline(self, lead_id: str, kind: str, *, since: datetime) -> int:
        """How many timeline entries of one kind a lead has had since a moment (touches for a follow-up clock)."""
        query = select(func.count()).where(
            TimelineRow.lead_id == lead_id, TimelineRow.kind == kind, TimelineRow.at >= since
        )
        return int((await self.session.execute(query)).scalar_one())

    async def count_routed_between(self, since: datetime, until: datetime) -> int:
        return int(
            (
                await self.session.execute(
                    select(func.count()).where(
                        LeadRow.routed_at >= since, LeadRow.routed_at < until, LeadRow.merged_into.is_(None)
                    )
                )
            ).scalar_one()
        )

    async def routed_between(self, since: datetime, until: datetime) -> list[LeadRow]:
        """Leads first routed in [since, until), in routing order (a backtest's input); a repeat that joined an
        open lead was never routed itself and is left out."""
        query = (
            select(LeadRow)
            .where(LeadRow.routed_at >= since, LeadRow.routed_at < until, LeadRow.merged_into.is_(None))
            .order_by(LeadRow.routed_at, LeadRow.lead_id)
        )
        return list((await self.session.execute(query)).scalars())

    async def closed_between(self, since: datetime, until: datetime) -> dict[str, datetime]:
        """When each lead routed in the window was converted or disqualified, if it was."""
        query = (
            select(AssignmentRow.lead_id, AssignmentRow.ended_at)
            .join(LeadRow, LeadRow.lead_id == AssignmentRow.lead_id)
            .where(
                LeadRow.routed_at >= since,
                LeadRow.routed_at < until,
                AssignmentRow.end_reason.in_(("converted", "disqualified")),
            )
        )
        return {lead_id: ended for lead_id, ended in (await self.session.execute(query)).all() if ended is not None}

    async def current_reps(self, lead_ids: set[str]) -> dict[str, str]:
        """The rep each of these leads is with now (leads with nobody are left out)."""
        found: dict[str, str] = {}
        ids = sorted(lead_ids)
        for start in range(0, len(ids), 500):
            query = select(LeadRow.lead_id, LeadRow.current_rep_id).where(
                LeadRow.lead_id.in_(ids[start : start + 500]), LeadRow.current_rep_id.is_not(None)
            )
            found.update({lead_id: rep_id for lead_id, rep_id in (await self.session.execute(query)).all() if rep_id})
        return found
