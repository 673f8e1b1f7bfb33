"""The live stream of SLA events (server-sent events): polls routing's timeline and resumes with Last-Event-ID.

Streams are long-lived, so each poll takes its own short read session instead of holding a request's session for
minutes; a stream ends after STREAM_MAX_S (the browser reconnects) or when the process is told to stop.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import Row
from starlette.background import BackgroundTask

from common.session import ReadSession
from common.web import HandoffRoute, problem
from routing.access.principal import OpsView, credential_label
from routing.ops.compliance import iso
from routing.ops.queries import OpsRepository

router = APIRouter(tags=["ops"], route_class=HandoffRoute)

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

STREAM_POLL_S = 0.5
STREAM_BATCH = 500
# On PostgreSQL ids are taken at insert but become visible at commit, so a lower id can appear after a higher one;
# each poll looks this far back (in ids) and skips what it sent. Must stay below STREAM_BATCH so polls progress.
STREAM_LOOKBACK_IDS = 200
STREAM_HEARTBEAT_S = 15.0
# A stream ends after this and the browser reconnects with Last-Event-ID, so nothing holds a process forever.
STREAM_MAX_S = 300.0
STREAM_RETRY_MS = 1000
# A refused stream is told to come back after this: by then a stream of the same credential may have ended.
STREAM_BUSY_RETRY_AFTER_S = 30


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


def stream_kinds(kinds: str) -> tuple[str, ...]:
    """The event kinds a `kinds=` parameter asks for; 422 for anything else."""
    if kinds == "sla":
        return SLA_KINDS
    if kinds == "all":
        return STREAM_KINDS
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = [k for k in chosen if k not in STREAM_KINDS]
    if unknown or not chosen:
        raise problem(
            422,
            "validation_failed",
            [{"field": "kinds", "reason": f"use sla, all, or a comma list of {', '.join(STREAM_KINDS)}"}],
        )
    return chosen


def stream_item(row: Row[Any]) -> dict[str, Any]:
    """What a stream subscriber sees of a timeline row: ids, times, who and which clock; never personal data."""
    detail = row.detail or {}
    return {
        "event_id": row.id,
        "kind": row.kind,
        "at": iso(row.at),
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
    session: ReadSession,
    _ops: OpsView,
    kinds: str = Query("sla", max_length=300, description="sla (warnings and breaches), all, or a comma list"),
    team: str | None = Query(None, max_length=64),
    rep: str | None = Query(None, max_length=64),
    include_test: bool = False,
    last_event_id: int | None = Query(None, ge=0, description="Resume after this id (the header wins)"),
) -> Response:
    # The request's session only finds where to start; the stream itself outlives the request and polls with
    # short sessions of its own (_event_frames), so no read transaction stays open for minutes.
    chosen = stream_kinds(kinds)
    limit = request.app.state.settings.ops_max_streams_per_credential
    slot = _stream_slots(request).take(credential_label(request), limit)
    if slot is None:
        return JSONResponse(
            {"error": "too_many_requests", "detail": f"at most {limit} live streams per token; close one first"},
            status_code=429,
            headers={"Retry-After": str(STREAM_BUSY_RETRY_AFTER_S)},
        )
    header = request.headers.get("last-event-id", "").strip()
    resume = int(header) if header.isdigit() else last_event_id
    try:
        newest = await OpsRepository(session).last_event_id()
    except BaseException:
        slot.release()
        raise
    # Without a resume point the stream starts now; a resume point past the newest id (a reset store) is clamped.
    cursor = newest if resume is None else min(resume, newest)
    _shutdown.install()
    return StreamingResponse(
        _event_stream(request, cursor=cursor, kinds=chosen, team=team, rep=rep, include_test=include_test, slot=slot),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        # Also after a client that left before the first byte: its generator never ran, so its finally never will.
        background=BackgroundTask(slot.release),
    )
