"""Working hours and the business-time clock: the arithmetic behind SLA deadlines.

Every instant that goes in or comes out is an aware datetime; local wall-clock spans are turned
into UTC instants day by day with zoneinfo, so a working day that contains a DST change is as
long as it really is (a 00:00-24:00 shift on the spring-forward Sunday lasts 23 hours).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# A span ending at 00:00 means "until midnight at the end of the day" (24:00).
END_OF_DAY = time(0, 0)

# Guards the day-by-day walk against a schedule whose only open days are all closed dates.
_MAX_DAYS_SCANNED = 3 * 366


def _default_week() -> dict[int, list[tuple[time, time]]]:
    return {weekday: [(time(9, 0), time(17, 0))] for weekday in range(5)}


@dataclass(frozen=True)
class WorkingHours:
    """Weekly local-time working spans (0=Monday), plus whole local dates that are closed."""

    by_weekday: dict[int, list[tuple[time, time]]] = field(default_factory=_default_week)
    closed_dates: frozenset[date] = frozenset()

    @classmethod
    def always(cls) -> WorkingHours:
        """Around the clock, every day."""
        return cls(by_weekday={weekday: [(time(0, 0), END_OF_DAY)] for weekday in range(7)})

    def has_working_time(self) -> bool:
        """True when at least one weekday has a non-empty span."""
        return any(spans for spans in self.by_weekday.values())


@lru_cache(maxsize=512)
def zone(tz: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name; ValueError names the bad zone."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def _require_aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _spans_on(day: date, hours: WorkingHours, tzinfo: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The working spans of one local date as sorted, merged UTC intervals [start, end)."""
    if day in hours.closed_dates:
        return []
    spans: list[tuple[datetime, datetime]] = []
    for start, end in hours.by_weekday.get(day.weekday(), ()):
        # fold=0 resolves an ambiguous wall time to its first occurrence and a skipped one
        # (inside a spring-forward gap) to the instant just after the gap, which is what a
        # person starting work "at 02:30" on that morning would experience.
        local_start = datetime.combine(day, start, tzinfo=tzinfo)
        end_day = day + timedelta(days=1) if end == END_OF_DAY else day
        local_end = datetime.combine(end_day, end, tzinfo=tzinfo)
        utc_start, utc_end = local_start.astimezone(UTC), local_end.astimezone(UTC)
        if utc_end > utc_start:
            spans.append((utc_start, utc_end))
    spans.sort()
    merged: list[tuple[datetime, datetime]] = []
    for start_utc, end_utc in spans:
        if merged and start_utc <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end_utc))
        else:
            merged.append((start_utc, end_utc))
    return merged


def _spans_from(at: datetime, hours: WorkingHours, tz: str) -> Iterator[tuple[datetime, datetime]]:
    """Working spans (UTC) that end after `at`, in order, for as long as the caller keeps asking. A span that runs
    on into the next day (a 24-hour schedule, a night shift) is one span until it reaches a day past `at` (then the
    rest follows as the next span): the span a moment falls in does not end at each midnight, so a clock started
    an hour before midnight is the same working span as one started at noon (the batch clocks' reuse)."""
    tzinfo = zone(tz)
    day = at.astimezone(tzinfo).date() - timedelta(days=1)
    horizon = at + _ONE_DAY
    pending: tuple[datetime, datetime] | None = None
    for _ in range(_MAX_DAYS_SCANNED):
        for span in _spans_on(day, hours, tzinfo):
            if span[1] <= at:
                continue
            if pending is not None and span[0] <= pending[1] and pending[1] < horizon:
                pending = (pending[0], max(pending[1], span[1]))
                continue
            if pending is not None:
                yield pending
                horizon = pending[1] + _ONE_DAY
            pending = span
        day += timedelta(days=1)
    if pending is not None:
        yield pending


_ONE_DAY = timedelta(days=1)


# The first span ending after a moment, by schedule (identity) and zone: (schedule, moment, start, end). It is the
# first span for every later moment too, until it ends, so a batch of decisions (every rep checked for every lead)
# works out each rep's day once instead of once per check.
_FIRST_SPANS: dict[tuple[int, str], tuple[WorkingHours, datetime, datetime, datetime]] = {}


def _first_span(at: datetime, hours: WorkingHours, tz: str) -> tuple[datetime, datetime] | None:
    key = (id(hours), tz)
    hit = _FIRST_SPANS.get(key)
    if hit is not None and hit[0] is hours and hit[1] <= at < hit[3]:
        return hit[2], hit[3]
    for start, end in _spans_from(at, hours, tz):
        if len(_FIRST_SPANS) > 4096:
            _FIRST_SPANS.clear()
        _FIRST_SPANS[key] = (hours, at, start, end)
        return start, end
    return None


def is_working_time(at: datetime, *, hours: WorkingHours, tz: str) -> bool:
    """Whether `at` falls inside the schedule, read in the zone `tz`."""
    at = _require_aware(at, "at")
    span = _first_span(at, hours, tz)
    return span is not None and span[0] <= at


def working_span(at: datetime, *, hours: WorkingHours, tz: str) -> tuple[datetime, datetime] | None:
    """The working span (UTC start, end) `at` falls in, else the next one; None if there is none within three
    years. A clock started inside a span and due in it reads the same however far into the span it starts; one
    started before a span, the same from anywhere before it (the batch clocks' reuse rests on both). Walked
    afresh, not read from the checks' cache: a span running past midnight is cut a day past the moment it was
    walked from, so the cache's may end an hour after `at` where a fresh one runs a day on."""
    return next(_spans_from(_require_aware(at, "at"), hours, tz), None)


def next_working_time(at: datetime, *, hours: WorkingHours, tz: str) -> datetime | None:
    """The first instant at or after `at` inside the schedule; None if there is none within three years."""
    at = _require_aware(at, "at")
    span = _first_span(at, hours, tz)
    return max(span[0], at) if span is not None else None


def sla_deadline(start: datetime, minutes: float, *, business_hours: bool, hours: WorkingHours, tz: str) -> datetime:
    """When `minutes` have elapsed from `start`: working time in `tz` if business_hours, else clock time."""
    start = _require_aware(start, "start")
    if minutes < 0:
        raise ValueError("minutes must not be negative")
    if not business_hours:
        return start + timedelta(minutes=minutes)
    if not hours.has_working_time():
        raise ValueError("the schedule has no working time, so a business-hours deadline never arrives")
    remaining = timedelta(minutes=minutes)
    cursor = start
    for span_start, span_end in _spans_from(start, hours, tz):
        cursor = max(cursor, span_start)
        available = span_end - cursor
        if remaining <= available:
            # A zero budget lands at the next working instant, not in the middle of the night.
            return cursor + remaining
        remaining -= available
        cursor = span_end
    raise ValueError("no working time within three years of start (all open days closed?)")


def working_minutes_between(a: datetime, b: datetime, *, hours: WorkingHours, tz: str) -> float:
    """Working minutes in [a, b) by the schedule in `tz`; 0 when b is not after a."""
    a = _require_aware(a, "a")
    b = _require_aware(b, "b")
    if b <= a:
        return 0.0
    total = timedelta()
    for span_start, span_end in _spans_from(a, hours, tz):
        if span_start >= b:
            break
        total += min(span_end, b) - max(span_start, a)
    return total.total_seconds() / 60


def warning_times(
    start: datetime,
    deadline: datetime,
    fractions: Sequence[float],
    *,
    business_hours: bool = False,
    hours: WorkingHours | None = None,
    tz: str = "UTC",
) -> list[datetime]:
    """Instants at each fraction (0 < f < 1) of the way from start to deadline, in working time if asked."""
    start = _require_aware(start, "start")
    deadline = _require_aware(deadline, "deadline")
    wanted = sorted({f for f in fractions if 0 < f < 1})
    if deadline <= start or not wanted:
        return []
    if not business_hours:
        span = deadline - start
        return [start + span * f for f in wanted]
    schedule = hours if hours is not None else WorkingHours()
    budget = working_minutes_between(start, deadline, hours=schedule, tz=tz)
    return [sla_deadline(start, budget * f, business_hours=True, hours=schedule, tz=tz) for f in wanted]
