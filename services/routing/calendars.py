"""Reps' out-of-office calendars: each rep's iCalendar feed (`calendar_url` on the rep) is fetched every
calendar_refresh_s through the egress policy webhooks use, and its all-day and multi-day events become away
windows in the rep's time zone, which routing's eligibility reads as out of office.

A failed fetch or an unreadable feed keeps the windows of the last good read, and the failure shows on the rep's
availability (`GET /v1/reps/{id}/availability`). Every routing process runs the loop; the writes are idempotent
and the roster version is bumped only when a rep's windows change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import structlog

from common.db import Database
from common.egress import UnsafeUrl, guarded_transport
from common.poll import poll_until
from routing.domain.hours import zone
from routing.settings import RoutingSettings
from routing.usecases import availability
from routing.usecases.availability import Feed, FeedRead
from routing.usecases.context import RoutingContext
from routing.webhooks.address import webhook_address_policy

log = structlog.get_logger(__name__)

Window = tuple[datetime, datetime]
MIN_MULTI_DAY = timedelta(hours=24)  # a timed event this long or longer marks the rep away too
PARALLEL_FETCHES = 4


class CalendarError(ValueError):
    """The feed could not be fetched or read; the message says why, without the URL (it may carry a secret)."""


def away_windows(feed: bytes, tz: str, since: datetime, until: datetime) -> tuple[list[Window], int]:
    """The away windows (UTC, end exclusive, merged) of a feed's all-day and multi-day events between two times,
    recurring ones expanded; and how many such events there were. An all-day event runs midnight to midnight in
    the rep's zone `tz`; cancelled and free (TRANSP:TRANSPARENT) events are left out."""
    # Imported here: a feed is read a few times an hour, and the libraries cost ~0.07 s of every start-up.
    import icalendar
    import recurring_ical_events

    local = zone(tz)
    windows: list[Window] = []
    try:
        calendar = icalendar.Calendar.from_ical(feed)
        for event in recurring_ical_events.of(calendar).between(since, until):
            status, transparency = str(event.get("STATUS", "")).upper(), str(event.get("TRANSP", "")).upper()
            if status == "CANCELLED" or transparency == "TRANSPARENT":
                continue
            window = _window(event, local)
            if window is not None:
                windows.append(window)
    except Exception as exc:  # the libraries raise ValueError and their own errors for a malformed feed
        raise CalendarError(f"not a readable iCalendar feed: {str(exc)[:200]}") from exc
    return merge(windows), len(windows)


def _window(event: Any, local: Any) -> Window | None:
    start_prop, end_prop = event.get("DTSTART"), event.get("DTEND")
    if start_prop is None:
        return None
    start = start_prop.dt
    end = end_prop.dt if end_prop is not None else None
    if not isinstance(start, datetime):  # an all-day event: whole local days
        last = end if isinstance(end, date) and not isinstance(end, datetime) and end > start else start
        if last == start:
            last = start + timedelta(days=1)
        return (
            datetime.combine(start, time(), local).astimezone(UTC),
            datetime.combine(last, time(), local).astimezone(UTC),
        )
    if not isinstance(end, datetime):
        return None
    start, end = (value if value.tzinfo else value.replace(tzinfo=local) for value in (start, end))
    if end - start < MIN_MULTI_DAY:
        return None  # a meeting, not an absence
    return start.astimezone(UTC), end.astimezone(UTC)


def merge(windows: Sequence[Window]) -> list[Window]:
    """Overlapping or touching windows joined, in order."""
    merged: list[Window] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


async def fetch_feed(client: httpx.AsyncClient, url: str, max_bytes: int) -> bytes:
    """The feed's bytes (at most max_bytes); CalendarError says what went wrong."""
    try:
        async with client.stream("GET", url, headers={"Accept": "text/calendar"}) as response:
            if response.status_code != 200:
                raise CalendarError(f"the feed answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise CalendarError(f"the feed is larger than {max_bytes // 1024} KiB")
            return bytes(body)
    except UnsafeUrl as exc:
        raise CalendarError(f"refused by the egress policy: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise CalendarError("the feed did not answer in time") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise CalendarError(f"the feed could not be fetched: {type(exc).__name__}") from exc


class CalendarRefresher:
    """Reads every rep's feed each calendar_refresh_s (fetches outside any transaction, results in one)."""

    def __init__(
        self,
        db: Database,
        rt: RoutingContext,
        settings: RoutingSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db, self._rt, self._settings = db, rt, settings
        self._clock = clock or rt.clock
        self._client = httpx.AsyncClient(
            transport=transport or guarded_transport(webhook_address_policy(settings)),
            timeout=settings.calendar_timeout_s,
            follow_redirects=True,  # every connection, a redirect's too, is vetted by the guarded transport
            max_redirects=3,
            headers={"User-Agent": settings.webhook_user_agent},
        )
        self._stop = asyncio.Event()

    async def run(self) -> None:
        try:
            await poll_until(self._stop, self.refresh, interval_s=self._settings.calendar_refresh_s, name="calendars")
        finally:
            await self._client.aclose()

    async def stop(self) -> None:
        self._stop.set()

    async def refresh(self) -> bool:
        """One round: every feed read and the outcome stored; False (wait an interval before the next)."""
        async with self._db.read() as session:
            feeds = await availability.calendar_feeds(self._rt, session)
        now = self._clock()
        gate = asyncio.Semaphore(PARALLEL_FETCHES)

        async def read(feed: Feed) -> FeedRead:
            async with gate:
                return await self.read_feed(feed, now)

        reads = await asyncio.gather(*(read(feed) for feed in feeds))
        async with self._db.transaction() as session:
            changed = await availability.record_calendars(self._rt, session, reads, now)
        if changed:
            log.info("calendars_changed", reps=len(changed))
        return False

    async def read_feed(self, feed: Feed, now: datetime) -> FeedRead:
        since = now - timedelta(days=1)
        until = now + timedelta(days=self._settings.calendar_horizon_days)
        try:
            body = await fetch_feed(self._client, feed.url, self._settings.calendar_max_kib * 1024)
            windows, events = away_windows(body, feed.timezone, since, until)
        except CalendarError as exc:
            log.warning("calendar_fetch_failed", rep_id=feed.rep_id, error=str(exc))
            return FeedRead(feed, None, 0, str(exc))
        return FeedRead(feed, tuple(windows), events, None)
