"""The desk's pure parts: claims, reassignment and hand-over decided by the lead's aggregate, and the away windows
read from an iCalendar feed (all-day and multi-day events, in the rep's zone, repeats expanded)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from routing.calendars import CalendarError, away_windows, merge
from routing.domain import Rep
from routing.domain.lifecycle import ActionRefused, CurrentAssignment, LeadCase, PendingTimer, Target

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # a Monday


def _case(status: str, rep: str | None) -> LeadCase:
    return LeadCase(
        lead_id="lead-1",
        status=status,
        routed_at=NOW - timedelta(minutes=3),
        current=CurrentAssignment(4, rep, NOW + timedelta(minutes=57), None),
        pending=(PendingTimer(1, "warning"), PendingTimer(2, "breach")),
        tried_reps=frozenset({rep} if rep else ()),
    )


def test_the_first_claim_of_a_queued_lead_stops_its_clock_and_goes_to_the_claimer() -> None:
    queued = _case("queued", None)
    assert "claim" in queued.allowed() and "claim" not in _case("assigned", "ana").allowed()
    outcome = queued.act("claim", rep_id="ben", reason=None, now=NOW)
    assert outcome.cancel_timers == (1, 2)  # the queue's warning and breach never fire
    assert outcome.reroute is not None and outcome.reroute.target == Target(rep_id="ben")
    assert (outcome.reroute.end_reason, outcome.reroute.by) == ("claimed", "ben")


def test_a_claim_of_a_lead_someone_has_says_who() -> None:
    with pytest.raises(ActionRefused, match="already claimed by ana"):
        _case("assigned", "ana").act("claim", rep_id="ben", reason=None, now=NOW)
    with pytest.raises(ActionRefused, match="only a queued lead"):
        _case("nurture", None).act("claim", rep_id="ben", reason=None, now=NOW)
    with pytest.raises(ActionRefused, match="needs the rep"):
        _case("queued", None).act("claim", rep_id=None, reason=None, now=NOW)


def test_a_reassignment_names_its_target_and_a_team_one_leaves_the_current_rep_out() -> None:
    to_rep = _case("touched", "ana").reassign(Target(rep_id="ben"), by="admin", note="German speaker")
    assert to_rep.reroute is not None and to_rep.reroute.exclude == frozenset()
    assert (to_rep.reroute.by, to_rep.reroute.note, to_rep.cancel_timers) == ("admin", "German speaker", (1, 2))
    to_team = _case("assigned", "ana").reassign(Target(team_id="t"), by="token:lead", note=None)
    assert to_team.reroute is not None and to_team.reroute.exclude == frozenset({"ana"})
    with pytest.raises(ActionRefused, match="already with ana"):
        _case("assigned", "ana").reassign(Target(rep_id="ana"), by="admin", note=None)
    with pytest.raises(ActionRefused, match="already converted"):
        _case("converted", "ana").reassign(Target(rep_id="ben"), by="admin", note=None)


def test_a_hand_over_moves_only_the_rep_s_open_leads() -> None:
    moved = _case("accepted", "ana").hand_over("ana", by="admin")
    assert moved is not None and moved.reroute is not None
    assert moved.reroute.exclude == frozenset({"ana"}) and moved.reroute.end_reason == "handover"
    assert _case("assigned", "ben").hand_over("ana", by="admin") is None
    assert _case("converted", "ana").hand_over("ana", by="admin") is None


def test_a_calendar_away_window_makes_the_rep_out_of_office_while_it_lasts() -> None:
    rep = Rep("ana", "Ana", "ana@example.com", away=((NOW, NOW + timedelta(days=1)),))
    assert rep.is_out_of_office(NOW) and not rep.is_available(NOW)
    assert not rep.is_out_of_office(NOW + timedelta(days=1))


def _feed(*events: str) -> bytes:
    body = "".join(
        f"BEGIN:VEVENT\r\nUID:{i}\r\nDTSTAMP:20260101T000000Z\r\n{e}END:VEVENT\r\n" for i, e in enumerate(events)
    )
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n{body}END:VCALENDAR\r\n".encode()


def test_all_day_events_are_whole_days_in_the_rep_s_zone() -> None:
    feed = _feed("DTSTART;VALUE=DATE:20261208\r\nDTEND;VALUE=DATE:20261210\r\nSUMMARY:Leave\r\n")
    windows, count = away_windows(feed, "America/New_York", NOW, NOW + timedelta(days=30))
    # Midnight to midnight in New York (UTC-5 in December), the end exclusive.
    assert windows == [(datetime(2026, 12, 8, 5, tzinfo=UTC), datetime(2026, 12, 10, 5, tzinfo=UTC))] and count == 1


def test_repeats_are_expanded_meetings_and_free_or_cancelled_events_are_not_absences() -> None:
    feed = _feed(
        "DTSTART;VALUE=DATE:20261211\r\nRRULE:FREQ=WEEKLY;COUNT=3\r\n"
        "EXDATE;VALUE=DATE:20261218\r\nSUMMARY:Fridays off\r\n",
        "DTSTART:20261208T090000Z\r\nDTEND:20261208T100000Z\r\nSUMMARY:Stand-up\r\n",
        "DTSTART;VALUE=DATE:20261209\r\nSTATUS:CANCELLED\r\nSUMMARY:Cancelled leave\r\n",
        "DTSTART;VALUE=DATE:20261214\r\nTRANSP:TRANSPARENT\r\nSUMMARY:Holiday (working)\r\n",
        "DTSTART:20261215T120000Z\r\nDTEND:20261217T120000Z\r\nSUMMARY:Conference\r\n",
    )
    windows, _ = away_windows(feed, "UTC", NOW, NOW + timedelta(days=30))
    day = timedelta(days=1)
    fridays = [datetime(2026, 12, 11, tzinfo=UTC), datetime(2026, 12, 25, tzinfo=UTC)]
    conference = (datetime(2026, 12, 15, 12, tzinfo=UTC), datetime(2026, 12, 17, 12, tzinfo=UTC))
    assert windows == sorted([(f, f + day) for f in fridays] + [conference])


def test_an_unreadable_feed_is_a_calendar_error_and_touching_windows_merge() -> None:
    with pytest.raises(CalendarError, match="not a readable iCalendar feed"):
        away_windows(b"<html>sign in</html>", "UTC", NOW, NOW + timedelta(days=1))
    a, b, c = NOW, NOW + timedelta(days=1), NOW + timedelta(days=2)
    assert merge([(b, c), (a, b)]) == [(a, c)]
