"""The SLA clock's questions: the near horizon of timers, claims by id, the sweep of overdue timers, escalation
markers on the timer rows, what a notice says, what an escalation carries, and the open-timers counter."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    BindParameter,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
    text,
    update,
)
from sqlalchemy.sql.expression import ColumnElement

from common import sqlprep, sqlprep_session
from routing.store._base import Repository
from routing.store.tables import AssignmentRow, LeadRow, SlaTimer, SlaTimerCount

# What a claim returns of each timer: enough to fire it without loading a row object.
# Timers of these kinds are marked for their follow-up in the claim itself (escalate_at); the caller clears the
# marks it does not want (a breach whose ladder has no step, a clock that no longer runs) in the same transaction.
ESCALATING_KINDS = ("breach", "hold")
# Claims are Core statements on the table, built once with expanding parameters: an ORM-enabled UPDATE with
# RETURNING, rebuilt with a bind parameter per id, cost more Python than the SQLite work of a firing batch.
_T: Table = SlaTimer.__table__  # type: ignore[assignment]
_CLAIMED = (_T.c.id, _T.c.lead_id, _T.c.assignment_id, _T.c.kind, _T.c.fraction, _T.c.due_at)
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_MARKED = case((_T.c.kind.in_(ESCALATING_KINDS), bindparam("now", type_=_T.c.escalate_at.type)), else_=null())
_MARK_FIRED = update(_T).values(fired_at=bindparam("now", type_=_T.c.fired_at.type), escalate_at=_MARKED)
_CLAIM_BY_ID = _MARK_FIRED.where(_T.c.id.in_(_IDS), _T.c.fired_at.is_(None)).returning(*_CLAIMED)
_CLAIM_BY_ID_PG = _MARK_FIRED.where(
    _T.c.id.in_(
        select(_T.c.id)
        .where(_T.c.id.in_(_IDS), _T.c.fired_at.is_(None))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
).returning(*_CLAIMED)
_A, _LEAD = AssignmentRow.__table__, LeadRow.__table__


# Claims and clock facts are handed on as named tuples: a firing batch reads a dozen fields of each row per
# notice, and a SQLAlchemy Row's attribute access costs ~1 us against ~0.05 us for a tuple's.
class ClaimedTimer(NamedTuple):
    id: int
    lead_id: str
    assignment_id: int
    kind: str
    fraction: float | None
    due_at: datetime


class ClockFacts(NamedTuple):
    lead_id: str
    id: int
    rep_id: str | None
    team_id: str | None
    sla_policy: str | None
    sla_due_at: datetime | None
    sla: str | None
    grade: str | None
    source_kind: str | None
    reassignments: int | None


_FACTS = select(
    _A.c.lead_id,
    _A.c.id,
    _A.c.rep_id,
    _A.c.team_id,
    _A.c.sla_policy,
    _A.c.sla_due_at,
    cast(_A.c.decision["sla"], Text).label("sla"),
    _LEAD.c.grade,
    _LEAD.c.source_kind,
    _LEAD.c.reassignments,
).join(_LEAD, _LEAD.c.lead_id == _A.c.lead_id)
_CLOCK_FACTS = _FACTS.where(_A.c.lead_id.in_(_IDS), _A.c.ended_at.is_(None))
# On the inline SQLite driver a firing batch's claim and clock facts take the ids as one JSON array (json_each), run
# at the driver (common.sqlprep): SQLAlchemy's rendering of the expanding list, per-value binding and per-row result
# processing cost ~2-3x SQLite's own work (claim ~25 -> ~10 us, facts ~25 -> ~10 us a timer in a batch of 200). The
# same statements as _CLAIM_BY_ID and _CLOCK_FACTS (a test holds them to the same rows); PostgreSQL runs those.
_JSON_IDS = select(func.json_each(bindparam("ids")).table_valued("value")).scalar_subquery()
_ESCALATING: list[Any] = [literal_column(f"'{kind}'") for kind in ESCALATING_KINDS]  # in the SQL: no expanding list
_SQLITE_CLAIM = sqlprep.Statement(
    update(_T)
    .values(
        fired_at=bindparam("now", type_=_T.c.fired_at.type),
        escalate_at=case((_T.c.kind.in_(_ESCALATING), bindparam("now", type_=_T.c.escalate_at.type)), else_=null()),
    )
    .where(_T.c.id.in_(_JSON_IDS), _T.c.fired_at.is_(None))
    .returning(*_CLAIMED)
)
_SQLITE_CLOCK_FACTS = sqlprep.Statement(_FACTS.where(_A.c.lead_id.in_(_JSON_IDS), _A.c.ended_at.is_(None)))
_CANCEL = update(_T).where(_T.c.id.in_(_IDS)).values(cancelled=True, escalate_at=None)
_CLEAR_MARKS = update(_T).where(_T.c.id.in_(_IDS)).values(escalate_at=None)


def timers_of_lead(lead_id: str) -> ColumnElement[bool]:
    """The condition for one lead's timers: those of its assignments (sla_timers has no lead index, 0016)."""
    return and_(
        SlaTimer.assignment_id.in_(select(AssignmentRow.id).where(AssignmentRow.lead_id == lead_id)),
        SlaTimer.lead_id == lead_id,
    )


class TimerRepository(Repository):
    # -- the near horizon: which timers fall due soon (read outside any transaction that writes) -------------

    async def timers_due_between(self, after: datetime | None, until: datetime, limit: int) -> list[Any]:
        """Open timers with after < due_at <= until, earliest first (id, lead_id, due_at): the horizon's refill
        by due time, on the pending-due index."""
        query = select(SlaTimer.id, SlaTimer.lead_id, SlaTimer.due_at).where(
            SlaTimer.fired_at.is_(None), SlaTimer.due_at <= until
        )
        if after is not None:
            query = query.where(SlaTimer.due_at > after)
        return list((await self.session.execute(query.order_by(SlaTimer.due_at, SlaTimer.id).limit(limit))).all())

    async def timers_written_since(self, after_id: int, up_to_id: int, until: datetime) -> list[Any]:
        """Open timers with after_id < id <= up_to_id due by `until` (id, lead_id, due_at): rows written (by any
        process) after the horizon passed their due time, read by primary key."""
        query = select(SlaTimer.id, SlaTimer.lead_id, SlaTimer.due_at).where(
            SlaTimer.id > after_id, SlaTimer.id <= up_to_id, SlaTimer.fired_at.is_(None), SlaTimer.due_at <= until
        )
        return list((await self.session.execute(query)).all())

    async def last_timer_id(self) -> int:
        return int((await self.session.execute(select(func.max(SlaTimer.id)))).scalar_one_or_none() or 0)

    # -- firing: each timer once, in the transaction that marks it fired ----------------------------------------

    async def claim_timers(self, timer_ids: Collection[int], now: datetime) -> list[ClaimedTimer]:
        """Mark these timers fired, those still open, in one conditional UPDATE, and return them (columns: id,
        lead_id, assignment_id, kind, fraction, due_at) in due order. A timer another process fired, or a
        touch cancelled, is not returned; on PostgreSQL one that another transaction holds is skipped, not
        waited for (the sweep fires it if that transaction did not)."""
        if not timer_ids:
            return []
        ids = sorted(timer_ids)
        rows = await self._sqlite_rows(_SQLITE_CLAIM, {"now": now, "ids": orjson.dumps(ids).decode()})
        if rows is not None:
            return sorted(
                (ClaimedTimer(i, lead, a, kind, frac, _utc(due)) for i, lead, a, kind, frac, due in rows),
                key=lambda t: (t.due_at, t.id),
            )
        statement = _CLAIM_BY_ID_PG if self._on_postgres() else _CLAIM_BY_ID
        claimed = await self.session.execute(statement, {"ids": ids, "now": now})
        return _in_due_order(claimed.all())

    async def claim_due_timers(
        self, now: datetime, limit: int, *, due_by: datetime | None = None
    ) -> list[ClaimedTimer]:
        """Mark up to `limit` open timers due by `due_by` (default: now) fired and return them, in one statement:
        the sweep of what no owner took, and the store-driven path of tests and tools."""
        due: Select[Any] = (
            select(SlaTimer.id)
            .where(SlaTimer.fired_at.is_(None), SlaTimer.due_at <= (due_by or now))
            .order_by(SlaTimer.due_at)
            .limit(limit)
        )
        if self._on_postgres():
            # Two routing processes never claim the same timer; a killed one's rows unlock with its connection.
            due = due.with_for_update(skip_locked=True)
        claimed = await self.session.execute(
            _MARK_FIRED.where(_T.c.id.in_(due.scalar_subquery())).returning(*_CLAIMED), {"now": now}
        )
        return _in_due_order(claimed.all())

    async def cancel_timers(self, timer_ids: Collection[int]) -> None:
        """Claimed timers whose clock no longer runs: cancelled, with no follow-up."""
        if timer_ids:
            await self.session.execute(_CANCEL, {"ids": sorted(timer_ids)})

    # -- escalation markers: a fired timer's follow-up still to be made -------------------------------------

    async def clear_escalations(self, timer_ids: Collection[int]) -> None:
        """These just-claimed timers need no follow-up after all (a breach whose ladder has no step): their mark,
        set by the claim, goes (in the claim's transaction, so nobody sees it)."""
        if timer_ids:
            await self.session.execute(_CLEAR_MARKS, {"ids": sorted(timer_ids)})

    async def escalation_due(self, now: datetime) -> bool:
        """Whether any fired timer waits for its escalation (read before taking the routing lock)."""
        query = select(SlaTimer.id).where(SlaTimer.escalate_at.is_not(None), SlaTimer.escalate_at <= now)
        return (await self.session.execute(query.limit(1))).first() is not None

    async def due_escalations(self, now: datetime, limit: int) -> list[SlaTimer]:
        """Up to `limit` timers waiting for their escalation, oldest first (the caller clears each marker in
        its transaction; on PostgreSQL another process's claimed rows are skipped)."""
        query = (
            select(SlaTimer)
            .where(SlaTimer.escalate_at.is_not(None), SlaTimer.escalate_at <= now)
            .order_by(SlaTimer.escalate_at, SlaTimer.id)
            .limit(limit)
        )
        if self._on_postgres():
            query = query.with_for_update(skip_locked=True)
        return list((await self.session.execute(query)).scalars())

    async def pending_escalations(self, lead_id: str) -> list[SlaTimer]:
        """This lead's fired timers whose escalation is still to be made."""
        query = select(SlaTimer).where(timers_of_lead(lead_id), SlaTimer.escalate_at.is_not(None))
        return list((await self.session.execute(query.order_by(SlaTimer.id))).scalars())

    # -- what notices and escalations say ------------------------------------------------------------------

    async def clock_facts(self, lead_ids: Collection[str]) -> dict[str, ClockFacts]:
        """What an SLA notice says of each lead's running assignment, by lead id (no row objects), with what its
        breach's ladder step depends on: `sla`, the policy kept with it as JSON text (a burst's thousands of
        breaches share a few policies, parsed once each), and the lead's `reassignments` (steps taken)."""
        if not lead_ids:
            return {}
        ids = sorted(lead_ids)
        raw = await self._sqlite_rows(_SQLITE_CLOCK_FACTS, {"ids": orjson.dumps(ids).decode()})
        if raw is not None:
            return {row[0]: ClockFacts._make((*row[:5], row[5] and _utc(row[5]), *row[6:])) for row in raw}
        rows = await self.session.execute(_CLOCK_FACTS, {"ids": ids})
        return {row[0]: ClockFacts._make(row) for row in rows}

    async def _sqlite_rows(self, statement: sqlprep.Statement, params: Mapping[str, Any]) -> list[Any] | None:
        """The rows of `statement` run at the inline SQLite driver in this session's transaction (values as SQLite
        holds them: times as text); None on any other dialect."""
        return await sqlprep_session.sqlite_fetch(self.session, statement, params)

    async def next_due(self) -> datetime | None:
        return (
            await self.session.execute(select(func.min(SlaTimer.due_at)).where(SlaTimer.fired_at.is_(None)))
        ).scalar_one_or_none()

    async def pending_timers(self, assignment_id: int) -> list[SlaTimer]:
        return list(
            (
                await self.session.execute(
                    select(SlaTimer).where(SlaTimer.assignment_id == assignment_id, SlaTimer.fired_at.is_(None))
                )
            ).scalars()
        )

    # -- the open-timers counter (kept by triggers, migration 0013) -----------------------------------------

    async def open_timers(self) -> int:
        """Timers waiting to fire (SLA warnings, breaches and holds), from the counter the writes keep: a few
        rows read, never the table counted."""
        return int((await self.session.execute(select(func.coalesce(func.sum(SlaTimerCount.open), 0)))).scalar_one())

    async def fold_timer_counts(self) -> None:
        """PostgreSQL: fold the counter rows of server processes that are gone into shard 0 (they would only
        pile up); a statement a counter, taking no lock a writer waits for (a live process's row is left alone)."""
        if not self._on_postgres():
            return
        await self.session.execute(
            text(
                """
                WITH gone AS (
                    DELETE FROM sla_timer_counts
                    WHERE shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity)
                    RETURNING open
                )
                UPDATE sla_timer_counts SET open = open + (SELECT coalesce(sum(open), 0) FROM gone) WHERE shard = 0
                """
            )
        )
        # The reps' worked-open counters (migration 0018) are sharded the same way: a gone process's rows fold
        # into each rep's shard 0.
        await self.session.execute(
            text(
                """
                WITH gone AS (
                    DELETE FROM rep_worked_counts
                    WHERE shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity)
                    RETURNING rep_id, worked
                )
                INSERT INTO rep_worked_counts (rep_id, shard, worked)
                SELECT rep_id, 0, sum(worked) FROM gone GROUP BY rep_id HAVING sum(worked) <> 0
                ON CONFLICT (rep_id, shard) DO UPDATE SET worked = rep_worked_counts.worked + EXCLUDED.worked
                """
            )
        )


def _in_due_order(rows: Sequence[Any]) -> list[ClaimedTimer]:
    """RETURNING keeps no order: fire in due order, so notices and timeline rows follow the clock."""
    return sorted(map(ClaimedTimer._make, rows), key=lambda row: (row.due_at, row.id))


def _utc(text: str) -> datetime:
    """A time column's SQLite text (UTC, no zone), as UtcDateTime reads it back: an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
