"""Ops read side on routing: SLA breaches, compliance, a live stream of SLA events, and the /ops dashboard.

Everything here reads and nothing writes. Queries live in `OpsRepository` (a read model over routing's tables),
the arithmetic in small pure functions below it, and the routes at the end stay thin.

How compliance is counted (the SLA clock is routing's; see handlers.py):
- a *clock* is one assignment that carried an SLA deadline. It is **met** when the rep stopped it by the deadline
  (first touch, convert or disqualify), **missed** when it breached (or was stopped late), and undecided while it
  runs or when it ended otherwise (rejected, hold ended).
- a *lead* takes the outcome of its first decided clock, so a lead that breached and was then touched in time by
  the next rep still counts as missed. Reps are measured per clock: a breach counts against the rep who held it.
- time to first touch is from routing to the first touch for leads, and from the assignment for reps.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import ColumnElement, Row, and_, column, exists, func, or_, select, table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from starlette.background import BackgroundTask

from common.logging import scrub_text
from common.web import (
    OPS_COOKIE,
    OPS_COOKIE_MAX_AGE_S,
    HandoffRoute,
    Ops,
    has_ops_access,
    is_ops_token,
    issue_ops_cookie,
    ops_credential,
)
from routing.handlers import aware
from routing.store import AssignmentRow, LeadRow, RepLoadRow, RepRow, SlaTimer, TimelineRow

router = APIRouter(tags=["ops"], route_class=HandoffRoute)

STATIC = Path(__file__).parent / "static"
SLA_KINDS = ("sla_warning", "sla_breached")
# What the dashboard follows live besides the SLA events themselves: clocks starting, moving and stopping.
STREAM_KINDS = (
    "assigned",
    "reassigned",
    "touched",
    "accepted",
    "rejected",
    "converted",
    "disqualified",
    *SLA_KINDS,
)
DEFAULT_WINDOW = timedelta(hours=24)

Outcome = Literal["met", "missed"]


# -- read model ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlaClock:
    """One assignment that carried an SLA deadline."""

    assignment_id: int
    lead_id: str
    rep_id: str | None
    team_id: str | None
    assigned_at: datetime
    due_at: datetime
    ended_at: datetime | None
    end_reason: str | None


@dataclass(frozen=True)
class LeadFacts:
    """A routed lead with every SLA clock it had, oldest first."""

    lead_id: str
    routed_at: datetime
    first_touch_at: datetime | None
    team_id: str | None
    source_kind: str | None
    source_id: str | None
    grade: str | None
    clocks: tuple[SlaClock, ...] = ()


@dataclass(frozen=True)
class OpenClock:
    """A lead whose SLA clock runs now: its current assignment has a breach timer that has not fired."""

    lead_id: str
    assignment_id: int
    rep_id: str | None
    team_id: str | None
    grade: str | None
    source_kind: str | None
    source_id: str | None
    status: str
    assigned_at: datetime
    due_at: datetime
    warned: bool

    def at_risk(self, now: datetime, within: timedelta) -> bool:
        """Past a warning, or due within the horizon (or overdue and about to breach)."""
        return self.warned or self.due_at <= now + within

    def to_dict(self, now: datetime, within: timedelta) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "assignment_id": self.assignment_id,
            "rep_id": self.rep_id,
            "team_id": self.team_id,
            "grade": self.grade,
            "source_kind": self.source_kind,
            "source_id": self.source_id,
            "status": self.status,
            "assigned_at": _iso(self.assigned_at),
            "due_at": _iso(self.due_at),
            "seconds_left": round((self.due_at - now).total_seconds(), 1),
            "warned": self.warned,
            "at_risk": self.at_risk(now, within),
        }


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
                LeadRow.routed_at,
                LeadRow.first_touch_at,
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
                AssignmentRow.assigned_at,
                AssignmentRow.sla_due_at,
                AssignmentRow.ended_at,
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
                    assigned_at=_utc(c.assigned_at),
                    due_at=_utc(c.sla_due_at),
                    ended_at=aware(c.ended_at),
                    end_reason=c.end_reason,
                )
            )
        return [
            LeadFacts(
                lead_id=r.lead_id,
                routed_at=_utc(r.routed_at),
                first_touch_at=aware(r.first_touch_at),
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
                SlaTimer.due_at,
                AssignmentRow.rep_id,
                AssignmentRow.team_id,
                AssignmentRow.assigned_at,
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
                assigned_at=_utc(r.assigned_at),
                due_at=_utc(r.due_at),
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
                TimelineRow.at,
                TimelineRow.detail,
                LeadRow.grade,
                LeadRow.source_kind,
                LeadRow.source_id,
                LeadRow.status,
                LeadRow.current_rep_id,
                LeadRow.first_touch_at,
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
                TimelineRow.at,
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

    async def reps(self) -> list[tuple[RepRow, int]]:
        """Every rep with the number of leads open on them."""
        rows = await self.session.execute(
            select(RepRow, func.coalesce(RepLoadRow.open_leads, 0))
            .outerjoin(RepLoadRow, RepLoadRow.rep_id == RepRow.id)
            .order_by(RepRow.id)
        )
        return [(rep, int(load)) for rep, load in rows]

    async def webhook_failures(self, limit: int) -> list[dict[str, Any]]:
        """Deliveries that are retrying after a failure or gave up, newest first; none when webhooks are absent.

        The webhook tables belong to the delivery feature; this reads whichever of its columns exist, so the
        dashboard keeps working on a database migrated before (or without) them.
        """
        columns = await self.session.run_sync(_webhook_columns)
        deliveries = columns.get("webhook_deliveries", set())
        if not {"id", "status"} <= deliveries:
            return []
        d = table("webhook_deliveries", *(column(name) for name in sorted(deliveries)))
        wanted = [
            "id",
            "endpoint_id",
            "event_type",
            "status",
            "attempt_count",
            "last_status_code",
            "last_error",
            "last_attempt_at",
            "next_attempt_at",
            "created_at",
        ]
        selected = [d.c[name] for name in wanted if name in deliveries]
        failing: ColumnElement[bool] = d.c.status.in_(_WEBHOOK_FAILED)
        if "attempt_count" in deliveries:
            failing = or_(failing, and_(d.c.status == "pending", d.c.attempt_count > 0))
        query = select(*selected).where(failing)
        endpoints = columns.get("webhook_endpoints", set())
        if "endpoint_id" in deliveries and "id" in endpoints:
            e = table("webhook_endpoints", *(column(name) for name in sorted(endpoints)))
            extra = [
                e.c[name].label(f"endpoint_{name}")
                for name in ("url", "description", "enabled", "disabled_reason")
                if name in endpoints
            ]
            query = query.add_columns(*extra).outerjoin(e, e.c.id == d.c.endpoint_id)
        order = next((name for name in ("last_attempt_at", "created_at") if name in deliveries), "id")
        query = query.order_by(d.c[order].desc()).limit(limit)
        return [_webhook_failure(dict(r._mapping)) for r in await self.session.execute(query)]


_WEBHOOK_FAILED = ("failed", "exhausted", "dead")


def _webhook_columns(sync_session: Any) -> dict[str, set[str]]:
    from sqlalchemy import inspect

    inspector = inspect(sync_session.connection())
    names = set(inspector.get_table_names())
    return {
        name: {c["name"] for c in inspector.get_columns(name)}
        for name in ("webhook_deliveries", "webhook_endpoints")
        if name in names
    }


def _webhook_failure(row: dict[str, Any]) -> dict[str, Any]:
    url = row.get("endpoint_url")
    error = row.get("last_error")
    status = row.get("status")
    return {
        "delivery_id": row.get("id"),
        "endpoint_id": row.get("endpoint_id"),
        # Only the host: a receiver's URL may carry a token in its path or query.
        "endpoint_host": urlsplit(url).hostname if isinstance(url, str) else None,
        "endpoint_description": row.get("endpoint_description"),
        "endpoint_enabled": row.get("endpoint_enabled"),
        "endpoint_disabled_reason": row.get("endpoint_disabled_reason"),
        "event_type": row.get("event_type"),
        "state": "retrying" if status == "pending" else "failed",
        "status": status,
        "attempts": row.get("attempt_count"),
        "last_status_code": row.get("last_status_code"),
        "last_error": scrub_text(str(error))[:200] if error else None,
        "last_attempt_at": _iso(_as_time(row.get("last_attempt_at"))),
        "next_attempt_at": _iso(_as_time(row.get("next_attempt_at"))),
    }


# -- pure arithmetic ----------------------------------------------------------------------------------------------


def clock_outcome(clock: SlaClock, first_touch_at: datetime | None) -> Outcome | None:
    """met or missed once the clock is decided, None while it runs or when it ended without a verdict."""
    if clock.end_reason == "sla_breach":
        return "missed"
    stopped_at: datetime | None = None
    if (
        first_touch_at is not None
        and clock.assigned_at <= first_touch_at
        and (clock.ended_at is None or first_touch_at <= clock.ended_at)
    ):
        stopped_at = first_touch_at
    elif clock.end_reason in ("converted", "disqualified"):
        stopped_at = clock.ended_at
    if stopped_at is None:
        return None
    return "met" if stopped_at <= clock.due_at else "missed"


def lead_outcome(lead: LeadFacts) -> tuple[Outcome | None, SlaClock | None]:
    """The first decided clock of the lead decides it."""
    for clock in sorted(lead.clocks, key=lambda c: (c.assigned_at, c.assignment_id)):
        outcome = clock_outcome(clock, lead.first_touch_at)
        if outcome is not None:
            return outcome, clock
    return None, None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 3)


@dataclass
class Tally:
    """Counts and touch times of one group (the whole window, a team, a rep, a source, a time bucket)."""

    leads: int = 0
    met: int = 0
    missed: int = 0
    touch_seconds: list[float] = field(default_factory=list)
    open: int = 0
    at_risk: int = 0

    def add(self, outcome: Outcome | None, touch_s: float | None) -> None:
        self.leads += 1
        if outcome == "met":
            self.met += 1
        elif outcome == "missed":
            self.missed += 1
        if touch_s is not None:
            self.touch_seconds.append(touch_s)

    def to_dict(self) -> dict[str, Any]:
        decided = self.met + self.missed
        return {
            "leads": self.leads,
            "met": self.met,
            "missed": self.missed,
            "undecided": self.leads - decided,
            "within_sla_share": round(self.met / decided, 4) if decided else None,
            "touched": len(self.touch_seconds),
            "time_to_first_touch_p50_s": percentile(self.touch_seconds, 0.5),
            "time_to_first_touch_p90_s": percentile(self.touch_seconds, 0.9),
            "open": self.open,
            "at_risk": self.at_risk,
        }


def summarize(
    leads: Iterable[LeadFacts],
    open_clocks: Iterable[OpenClock],
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    at_risk_within: timedelta,
    buckets: int,
) -> dict[str, Any]:
    """Compliance and time to first touch over the window, by team, rep and source, and as a time series."""
    overall = Tally()
    teams: dict[str | None, Tally] = {}
    reps: dict[str | None, Tally] = {}
    sources: dict[tuple[str | None, str | None], Tally] = {}
    width = (until - since) / buckets
    series = [Tally() for _ in range(buckets)]
    for lead in leads:
        outcome, deciding = lead_outcome(lead)
        touch_s = _seconds(lead.routed_at, lead.first_touch_at)
        overall.add(outcome, touch_s)
        team = (deciding or (lead.clocks[0] if lead.clocks else None) or lead).team_id
        teams.setdefault(team, Tally()).add(outcome, touch_s)
        sources.setdefault((lead.source_kind, lead.source_id), Tally()).add(outcome, touch_s)
        index = min(buckets - 1, max(0, int((lead.routed_at - since) / width)))
        series[index].add(outcome, touch_s)
        for clock in lead.clocks:
            clock_result = clock_outcome(clock, lead.first_touch_at)
            touched_here = (
                lead.first_touch_at is not None
                and clock.assigned_at <= lead.first_touch_at
                and (clock.ended_at is None or lead.first_touch_at <= clock.ended_at)
            )
            rep_touch = _seconds(clock.assigned_at, lead.first_touch_at) if touched_here else None
            reps.setdefault(clock.rep_id, Tally()).add(clock_result, rep_touch)
    for running in open_clocks:
        risky = running.at_risk(now, at_risk_within)
        for tally in (
            overall,
            teams.setdefault(running.team_id, Tally()),
            reps.setdefault(running.rep_id, Tally()),
            sources.setdefault((running.source_kind, running.source_id), Tally()),
        ):
            tally.open += 1
            tally.at_risk += risky
    return {
        "overall": overall.to_dict(),
        "by_team": [{"team_id": k, **v.to_dict()} for k, v in sorted(teams.items(), key=_key_order)],
        "by_rep": [{"rep_id": k, **v.to_dict()} for k, v in sorted(reps.items(), key=_key_order)],
        "by_source": [
            {"source_kind": kind, "source_id": sid, **v.to_dict()}
            for (kind, sid), v in sorted(sources.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))
        ],
        "series": [
            {
                "start": _iso(since + width * i),
                "end": _iso(since + width * (i + 1)),
                **{k: v for k, v in tally.to_dict().items() if k not in ("open", "at_risk")},
            }
            for i, tally in enumerate(series)
        ],
    }


def _key_order(item: tuple[str | None, Any]) -> tuple[bool, str]:
    return (item[0] is None, item[0] or "")


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else max(0.0, (end - start).total_seconds())


def stream_item(row: Row[Any]) -> dict[str, Any]:
    """What a stream subscriber sees of a timeline row: ids, times, who and which clock; never personal data."""
    detail = row.detail or {}
    return {
        "event_id": row.id,
        "kind": row.kind,
        "at": _iso(aware(row.at)),
        "lead_id": row.lead_id,
        "grade": row.grade,
        "source_kind": row.source_kind,
        "source_id": row.source_id,
        "lead_status": row.status,
        "is_test": bool(row.is_test),
        **{key: detail[key] for key in _STREAM_DETAIL_KEYS if key in detail},
    }


_STREAM_DETAIL_KEYS = (
    "assignment_id",
    "attempt",
    "outcome",
    "rep_id",
    "team_id",
    "previous_rep_id",
    "end_reason",
    "rule_id",
    "policy",
    "fraction",
    "due_at",
    "sla_due_at",
    "late_ms",
    "action",
    "time_to_first_touch_s",
    "within_sla",
)


def breach_item(row: Row[Any]) -> dict[str, Any]:
    detail = row.detail or {}
    return {
        "event_id": row.id,
        "lead_id": row.lead_id,
        "breached_at": _iso(aware(row.at)),
        "due_at": detail.get("due_at"),
        "late_ms": detail.get("late_ms"),
        "assignment_id": detail.get("assignment_id"),
        "rep_id": detail.get("rep_id"),
        "team_id": detail.get("team_id"),
        "policy": detail.get("policy"),
        "grade": row.grade,
        "source_kind": row.source_kind,
        "source_id": row.source_id,
        "lead_status": row.status,
        "current_rep_id": row.current_rep_id,
        "first_touch_at": _iso(aware(row.first_touch_at)),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _utc(value: datetime | None) -> datetime:
    result = aware(value)
    assert result is not None, "a NOT NULL time column came back empty"
    return result


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return aware(datetime.fromisoformat(value))
    return None


# -- HTTP: JSON -------------------------------------------------------------------------------------------------


def _error(status: int, code: str, detail: Any) -> HTTPException:
    return HTTPException(status_code=status, detail={"error": code, "detail": detail})


def _window(
    request: Request, since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    end = aware(until) or now
    start = aware(since) or end - DEFAULT_WINDOW
    if start >= end:
        raise _error(422, "validation_failed", [{"field": "since", "reason": "must be before until"}])
    # A long window is a scan of every lead routed in it: bounded, so the read token cannot tie up the store.
    days = request.app.state.settings.ops_max_window_days
    if end - start > timedelta(days=days):
        raise _error(422, "validation_failed", [{"field": "since", "reason": f"the window is at most {days:g} days"}])
    return start, end


@router.get("/v1/sla/breaches", summary="SLA breaches, newest first, filtered by time, team, rep, source, grade")
async def sla_breaches(
    request: Request,
    _ops: Ops,
    since: datetime | None = Query(None, description="Breached at or after (default: 24 h before until)"),
    until: datetime | None = Query(None, description="Breached before (default: now)"),
    team: str | None = Query(None, max_length=64, description="Team that held the lead when it breached"),
    rep: str | None = Query(None, max_length=64, description="Rep who held the lead when it breached"),
    source: str | None = Query(None, max_length=64, description="Source kind (web, meta...) or source id"),
    grade: str | None = Query(None, max_length=2),
    include_test: bool = False,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> dict[str, Any]:
    start, end = _window(request, since, until, datetime.now(UTC))
    before_id = None
    if cursor is not None:
        if not cursor.isdigit():
            raise _error(422, "validation_failed", [{"field": "cursor", "reason": "not a cursor from this API"}])
        before_id = int(cursor)
    async with request.app.state.runtime.db.read() as session:
        rows = await OpsRepository(session).breaches(
            since=start,
            until=end,
            team=team,
            rep=rep,
            source=source,
            grade=grade,
            include_test=include_test,
            before_id=before_id,
            limit=limit + 1,
        )
    page = rows[:limit]
    return {
        "items": [breach_item(r) for r in page],
        "next_cursor": str(page[-1].id) if len(rows) > limit else None,
        "window": {"since": _iso(start), "until": _iso(end)},
    }


@router.get("/v1/sla/summary", summary="Share touched within SLA, time to first touch, open and at-risk leads")
async def sla_summary(
    request: Request,
    _ops: Ops,
    since: datetime | None = Query(None, description="Leads routed at or after (default: 24 h before until)"),
    until: datetime | None = Query(None, description="Leads routed before (default: now)"),
    at_risk_minutes: float = Query(10, ge=0, le=24 * 60, description="Open leads due within this are at risk"),
    buckets: int = Query(24, ge=1, le=288, description="Points in the time series"),
    include_test: bool = False,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    start, end = _window(request, since, until, now)
    async with request.app.state.runtime.db.read() as session:
        repo = OpsRepository(session)
        leads = await repo.lead_facts(start, end, include_test=include_test)
        open_clocks = await repo.open_clocks(include_test=include_test)
    within = timedelta(minutes=at_risk_minutes)
    return {
        "now": _iso(now),
        "window": {"since": _iso(start), "until": _iso(end), "at_risk_minutes": at_risk_minutes},
        **summarize(leads, open_clocks, since=start, until=end, now=now, at_risk_within=within, buckets=buckets),
    }


@router.get("/v1/ops/board", summary="What the ops dashboard shows now: running clocks, reps, webhook failures")
async def ops_board(
    request: Request,
    _ops: Ops,
    at_risk_minutes: float = Query(10, ge=0, le=24 * 60),
    open_limit: int = Query(200, ge=1, le=2000),
    webhook_limit: int = Query(20, ge=0, le=200),
    include_test: bool = False,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    within = timedelta(minutes=at_risk_minutes)
    async with request.app.state.runtime.db.read() as session:
        repo = OpsRepository(session)
        open_clocks = await repo.open_clocks(include_test=include_test)
        reps = await repo.reps()
        failures = await repo.webhook_failures(webhook_limit) if webhook_limit else []
    at_risk = [c for c in open_clocks if c.at_risk(now, within)]
    return {
        "now": _iso(now),
        "at_risk_minutes": at_risk_minutes,
        "open_total": len(open_clocks),
        "at_risk_total": len(at_risk),
        "open": [c.to_dict(now, within) for c in open_clocks[:open_limit]],
        "reps": [
            {
                "rep_id": rep.id,
                "name": rep.data.get("name"),
                "team_id": rep.data.get("team"),
                "status": rep.data.get("status", "active"),
                "open_leads": load,
                "running_clocks": sum(1 for c in open_clocks if c.rep_id == rep.id),
            }
            for rep, load in reps
        ],
        "webhook_failures": failures,
    }


# -- HTTP: the live stream ----------------------------------------------------------------------------------------

STREAM_POLL_S = 0.5
STREAM_BATCH = 500
# On PostgreSQL ids are taken at insert but become visible at commit, so a lower id can appear after a higher one;
# each poll looks this far back (in ids) and skips what it sent. Must stay below STREAM_BATCH so polls progress.
STREAM_LOOKBACK_IDS = 200
STREAM_HEARTBEAT_S = 15.0
# A stream ends after this and the browser reconnects with Last-Event-ID, so nothing holds a process forever.
STREAM_MAX_S = 300.0
STREAM_RETRY_MS = 1000


class _ShutdownWatch:
    """Uvicorn waits for open responses before shutting down, so streams must notice SIGTERM/SIGINT themselves.

    The handler is chained in front of the server's own (which still runs), once, from the first stream.
    """

    def __init__(self) -> None:
        self.stopping = False
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def chained(signum: int, frame: Any, previous: Any = previous) -> None:
                self.stopping = True
                previous(signum, frame)

            try:
                signal.signal(sig, chained)
            except ValueError:
                return  # not the main thread (an embedded server): streams still end after STREAM_MAX_S


_shutdown = _ShutdownWatch()

# A refused stream is told to come back after this: by then a stream of the same credential may have ended.
STREAM_BUSY_RETRY_AFTER_S = 30


class _StreamSlots:
    """Open live streams per credential in this process, so one token cannot hold unlimited connections."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def take(self, credential: str, limit: int) -> _StreamSlot | None:
        if self.open.get(credential, 0) >= limit:
            return None
        self.open[credential] = self.open.get(credential, 0) + 1
        return _StreamSlot(self, credential)


class _StreamSlot:
    def __init__(self, slots: _StreamSlots, credential: str) -> None:
        self._slots, self._credential, self._held = slots, credential, True

    def release(self) -> None:
        """Idempotent: the stream's end and the response's background task both call it, whichever comes first."""
        if self._held:
            self._held = False
            self._slots.open[self._credential] -= 1


def _stream_slots(request: Request) -> _StreamSlots:
    slots = getattr(request.app.state, "ops_stream_slots", None)
    if slots is None:
        slots = request.app.state.ops_stream_slots = _StreamSlots()
    return slots


def _stream_kinds(kinds: str) -> tuple[str, ...]:
    if kinds == "sla":
        return SLA_KINDS
    if kinds == "all":
        return STREAM_KINDS
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = [k for k in chosen if k not in STREAM_KINDS]
    if unknown or not chosen:
        raise _error(
            422,
            "validation_failed",
            [{"field": "kinds", "reason": f"use sla, all, or a comma list of {', '.join(STREAM_KINDS)}"}],
        )
    return chosen


def _frame(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, kind.encode(), orjson.dumps(data))


async def _event_stream(
    request: Request,
    *,
    cursor: int,
    kinds: tuple[str, ...],
    team: str | None,
    rep: str | None,
    include_test: bool,
    slot: _StreamSlot,
) -> AsyncIterator[bytes]:
    try:
        async for chunk in _event_frames(
            request, cursor=cursor, kinds=kinds, team=team, rep=rep, include_test=include_test
        ):
            yield chunk
    finally:
        slot.release()


async def _event_frames(
    request: Request,
    *,
    cursor: int,
    kinds: tuple[str, ...],
    team: str | None,
    rep: str | None,
    include_test: bool,
) -> AsyncIterator[bytes]:
    db = request.app.state.runtime.db
    # The retry hint also sends the first bytes at once, so the client sees the stream open.
    yield b"retry: %d\n\n" % STREAM_RETRY_MS
    started = last_write = time.monotonic()
    floor = cursor  # at or below the resume point everything was sent on an earlier connection
    sent: set[int] = set()
    while not _shutdown.stopping and time.monotonic() - started < STREAM_MAX_S:
        if await request.is_disconnected():
            return
        async with db.read() as session:
            rows = await OpsRepository(session).events_after(
                max(floor, cursor - STREAM_LOOKBACK_IDS), kinds, STREAM_BATCH
            )
        for row in rows:
            if row.id in sent:
                continue
            sent.add(row.id)
            # The id sent is the high-water mark, so a reconnect resumes after everything already seen.
            cursor = max(cursor, row.id)
            item = stream_item(row)
            if (team and item.get("team_id") != team) or (rep and item.get("rep_id") != rep):
                continue
            if item["is_test"] and not include_test:
                continue
            yield _frame(cursor, row.kind, item)
            last_write = time.monotonic()
        sent = {i for i in sent if i > cursor - STREAM_LOOKBACK_IDS}
        if len(rows) >= STREAM_BATCH:
            continue  # catching up on a backlog: no pause
        if time.monotonic() - last_write >= STREAM_HEARTBEAT_S:
            yield b": keep-alive\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(STREAM_POLL_S)


@router.get(
    "/v1/sla/stream",
    summary="Live SLA events as server-sent events (resume with Last-Event-ID)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream"}},
)
async def sla_stream(
    request: Request,
    _ops: Ops,
    kinds: str = Query("sla", max_length=300, description="sla (warnings and breaches), all, or a comma list"),
    team: str | None = Query(None, max_length=64),
    rep: str | None = Query(None, max_length=64),
    include_test: bool = False,
    last_event_id: int | None = Query(None, ge=0, description="Resume after this id (the header wins)"),
) -> Response:
    chosen = _stream_kinds(kinds)
    limit = request.app.state.settings.ops_max_streams_per_credential
    slot = _stream_slots(request).take(ops_credential(request) or "unknown", limit)
    if slot is None:
        return JSONResponse(
            {"error": "too_many_requests", "detail": f"at most {limit} live streams per token; close one first"},
            status_code=429,
            headers={"Retry-After": str(STREAM_BUSY_RETRY_AFTER_S)},
        )
    header = request.headers.get("last-event-id", "").strip()
    resume = int(header) if header.isdigit() else last_event_id
    try:
        async with request.app.state.runtime.db.read() as session:
            newest = await OpsRepository(session).last_event_id()
    except BaseException:
        slot.release()
        raise
    # Without a resume point the stream starts now; a resume point past the newest id (a reset store) is clamped.
    cursor = newest if resume is None else min(resume, newest)
    _shutdown.install()
    return StreamingResponse(
        _event_stream(
            request, cursor=cursor, kinds=chosen, team=team, rep=rep, include_test=include_test, slot=slot
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        # Also after a client that left before the first byte: its generator never ran, so its finally never will.
        background=BackgroundTask(slot.release),
    )


# -- HTTP: the dashboard page -------------------------------------------------------------------------------------

_PAGE_HEADERS = {
    # Scripts and styles come from this origin only: no inline code, no CDN.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_ASSETS = {"ops.js": "text/javascript; charset=utf-8", "ops.css": "text/css; charset=utf-8"}


@cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _login_page(message: str) -> HTMLResponse:
    body = _asset("login.html").replace(b"{{message}}", message.encode())
    return HTMLResponse(body, status_code=401, headers=_PAGE_HEADERS)


@router.get("/ops", include_in_schema=False)
async def ops_page(request: Request, token: str | None = Query(None, max_length=512)) -> Response:
    """The dashboard; `?token=` once (admin or ops token) sets an HttpOnly session cookie and drops the token."""
    if token is not None:
        if not is_ops_token(request.app.state.settings, token):
            return _login_page("That token is not valid.")
        response = RedirectResponse(request.url.path, status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            OPS_COOKIE,
            issue_ops_cookie(token),
            max_age=OPS_COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
    if not has_ops_access(request):
        return _login_page("Open this page with ?token= and the ops or admin token.")
    return HTMLResponse(_asset("ops.html"), headers=_PAGE_HEADERS)


@router.get("/ops/assets/{name}", include_in_schema=False)
async def ops_asset(name: str) -> Response:
    """The dashboard's script and style (code only, no data, so no token is needed)."""
    if name not in _ASSETS:
        raise _error(404, "not_found", "no such asset")
    return Response(_asset(name), media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"})
