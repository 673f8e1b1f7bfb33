"""Business-hours clock: deadlines in the rep's own zone, across weekends and DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.domain import (
    WorkingHours,
    is_working_time,
    next_working_time,
    sla_deadline,
    warning_times,
    working_minutes_between,
)
from routing.domain.hours import END_OF_DAY, working_span

pytestmark = pytest.mark.unit

LONDON, LA, DHAKA = "Europe/London", "America/Los_Angeles", "Asia/Dhaka"
WEEKDAYS = WorkingHours()  # Mon-Fri 09:00-17:00
SUN_TO_THU = WorkingHours(by_weekday={d: [(time(9), time(17))] for d in (6, 0, 1, 2, 3)})  # Bangladesh week


def local(tz: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz))


def deadline(start: datetime, minutes: float, tz: str, hours: WorkingHours = WEEKDAYS) -> datetime:
    return sla_deadline(start, minutes, business_hours=True, hours=hours, tz=tz)


def test_within_one_working_day() -> None:
    start = local(LONDON, 2025, 3, 5, 10, 0)
    assert deadline(start, 5, LONDON) == local(LONDON, 2025, 3, 5, 10, 5)


def test_clock_time_when_not_business_hours() -> None:
    start = datetime(2025, 3, 8, 23, 0, tzinfo=UTC)  # a Saturday night
    assert sla_deadline(start, 5, business_hours=False, hours=WEEKDAYS, tz=LONDON) == start + timedelta(minutes=5)


def test_a_lead_at_night_starts_the_clock_next_morning() -> None:
    start = local(LONDON, 2025, 3, 5, 22, 0)
    assert deadline(start, 5, LONDON) == local(LONDON, 2025, 3, 6, 9, 5)


def test_london_spring_forward_weekend() -> None:
    # Friday 16:30 GMT; clocks go forward on Sunday 30 March; Monday 09:30 is BST = 08:30 UTC.
    start = local(LONDON, 2025, 3, 28, 16, 30)
    due = deadline(start, 60, LONDON)
    assert due == datetime(2025, 3, 31, 8, 30, tzinfo=UTC)
    assert due.astimezone(ZoneInfo(LONDON)).time() == time(9, 30)


def test_london_fall_back_weekend() -> None:
    # Friday 16:30 BST (15:30 UTC); clocks go back on Sunday 26 October; Monday 09:30 GMT = 09:30 UTC.
    start = local(LONDON, 2025, 10, 24, 16, 30)
    assert start.astimezone(UTC).hour == 15
    assert deadline(start, 60, LONDON) == datetime(2025, 10, 27, 9, 30, tzinfo=UTC)


def test_los_angeles_spring_forward_weekend() -> None:
    # Friday 16:00 PST = Saturday 00:00 UTC; Monday 10 March 10:00 PDT = 17:00 UTC.
    start = datetime(2025, 3, 8, 0, 0, tzinfo=UTC)
    assert deadline(start, 120, LA) == datetime(2025, 3, 10, 17, 0, tzinfo=UTC)


def test_los_angeles_fall_back_weekend() -> None:
    start = local(LA, 2025, 10, 31, 16, 0)  # Friday PDT
    assert deadline(start, 120, LA) == local(LA, 2025, 11, 3, 10, 0)  # Monday PST
    assert deadline(start, 120, LA) == datetime(2025, 11, 3, 18, 0, tzinfo=UTC)


def test_dhaka_works_sunday_to_thursday() -> None:
    start = local(DHAKA, 2025, 3, 6, 16, 0)  # Thursday
    assert deadline(start, 120, DHAKA, SUN_TO_THU) == local(DHAKA, 2025, 3, 9, 10, 0)  # Sunday
    assert deadline(start, 120, DHAKA, SUN_TO_THU) == datetime(2025, 3, 9, 4, 0, tzinfo=UTC)


def test_same_instant_gives_different_deadlines_in_different_zones() -> None:
    start = datetime(2025, 3, 5, 15, 0, tzinfo=UTC)  # Wed: 15:00 London, 07:00 LA, 21:00 Dhaka
    assert deadline(start, 60, LONDON) == datetime(2025, 3, 5, 16, 0, tzinfo=UTC)
    assert deadline(start, 60, LA) == datetime(2025, 3, 5, 18, 0, tzinfo=UTC)  # 09:00 PST + 1 h
    assert deadline(start, 60, DHAKA) == datetime(2025, 3, 6, 4, 0, tzinfo=UTC)  # Thu 10:00 Dhaka


def test_one_business_day_from_mid_afternoon() -> None:
    start = local(LONDON, 2025, 3, 5, 15, 0)
    assert deadline(start, 8 * 60, LONDON) == local(LONDON, 2025, 3, 6, 15, 0)


def test_closed_dates_are_skipped() -> None:
    hours = WorkingHours(
        by_weekday=WEEKDAYS.by_weekday, closed_dates=frozenset({date(2025, 12, 25), date(2025, 12, 26)})
    )
    start = local(LONDON, 2025, 12, 24, 16, 0)
    assert deadline(start, 120, LONDON, hours) == local(LONDON, 2025, 12, 29, 10, 0)


def test_around_the_clock_days_have_their_real_length_across_dst() -> None:
    always = WorkingHours.always()
    spring = working_minutes_between(local(LONDON, 2025, 3, 30), local(LONDON, 2025, 3, 31), hours=always, tz=LONDON)
    autumn = working_minutes_between(local(LONDON, 2025, 10, 26), local(LONDON, 2025, 10, 27), hours=always, tz=LONDON)
    assert (spring, autumn) == (23 * 60, 25 * 60)
    # Three real hours from Saturday 23:00 GMT end at 03:00 BST: four hours later on the wall clock.
    start = local(LONDON, 2025, 3, 29, 23, 0)
    assert deadline(start, 180, LONDON, always) == local(LONDON, 2025, 3, 30, 3, 0)


def test_a_span_running_past_midnight_is_one_span() -> None:
    """The working span a moment falls in runs on past midnight where work does (a 24-hour week, a night shift),
    at least a day past the moment: a clock started at 23:30 lies in the same span as one started at noon."""
    always = WorkingHours.always()
    late = local(LONDON, 2025, 3, 29, 23, 30)  # the night before the spring-forward Sunday
    span = working_span(late, hours=always, tz=LONDON)
    assert span is not None and span[0] <= late and span[1] >= late + timedelta(days=1)
    night = WorkingHours(by_weekday={d: [(time(22), END_OF_DAY), (time(0), time(6))] for d in range(7)})
    span = working_span(local(LA, 2025, 3, 5, 23, 0), hours=night, tz=LA)
    assert span == (local(LA, 2025, 3, 5, 22, 0), local(LA, 2025, 3, 6, 6, 0))
    assert deadline(local(LA, 2025, 3, 5, 23, 0), 60, LA, night) == local(LA, 2025, 3, 6, 0, 0)
    assert working_minutes_between(late, late + timedelta(days=3), hours=always, tz=LONDON) == 71 * 60


def test_a_night_shift_over_the_repeated_hour_counts_real_time() -> None:
    night = WorkingHours(by_weekday={6: [(time(0, 30), time(3, 0))]})
    minutes = working_minutes_between(
        datetime(2025, 10, 25, 12, tzinfo=UTC), datetime(2025, 10, 27, tzinfo=UTC), hours=night, tz=LONDON
    )
    assert minutes == 210  # 00:30 BST to 03:00 GMT is three and a half real hours


def test_working_minutes_between_counts_only_working_time() -> None:
    a = local(LONDON, 2025, 3, 7, 16, 0)  # Friday
    b = local(LONDON, 2025, 3, 10, 10, 0)  # Monday
    assert working_minutes_between(a, b, hours=WEEKDAYS, tz=LONDON) == 120
    assert working_minutes_between(b, a, hours=WEEKDAYS, tz=LONDON) == 0


def test_is_working_time_and_next_working_time() -> None:
    saturday = local(LA, 2025, 3, 8, 12, 0)
    assert not is_working_time(saturday, hours=WEEKDAYS, tz=LA)
    assert next_working_time(saturday, hours=WEEKDAYS, tz=LA) == local(LA, 2025, 3, 10, 9, 0)
    monday = local(LA, 2025, 3, 10, 9, 0)
    assert is_working_time(monday, hours=WEEKDAYS, tz=LA)
    assert next_working_time(monday, hours=WEEKDAYS, tz=LA) == monday
    assert not is_working_time(local(LA, 2025, 3, 10, 17, 0), hours=WEEKDAYS, tz=LA)  # end is exclusive


def test_warning_times_at_half_the_working_time() -> None:
    start = local(LONDON, 2025, 3, 7, 16, 0)  # Friday 16:00, 120 working minutes
    due = deadline(start, 120, LONDON)
    warnings = warning_times(start, due, (0.5, 0.9, 1.0), business_hours=True, hours=WEEKDAYS, tz=LONDON)
    assert warnings == [local(LONDON, 2025, 3, 7, 17, 0), local(LONDON, 2025, 3, 10, 9, 48)]
    clock = warning_times(start, start + timedelta(minutes=10), (0.5,))
    assert clock == [start + timedelta(minutes=5)]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        sla_deadline(datetime(2025, 3, 5, 9), 5, business_hours=True, hours=WEEKDAYS, tz=LONDON)


def test_unknown_zone_and_empty_schedule_are_refused() -> None:
    start = datetime(2025, 3, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="unknown time zone"):
        sla_deadline(start, 5, business_hours=True, hours=WEEKDAYS, tz="Europe/Londn")
    with pytest.raises(ValueError, match="no working time"):
        sla_deadline(start, 5, business_hours=True, hours=WorkingHours(by_weekday={}), tz=LONDON)


schedules = st.sampled_from(
    [
        WEEKDAYS,
        SUN_TO_THU,
        WorkingHours.always(),
        WorkingHours(by_weekday={d: [(time(8), time(12)), (time(13), time(17, 30))] for d in range(5)}),
        WorkingHours(by_weekday={6: [(time(0, 30), time(3))], 5: [(time(22), time(0))]}),  # DST-straddling shifts
    ]
)
zones = st.sampled_from([LONDON, LA, DHAKA, "UTC", "Australia/Lord_Howe"])
instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC))


@settings(max_examples=250, deadline=None)
@given(start=instants, minutes=st.floats(0, 5000, allow_nan=False), hours=schedules, tz=zones)
def test_deadline_spends_exactly_the_budget_of_working_time(start, minutes, hours, tz) -> None:
    due = sla_deadline(start, minutes, business_hours=True, hours=hours, tz=tz)
    assert due >= start
    assert working_minutes_between(start, due, hours=hours, tz=tz) == pytest.approx(minutes, abs=1e-4)
    if timedelta(minutes=minutes) > timedelta(0):  # budgets under a microsecond round to nothing
        # The deadline lands in working time (or at the very end of a span), never in the night.
        assert is_working_time(due - timedelta(microseconds=1), hours=hours, tz=tz)


@settings(max_examples=120, deadline=None)
@given(start=instants, a=st.integers(0, 3000), b=st.integers(0, 3000), hours=schedules, tz=zones)
def test_deadlines_grow_with_the_budget_and_compose(start, a, b, hours, tz) -> None:
    first = sla_deadline(start, a, business_hours=True, hours=hours, tz=tz)
    both = sla_deadline(start, a + b, business_hours=True, hours=hours, tz=tz)
    assert both >= first
    if b > 0:  # a zero budget from the end of a span would move on to the next span's start
        assert sla_deadline(first, b, business_hours=True, hours=hours, tz=tz) == both
