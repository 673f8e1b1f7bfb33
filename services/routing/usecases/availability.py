"""Availability: a rep away until a time, or available again (by their own token, a manager, or a signed link),
and reps' calendar feeds, whose away windows routing's eligibility reads as out of office.

Away-until is the rep's out-of-office window on the rep record (ooo_from = now, ooo_until = until), so routing,
the roster API and the audit see one fact; the calendar's windows live beside it (rep_calendars) and join the
roster when it is read. Both change the roster version, so every routing process sees them at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from routing.store import RoutingRepository
from routing.store.desk import DeskRepository
from routing.usecases import roster
from routing.usecases.context import RoutingContext
from routing.usecases.shared import lock

Window = tuple[datetime, datetime]


class AvailabilityRefused(ValueError):
    """The change does not apply (the API answers 422 naming `field`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Feed:
    """A rep's calendar feed to read, and the zone its all-day events are read in."""

    rep_id: str
    url: str
    timezone: str

    @property
    def url_hash(self) -> str:
        return hashlib.sha256(self.url.encode()).hexdigest()


@dataclass(frozen=True)
class FeedRead:
    """One read of a feed: its away windows, or None and why it failed (the last good windows are kept)."""

    feed: Feed
    away: tuple[Window, ...] | None
    events: int
    error: str | None


async def set_availability(
    rt: RoutingContext, session: AsyncSession, rep_id: str, *, away: bool, until: datetime | None
) -> dict[str, Any]:
    """Away until `until` (or until set available, without one), or available now; LookupError for an unknown
    rep, AvailabilityRefused for a rep who left or an until in the past."""
    row = await RoutingRepository(session).rep(rep_id)
    if row is None:
        raise LookupError("no rep with this id")
    if row.data.get("status") == "left":
        raise AvailabilityRefused("status", "the rep has left; a manager changes that through the roster")
    now = rt.clock()
    if not away:
        changes: dict[str, Any] = {"status": "active", "ooo_from": None, "ooo_until": None}
    elif until is None:
        changes = {"status": "away", "ooo_from": None, "ooo_until": None}
    elif until <= now:
        raise AvailabilityRefused("until", "must be in the future")
    else:
        # Active with an out-of-office window: the rep comes back by themself when it ends.
        changes = {"status": "active", "ooo_from": now.isoformat(), "ooo_until": until.isoformat()}
    await roster.patch_rep(rt, session, rep_id, changes)
    return await availability_of(rt, session, rep_id)


async def availability_of(rt: RoutingContext, session: AsyncSession, rep_id: str) -> dict[str, Any]:
    """Whether the rep takes leads now, until when they are away, and how their calendar feed last read."""
    rep = (await rt.roster(session)).rep(rep_id)
    if rep is None:
        raise LookupError("no rep with this id")
    now = rt.clock()
    calendar = await DeskRepository(session).calendar(rep_id) if rep.calendar_url else None
    windows = [(datetime.fromisoformat(s), datetime.fromisoformat(e)) for s, e in (calendar.away if calendar else [])]
    away_until = None
    if rep.ooo_until is not None and rep.is_out_of_office(now):
        away_until = rep.ooo_until
    current = [end for start, end in windows if start <= now < end]
    if current:
        away_until = max(current + ([away_until] if away_until else []))
    return {
        "rep_id": rep.id,
        "status": rep.status,
        "available": rep.is_available(now) and not current,
        "away_until": away_until.isoformat() if away_until else None,
        "ooo_from": rep.ooo_from.isoformat() if rep.ooo_from else None,
        "ooo_until": rep.ooo_until.isoformat() if rep.ooo_until else None,
        "calendar": _calendar_out(calendar, windows, now) if rep.calendar_url else None,
    }


def _calendar_out(row: Any, windows: Sequence[Window], now: datetime) -> dict[str, Any]:
    if row is None:
        return {"state": "not read yet", "error": None, "checked_at": None, "refreshed_at": None, "away": []}
    return {
        "state": "failing" if row.error else "ok",
        "error": row.error,  # the last fetch's failure; the windows below are from the last good read
        "checked_at": row.checked_at.isoformat() if row.checked_at else None,
        "refreshed_at": row.refreshed_at.isoformat() if row.refreshed_at else None,
        "events": row.events,
        "away": [{"from": s.isoformat(), "until": e.isoformat()} for s, e in windows if e > now],
    }


async def calendar_feeds(rt: RoutingContext, session: AsyncSession) -> list[Feed]:
    """The feeds to read: every rep with a calendar_url who has not left."""
    reps = (await rt.roster(session)).reps
    return [Feed(r.id, r.calendar_url, r.timezone) for r in reps if r.calendar_url and r.status != "left"]


async def record_calendars(
    rt: RoutingContext, session: AsyncSession, reads: Sequence[FeedRead], now: datetime
) -> list[str]:
    """Store one round of feed reads: good reads replace a rep's windows, failures keep them and say why; a rep
    without a feed any more loses them. The roster version moves when any rep's windows changed (those reps)."""
    repo = DeskRepository(session)
    rows = await repo.calendars()
    changed: list[str] = []
    for read in reads:
        row, rep_id, url_hash = rows.get(read.feed.rep_id), read.feed.rep_id, read.feed.url_hash
        values: dict[str, Any] = {"checked_at": now, "url_hash": url_hash}
        if read.away is None:
            values["error"] = read.error
            if row is not None and row.url_hash != url_hash and row.away:
                values.update(away=[], events=0)  # windows of a feed the rep no longer has
                changed.append(rep_id)
        else:
            away = [[start.isoformat(), end.isoformat()] for start, end in read.away]
            values.update(away=away, events=read.events, refreshed_at=now, error=None)
            if (row.away if row is not None else []) != away:
                changed.append(rep_id)
        await repo.save_calendar(rep_id, values)
    gone = await repo.forget_calendars([read.feed.rep_id for read in reads])
    if changed or gone:
        await lock(session)  # serialized with roster edits and decisions, as every roster change is
        await RoutingRepository(session).bump_roster_version()
        rt.forget_roster(session)
    return changed
