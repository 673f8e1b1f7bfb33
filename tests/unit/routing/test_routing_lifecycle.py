"""The lead's life cycle as a pure aggregate: which actions a lead takes in each state and what each produces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from routing.domain import SlaPolicy, WorkingHours
from routing.domain.lifecycle import (
    ACTIONS,
    ActionRefused,
    CurrentAssignment,
    LeadCase,
    PendingTimer,
    Reroute,
)
from routing.domain.sla import FollowUp, ResolvedSla

pytestmark = pytest.mark.unit

ROUTED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
NOW = ROUTED + timedelta(minutes=4)
FOLLOW_UP = ResolvedSla(SlaPolicy("A", 5, False, (0.5,)), (), FollowUp(touches=3, within_hours=48))


def _case(status: str = "assigned", *, rep: str | None = "ana", **changes: object) -> LeadCase:
    current = CurrentAssignment(7, rep, ROUTED + timedelta(minutes=5), FOLLOW_UP)
    fields: dict[str, object] = {
        "lead_id": "lead-1",
        "status": status,
        "routed_at": ROUTED,
        "current": current,
        "pending": (PendingTimer(1, "warning"), PendingTimer(2, "breach")),
        "tried_reps": frozenset({"ana", "ben"}),
    }
    fields.update(changes)
    return LeadCase(**fields)  # type: ignore[arg-type]


def test_a_first_touch_stops_the_first_contact_clock_and_starts_the_follow_up_clock() -> None:
    outcome = _case().act("touch", rep_id=None, reason=None, now=NOW, rep_hours=(WorkingHours.always(), "UTC"))
    assert outcome.status == "touched" and outcome.first_touch_at == NOW
    assert outcome.cancel_timers == (1, 2)  # the warning and the breach never fire
    (timer,) = outcome.new_timers
    assert timer.kind == "follow_up" and timer.due_at == NOW + timedelta(hours=48)
    ((kind, detail),) = outcome.events
    assert kind == "lead.touched" and outcome.timeline == (("touched", detail),)
    assert detail["rep_id"] == "ana"  # the current rep acted when nobody else is named
    assert detail["time_to_first_touch_s"] == 240.0 and detail["working_minutes"] == 4.0
    assert detail["within_sla"] is True
    assert outcome.answer("lead-1", "ana")["within_sla"] is True
    assert outcome.end_assignment is None and outcome.reroute is None


def test_a_touch_after_the_due_time_is_not_within_the_sla() -> None:
    late = ROUTED + timedelta(minutes=9)
    outcome = _case().act("touch", rep_id="ana", reason=None, now=late)
    detail = outcome.events[0][1]
    assert detail["within_sla"] is False and "working_minutes" not in detail  # no rep hours given


def test_later_touches_stop_the_follow_up_clock_once_enough_were_made() -> None:
    touched = _case("touched", first_touch_at=NOW, pending=(PendingTimer(9, "follow_up"),), touches_since_first=1)
    second = touched.act("touch", rep_id=None, reason=None, now=NOW + timedelta(hours=1))
    assert second.cancel_timers == () and second.first_touch_at is None  # 2 of 3 touches: the clock runs on
    assert "time_to_first_touch_s" not in second.events[0][1]
    third = LeadCase(**{**touched.__dict__, "touches_since_first": 2}).act(
        "touch", rep_id=None, reason=None, now=NOW + timedelta(hours=2)
    )
    assert third.cancel_timers == (9,)


def test_reject_routes_the_lead_again_without_the_reps_who_had_it() -> None:
    outcome = _case().act("reject", rep_id="ana", reason="wrong territory", now=NOW)
    assert outcome.reroute == Reroute(frozenset({"ana", "ben"}), "rejected")
    assert outcome.status == "assigned"  # unchanged until the new decision
    assert outcome.cancel_timers == (1, 2)
    assert outcome.events[0][0] == "lead.rejected" and outcome.events[0][1]["reason"] == "wrong territory"


def test_a_lead_without_a_rep_cannot_be_rejected() -> None:
    queued = _case("queued", rep=None)
    assert "reject" not in queued.allowed()
    with pytest.raises(ActionRefused, match="no rep to reject"):
        queued.act("reject", rep_id=None, reason="x", now=NOW)


@pytest.mark.parametrize(("action", "status"), [("convert", "converted"), ("disqualify", "disqualified")])
def test_closing_ends_the_assignment_and_frees_the_rep(action: str, status: str) -> None:
    outcome = _case().act(action, rep_id=None, reason="student", now=NOW)
    assert outcome.status == status and outcome.end_assignment == status
    assert outcome.release_rep == "ana" and outcome.cancel_timers == (1, 2)
    assert outcome.events[0][0] == f"lead.{status}"


@pytest.mark.parametrize("status", ["converted", "disqualified"])
def test_a_closed_lead_takes_no_action(status: str) -> None:
    closed = _case(status)
    assert closed.allowed() == ()
    for action in ACTIONS:
        with pytest.raises(ActionRefused, match=f"already {status}"):
            closed.act(action, rep_id=None, reason="x", now=NOW)


def test_accept_records_the_rep_taking_the_lead_and_keeps_the_clock() -> None:
    outcome = _case().act("accept", rep_id="ben", reason=None, now=NOW)
    assert outcome.status == "accepted" and outcome.cancel_timers == ()
    assert outcome.events[0] == ("lead.accepted", outcome.timeline[0][1])
    assert outcome.events[0][1]["rep_id"] == "ben"


def test_an_erased_lead_is_in_the_erased_state_and_still_takes_actions() -> None:
    erased = _case(erased=True)
    assert erased.state == "erased" and erased.allowed() == ACTIONS
