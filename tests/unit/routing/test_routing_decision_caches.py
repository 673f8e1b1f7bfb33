"""What a batch works out once (a rep's presence at a moment, a lead's facts, account keys) never hides a change."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import yaml
from routing_builders import WED_15_UTC, decide, rep, view

from routing.domain import DEFAULT_RULES_YAML, RepLoad, SlaPolicy, Team, WorkingHours, load_rules, route, sla_deadline
from routing.domain.accounts import Account, AccountBook, lead_match_keys
from routing.domain.engine import FirstMatch
from routing.domain.hours import working_span
from routing.domain.roster import parse_reps
from routing.usecases.batch_rows import Pending, _clock
from routing.usecases.capacity import needs_worked
from routing.usecases.context import Roster
from routing.usecases.shared import clock_rows

pytestmark = pytest.mark.unit


def test_a_rep_changed_at_the_same_moment_is_judged_by_the_new_roster() -> None:
    """The roster is reloaded with the rep away, then back, all within one batch's moment: each decision sees it."""
    active = [rep("a"), rep("b")]
    first = decide(view(), active, now=WED_15_UTC)
    assert {c.rep_id for c in first.candidates if c.eligible} == {"a", "b"}

    away = [rep("a", status="away"), rep("b", hours=WorkingHours())]  # b: 9-17 UTC, and it is 15:00
    second = decide(view(), away, now=WED_15_UTC)
    by_id = {c.rep_id: c for c in second.candidates}
    assert by_id["a"].excluded_because == ["status:away"]
    assert by_id["b"].eligible and second.rep_id == "b"

    evening = decide(view(), away, now=WED_15_UTC.replace(hour=20))  # the same reps, a later moment
    assert {c.rep_id: c.excluded_because for c in evening.candidates}["b"] == ["outside_hours"]

    back = decide(view(), active, now=WED_15_UTC)
    assert {c.rep_id for c in back.candidates if c.eligible} == {"a", "b"}


def test_each_lead_is_checked_against_its_own_country_language_and_load() -> None:
    """Facts read once per lead: consecutive leads with different countries get different verdicts."""
    reps = [rep("de", territories=frozenset({"DE"})), rep("us", territories=frozenset({"US"}))]
    german = view(lead={"country": "DE", "language": "de", "email": "a@x.de"})
    american = view(lead={"country": "US", "language": "en", "email": "b@y.com"})
    assert decide(german, reps).rep_id == "de"
    assert decide(american, reps).rep_id == "us"
    capped = [rep("de", territories=frozenset({"DE"}), max_open=1), rep("us")]
    full = decide(german, capped, loads={"de": RepLoad(open_leads=1)})
    assert {c.rep_id: c.excluded_because for c in full.candidates}["de"] == ["over_capacity:open"]


def test_account_keys_and_matches_are_the_same_on_every_call() -> None:
    """Cached domain chains and company keys: the second lead of a company matches as the first did."""
    acme = Account(id="acme", owner="r1", name="ACME, Inc.", domains=("acme.com",))
    book = AccountBook.of([acme])
    for email in ("jane@uk.acme.com", "joe@UK.Acme.com."):
        lead = view(lead={"email": email, "country": "GB"}, enrichment={})
        assert lead_match_keys(lead) == (["uk.acme.com", "acme.com"], [])
        match = book.match(lead)
        assert match is not None and (match.method, match.value) == ("parent_domain", "acme.com")
    by_name = view(lead={"email": "x@gmail.example", "company": "Acme Inc"}, enrichment={})
    assert lead_match_keys(by_name)[1] == ["acme"]
    match = book.match(by_name)
    assert match is not None and match.method == "company_name"
    assert AccountBook.of([]).match(by_name) is None  # an empty book: nothing to match, whatever the lead holds


def test_a_first_match_worked_out_by_the_caller_decides_as_route_alone_does() -> None:
    """The batch evaluates each lead's rules once (lock guess, then decision): same decision as evaluating in route."""
    rules = load_rules(yaml.safe_load(DEFAULT_RULES_YAML))
    reps = [rep("ae1"), rep("ae2"), rep("sdr1", team="sdr")]
    teams = [Team("sales", "Sales"), Team("sdr", "SDR")]
    leads = [view(), view(score={"grade": "C", "qualified": True}), view(is_test=True), view(score={"grade": "D"})]
    for lead in leads:
        for accounts in ({}, {"acme.io": "ae2"}):  # no owner: the account-owner rule passes the lead on
            alone = route(lead, rules=rules, teams=teams, reps=reps, loads={}, rotation={}, accounts=accounts,
                          previous_rep=None, now=WED_15_UTC)  # fmt: skip
            given = route(lead, rules=rules, teams=teams, reps=reps, loads={}, rotation={}, accounts=accounts,
                          previous_rep=None, now=WED_15_UTC, first=FirstMatch(rules.first_match(lead)))  # fmt: skip
            assert given == alone


@pytest.mark.parametrize("business_hours", [True, False])
@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_a_batch_clock_moved_from_the_last_batch_is_the_clock_walked_afresh(business_hours: bool, tz: str) -> None:
    """Consecutive batches reuse the last clock moved by the time since only where the walk agrees: every start
    over two weeks (inside and across spans, nights, weekends, a closed day, a DST change) gives the walk's due
    time and timers, to the microsecond."""
    weeks = {
        "office": WorkingHours(closed_dates=frozenset({date(2026, 11, 3)})),
        "always": WorkingHours.always(),
    }
    policies = [SlaPolicy("A", 5, business_hours), SlaPolicy("B", 60, business_hours, (0.25, 0.75))]
    policies.append(SlaPolicy("Z", 0, business_hours))  # due the moment it starts (at a span, in working time)
    start = WED_15_UTC.replace(year=2026, month=10, day=28, hour=6, minute=0, second=0, microsecond=0)
    for name, hours in weeks.items():
        for policy in policies:
            now = start
            while now < start + timedelta(days=14):
                due, timers = _clock(Pending(), policy, hours, tz, now)
                expected_due = sla_deadline(now, policy.minutes, business_hours=business_hours, hours=hours, tz=tz)
                expected = [
                    {k: v for k, v in row.items() if k not in ("lead_id", "assignment_id")}
                    for row in clock_rows("", 0, policy, now, expected_due, hours, tz)
                ]
                assert (due, timers) == (expected_due, expected), (name, policy.grade, now)
                now += timedelta(minutes=7, seconds=13, microseconds=1_001)
            span = working_span(start + timedelta(days=1, hours=10), hours=hours, tz=tz)
            assert span is not None
            for now in (span[1] - timedelta(seconds=1), span[1]):  # the last second of a span, then its end
                due, _timers = _clock(Pending(), policy, hours, tz, now)
                assert due == sla_deadline(now, policy.minutes, business_hours=business_hours, hours=hours, tz=tz)


def test_an_around_the_clock_batch_clock_is_walked_about_once_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 24-hour week is one working span past midnight, so polls every few seconds reuse the last clock through
    the hour before midnight too (a span ending at each midnight walked every poll of that hour)."""
    import routing.usecases.batch_rows as batch_rows

    walks = []
    walk = batch_rows.sla_deadline
    monkeypatch.setattr(batch_rows, "sla_deadline", lambda *a, **k: walks.append(a[0]) or walk(*a, **k))
    policy, hours = SlaPolicy("B", 60, True, (0.5,)), WorkingHours.always()
    start = WED_15_UTC.replace(year=2026, month=11, day=10, hour=12, minute=0, second=0, microsecond=0)
    now = start
    while now < start + timedelta(days=3):
        _clock(Pending(), policy, hours, "Europe/Berlin", now)
        now += timedelta(seconds=37)
    assert len(walks) <= 4  # the first, then about one a day


def _roster(reps_yaml: str) -> Roster:
    teams, reps = parse_reps(yaml.safe_load(reps_yaml))
    return Roster(1, teams, reps)


_TEAM = """
teams: [{id: t, name: T, method: round_robin}]
reps: [{id: r1, name: R1, email: r1@example.com, team: t}, {id: r2, name: R2, email: r2@example.com, team: t}]
"""


def test_worked_leads_are_counted_only_where_a_decision_reads_a_load() -> None:
    """A batch counts each rep's worked open leads only when a max_open or a least_loaded pick can read them."""
    plain, rules = _roster(_TEAM), load_rules(DEFAULT_RULES_YAML)
    assert not needs_worked(plain, rules)
    capped = _roster(_TEAM.replace("team: t}]", "team: t, max_open: 3}]"))
    assert needs_worked(capped, rules)
    assert needs_worked(_roster(_TEAM.replace("round_robin", "least_loaded")), rules)
    by_rule = (
        "fallback_team: t\nrules:\n  - {id: all, when: {lead.country: DE}, action: {team: t, method: least_loaded}}\n"
    )
    assert needs_worked(plain, load_rules(by_rule))
    assert needs_worked(plain, load_rules("fallback_team: t\nfallback_method: least_loaded\nrules: []\n"))
    assert not needs_worked(plain, load_rules("fallback_team: t\nrules: []\n"))
