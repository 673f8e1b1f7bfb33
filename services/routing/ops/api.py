"""Ops JSON routes on routing: SLA breaches, SLA compliance, and the dashboard's board. They read and never write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from sqlalchemy import Row

from common.db import as_utc
from common.logging import scrub_text
from common.session import ReadSession
from common.web import HandoffRoute, problem
from routing.access.principal import OpsView
from routing.ops.compliance import iso, summarize
from routing.ops.queries import OpsRepository, RepOnBoard

router = APIRouter(tags=["ops"], route_class=HandoffRoute)

DEFAULT_WINDOW = timedelta(hours=24)


def _window(
    request: Request, since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    end = _given(until) or now
    start = _given(since) or end - DEFAULT_WINDOW
    if start >= end:
        raise problem(422, "validation_failed", [{"field": "since", "reason": "must be before until"}])
    # A long window is a scan of every lead routed in it: bounded, so the read token cannot tie up the store.
    days = request.app.state.settings.ops_max_window_days
    if end - start > timedelta(days=days):
        raise problem(422, "validation_failed", [{"field": "since", "reason": f"the window is at most {days:g} days"}])
    return start, end


def _given(value: datetime | None) -> datetime | None:
    """A time from the query as given (the answer echoes its offset); one without a zone is UTC."""
    return value if value is None or value.tzinfo else as_utc(value)


@router.get("/v1/sla/breaches", summary="SLA breaches, newest first, filtered by time, team, rep, source, grade")
async def sla_breaches(
    request: Request,
    session: ReadSession,
    _ops: OpsView,
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
            raise problem(422, "validation_failed", [{"field": "cursor", "reason": "not a cursor from this API"}])
        before_id = int(cursor)
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
        "window": {"since": iso(start), "until": iso(end)},
    }


@router.get("/v1/sla/summary", summary="Share touched within SLA, time to first touch, open and at-risk leads")
async def sla_summary(
    request: Request,
    session: ReadSession,
    _ops: OpsView,
    since: datetime | None = Query(None, description="Leads routed at or after (default: 24 h before until)"),
    until: datetime | None = Query(None, description="Leads routed before (default: now)"),
    at_risk_minutes: float = Query(10, ge=0, le=24 * 60, description="Open leads due within this are at risk"),
    buckets: int = Query(24, ge=1, le=288, description="Points in the time series"),
    include_test: bool = False,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    start, end = _window(request, since, until, now)
    leads, open_clocks = await OpsRepository(session).compliance_facts(start, end, include_test=include_test)
    within = timedelta(minutes=at_risk_minutes)
    return {
        "now": iso(now),
        "window": {"since": iso(start), "until": iso(end), "at_risk_minutes": at_risk_minutes},
        **summarize(leads, open_clocks, since=start, until=end, now=now, at_risk_within=within, buckets=buckets),
    }


@router.get("/v1/ops/board", summary="What the ops dashboard shows now: running clocks, reps, webhook failures")
async def ops_board(
    session: ReadSession,
    _ops: OpsView,
    at_risk_minutes: float = Query(10, ge=0, le=24 * 60),
    open_limit: int = Query(200, ge=1, le=2000),
    webhook_limit: int = Query(20, ge=0, le=200),
    include_test: bool = False,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    within = timedelta(minutes=at_risk_minutes)
    board = await OpsRepository(session).board(include_test=include_test, webhook_limit=webhook_limit)
    open_clocks = board.open_clocks
    running: dict[str | None, int] = {}
    for clock in open_clocks:
        running[clock.rep_id] = running.get(clock.rep_id, 0) + 1
    at_risk = [c for c in open_clocks if c.at_risk(now, within)]
    return {
        "now": iso(now),
        "at_risk_minutes": at_risk_minutes,
        "open_total": len(open_clocks),
        "at_risk_total": len(at_risk),
        "open": [c.to_dict(now, within) for c in open_clocks[:open_limit]],
        "reps": [rep_item(rep, running.get(rep.rep_id, 0)) for rep in board.reps],
        "webhook_failures": [webhook_failure_item(r) for r in board.webhook_failures],
    }


def breach_item(row: Row[Any]) -> dict[str, Any]:
    """One breach as the API shows it: who held the lead, by how much it was late; never personal data."""
    detail = row.detail or {}
    return {
        "event_id": row.id,
        "lead_id": row.lead_id,
        "breached_at": iso(row.at),
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
        "first_touch_at": iso(row.first_touch_at),
    }


def rep_item(rep: RepOnBoard, running_clocks: int) -> dict[str, Any]:
    """A rep on the board: status, team and load."""
    return {
        "rep_id": rep.rep_id,
        "name": rep.name,
        "team_id": rep.team_id,
        "status": rep.status,
        "open_leads": rep.open_leads,
        "running_clocks": running_clocks,
    }


def webhook_failure_item(row: Row[Any]) -> dict[str, Any]:
    """A failing delivery on the board; the receiver's URL shows only its host, the error is scrubbed."""
    error = row.last_error
    return {
        "delivery_id": row.id,
        "endpoint_id": row.endpoint_id,
        # Only the host: a receiver's URL may carry a token in its path or query.
        "endpoint_host": urlsplit(row.endpoint_url).hostname if row.endpoint_url else None,
        "endpoint_description": row.endpoint_description,
        "endpoint_enabled": row.endpoint_enabled,
        "endpoint_disabled_reason": row.endpoint_disabled_reason,
        "event_type": row.event_type,
        "state": "retrying" if row.status == "pending" else "failed",
        "status": row.status,
        "attempts": row.attempt_count,
        "last_status_code": row.last_status_code,
        "last_error": scrub_text(str(error))[:200] if error else None,
        "last_attempt_at": iso(row.last_attempt_at),
        "next_attempt_at": iso(row.next_attempt_at),
    }
