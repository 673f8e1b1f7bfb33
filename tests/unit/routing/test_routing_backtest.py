"""The backtest's replay model, in memory: load carried from lead to lead, repeat leads, breach estimates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from routing_builders import WED_15_UTC, rep, view

from routing.backtest import PastLead, compare, replay, summarize
from routing.domain import Team, WorkingHours, load_rules

pytestmark = pytest.mark.unit

TEAM = Team(id="sales", name="Sales", method="round_robin")
OWNERS = load_rules(
    {
        "fallback_team": "sales",
        "rules": [
            {"id": "owners", "action": {"account_owner": True}},
            {"id": "everyone", "action": {"team": "sales", "method": "round_robin"}},
        ],
    }
)
ROTATE = load_rules({"fallback_team": "sales", "rules": [{"id": "everyone", "action": {"team": "sales"}}]})


def _lead(n: int, minutes: float, **parts: object) -> PastLead:
    return PastLead(f"lead-{n}", view(**parts), WED_15_UTC + timedelta(minutes=minutes))


def test_an_account_owner_past_capacity_is_a_projected_breach_and_others_take_the_rest() -> None:
    reps = [rep("ana", max_open=1), rep("ben")]
    leads = [_lead(n, n) for n in range(3)]  # all from acme.io, which ana owns
    results = replay(leads, rules=OWNERS, teams=[TEAM], reps=reps, accounts={"acme.io": "ana"}, known_reps={})
    assert [results[lead.lead_id].rep_id for lead in leads] == ["ana", "ana", "ana"]
    assert [results[lead.lead_id].breach for lead in leads] == [None, "over_capacity", "over_capacity"]
    summary = summarize(results, rules=OWNERS, reps=reps)
    assert summary["projected_breaches_by_reason"]["over_capacity"] == 2
    assert {r["rep_id"]: r["leads"] for r in summary["reps"]} == {"ana": 3, "ben": 0}


def test_capacity_frees_up_when_a_lead_really_closed() -> None:
    reps = [rep("ana", max_open=1)]
    first = PastLead("lead-0", view(), WED_15_UTC, closed_at=WED_15_UTC + timedelta(minutes=5))
    second = _lead(1, 10)
    third = _lead(2, 11)
    results = replay([third, first, second], rules=ROTATE, teams=[TEAM], reps=reps, accounts={}, known_reps={})
    assert (results["lead-0"].rep_id, results["lead-1"].rep_id) == ("ana", "ana")  # lead-0 closed at +5
    assert (results["lead-2"].outcome, results["lead-2"].breach) == ("queued", "queued")


def test_a_repeat_lead_follows_the_rep_the_replay_gave_the_original_or_the_real_one() -> None:
    reps = [rep("ana"), rep("ben"), rep("cy")]
    leads = [_lead(0, 0), _lead(1, 1), _lead(2, 2, duplicate_of="lead-0"), _lead(3, 3, duplicate_of="older")]
    results = replay(leads, rules=ROTATE, teams=[TEAM], reps=reps, accounts={}, known_reps={"older": "cy"})
    assert results["lead-2"].rep_id == results["lead-0"].rep_id == "ana"
    assert results["lead-3"].rep_id == "cy"


def test_a_lead_given_to_someone_off_shift_is_a_projected_breach() -> None:
    nine_to_five_la = WorkingHours(by_weekday={d: WorkingHours().by_weekday[0] for d in range(5)})
    reps = [rep("ana", timezone="America/Los_Angeles", hours=nine_to_five_la)]  # 07:00 in LA at 15:00 UTC
    results = replay([_lead(0, 0)], rules=ROTATE, teams=[TEAM], reps=reps, accounts={}, known_reps={})
    assert (results["lead-0"].rep_id, results["lead-0"].breach) == ("ana", "outside_hours")


def test_compare_lists_only_leads_that_land_elsewhere() -> None:
    reps = [rep("ana"), rep("ben")]
    leads = [_lead(n, n) for n in range(4)]
    to_ben = load_rules({"fallback_team": "sales", "rules": [{"id": "ben", "action": {"rep": "ben"}}]})
    current = replay(leads, rules=ROTATE, teams=[TEAM], reps=reps, accounts={}, known_reps={})
    candidate = replay(leads, rules=to_ben, teams=[TEAM], reps=reps, accounts={}, known_reps={})
    changed = compare(leads, current, candidate, limit=1)
    moved = [lead.lead_id for lead in leads if current[lead.lead_id].rep_id == "ana"]
    assert changed["count"] == len(moved) == 2
    assert [item["lead_id"] for item in changed["leads"]] == moved[:1]
    assert changed["leads"][0]["candidate"]["rep_id"] == "ben"
