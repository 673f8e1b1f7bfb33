"""route(): each exclusion reason, affinity, escalation, holds, queues and the Decision shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

import pytest
from routing_builders import WED_15_UTC, decide, rep, team_rules, view

from routing.domain import DEFAULT_RULES_YAML, RepLoad, Team, WorkingHours, load_rules

pytestmark = pytest.mark.unit

NINE_TO_FIVE = WorkingHours()


def reasons_for(subject, **kwargs) -> list[str]:
    """Route to a team of `subject` plus an always-eligible peer; return why `subject` was excluded."""
    decision = decide(kwargs.pop("lead", view()), [subject, rep("peer")], **kwargs)
    assert decision.rep_id == "peer"
    by_id = {c.rep_id: c for c in decision.candidates}
    assert not by_id["x"].eligible
    return by_id["x"].excluded_because


@pytest.mark.parametrize(
    ("subject", "kwargs", "reason"),
    [
        (rep("x", status="away"), {}, "status:away"),
        (rep("x", status="ooo"), {}, "out_of_office"),
        (
            rep("x", ooo_from=WED_15_UTC - timedelta(days=1), ooo_until=WED_15_UTC + timedelta(days=1)),
            {},
            "out_of_office",
        ),
        (rep("x", ooo_from=WED_15_UTC - timedelta(hours=1)), {}, "out_of_office"),  # open-ended leave
        (rep("x", status="left"), {}, "left"),
        (rep("x", hours=NINE_TO_FIVE, timezone="America/Los_Angeles"), {}, "outside_hours"),  # 07:00 there
        (rep("x", hours=NINE_TO_FIVE, timezone="Asia/Dhaka"), {}, "outside_hours"),  # 21:00 there
        (
            rep("x", max_open=5),
            {"loads": {"x": RepLoad(open_leads=5, assigned_today=0)}},
            "over_capacity:open",
        ),
        (
            rep("x", max_per_day=3),
            {"loads": {"x": RepLoad(open_leads=0, assigned_today=3)}},
            "over_capacity:daily",
        ),
        (rep("x", languages=frozenset({"de"})), {"rules": team_rules(require_language=True)}, "language"),
        (rep("x", territories=frozenset({"EMEA"})), {}, "territory"),
        (rep("x", territories=frozenset({"US-NY"})), {}, "territory"),  # lead is in US-CA
        (rep("x", segments=frozenset({"smb"})), {"rules": team_rules(segment="enterprise")}, "segment"),
        (rep("x"), {"exclude": frozenset({"x"})}, "already_tried"),
    ],
)
def test_each_exclusion_reason(subject, kwargs, reason: str) -> None:
    assert reason in reasons_for(subject, **kwargs)


@pytest.mark.parametrize(
    "subject",
    [
        rep("x", ooo_from=WED_15_UTC + timedelta(days=1), ooo_until=WED_15_UTC + timedelta(days=3)),  # leave not begun
        rep("x", ooo_from=WED_15_UTC - timedelta(days=3), ooo_until=WED_15_UTC),  # back exactly now
        rep("x", hours=NINE_TO_FIVE, timezone="Europe/London"),  # 15:00 there
        rep("x", max_open=6),  # 5 open of 6
        rep("x", languages=frozenset({"es", "en"})),
        rep("x", languages=frozenset({"de"})),  # language only counts when the rule asks
        rep("x", territories=frozenset({"NORAM"})),
        rep("x", territories=frozenset({"US-CA"})),
        rep("x", territories=frozenset({"US"})),
        rep("x", segments=frozenset({"smb"})),  # no segment asked
    ],
)
def test_reps_that_fit_are_eligible(subject) -> None:
    decision = decide(view(), [subject], loads={"x": RepLoad(open_leads=5, assigned_today=0)})
    assert decision.rep_id == "x"
    assert decision.candidates[0].excluded_because == []


def test_a_lead_without_a_country_is_not_blocked_by_territories() -> None:
    lead = view(lead={"language": "en", "email": "a@b.io"})
    assert decide(lead, [rep("x", territories=frozenset({"EMEA"}))]).rep_id == "x"


def test_require_territory_false_ignores_territories() -> None:
    rules = team_rules(require_territory=False)
    assert decide(view(), [rep("x", territories=frozenset({"EMEA"}))], rules=rules).rep_id == "x"


def test_lead_language_matches_on_the_primary_subtag() -> None:
    lead = view(lead={"country": "BR", "language": "pt-BR"})
    reps = [rep("en", languages=frozenset({"en"})), rep("pt", languages=frozenset({"pt"}))]
    assert decide(lead, reps, rules=team_rules(require_language=True)).rep_id == "pt"


def test_escalation_reassigns_to_the_next_eligible_rep() -> None:
    reps = [rep("a"), rep("b"), rep("c")]
    first = decide(view(), reps)
    second = decide(view(), reps, rotation=first.rotation, exclude=frozenset({first.rep_id}))
    third = decide(view(), reps, rotation=second.rotation, exclude=frozenset({first.rep_id, second.rep_id}))
    assert len({first.rep_id, second.rep_id, third.rep_id}) == 3
    exhausted = decide(view(), reps, exclude=frozenset({"a", "b", "c"}))
    assert (exhausted.outcome, exhausted.rep_id, exhausted.team_id) == ("queued", None, "sales")


def test_a_duplicate_goes_back_to_the_rep_holding_the_original() -> None:
    reps = [rep("a"), rep("b", max_open=1)]
    # b is over capacity, but a returning contact belongs with the rep who already knows them.
    decision = decide(view(duplicate_of="lead-1"), reps, previous_rep="b", loads={"b": RepLoad(3, 3)})
    assert (decision.rep_id, decision.method, decision.rotation) == ("b", "previous_rep", {})


def test_a_duplicate_skips_an_unavailable_previous_rep_and_nurture_rules_still_apply() -> None:
    reps = [rep("a"), rep("b", status="ooo")]
    assert decide(view(duplicate_of="lead-1"), reps, previous_rep="b").rep_id == "a"
    nurture = load_rules({"fallback_team": "sales", "rules": [{"action": {"nurture": True}}]})
    assert decide(view(duplicate_of="lead-1"), [rep("a")], previous_rep="a", rules=nurture).outcome == "nurture"
    # An escalation away from the previous rep must not bounce the lead straight back.
    back = decide(view(duplicate_of="lead-1"), [rep("a"), rep("b")], previous_rep="b", exclude=frozenset({"b"}))
    assert back.rep_id == "a"


def test_sticky_duplicates_can_be_switched_off() -> None:
    rules = load_rules({"fallback_team": "sales", "sticky_duplicates": False, "rules": [{"action": {"team": "sales"}}]})
    reps = [rep("a"), rep("b")]
    picks = {decide(view(duplicate_of="l-1"), reps, rules=rules, previous_rep="b").rep_id}
    assert picks == {"a"}  # fresh rotation picks a (ids sort first), not the previous rep b


ACCOUNT_RULES = load_rules(
    {
        "fallback_team": "sales",
        "rules": [
            {
                "id": "owner",
                "action": {"account_owner": True, "fallback": {"team": "sdr", "method": "round_robin"}},
            },
        ],
    }
)


def test_account_owner_wins_even_when_busy_but_not_when_out_of_office() -> None:
    reps = [rep("owner", max_open=1), rep("s1", team="sdr")]
    busy = decide(view(), reps, rules=ACCOUNT_RULES, accounts={"ACME.io": "owner"}, loads={"owner": RepLoad(9, 9)})
    assert (busy.rep_id, busy.method) == ("owner", "account_owner")
    reps[0] = rep("owner", status="ooo")
    away = decide(view(), reps, rules=ACCOUNT_RULES, accounts={"acme.io": "owner"})
    assert (away.rep_id, away.team_id, away.method) == ("s1", "sdr", "round_robin")
    assert any(c.rep_id == "owner" and "out_of_office" in c.excluded_because for c in away.candidates)


def test_account_owner_domain_falls_back_to_the_email_domain() -> None:
    lead = view(enrichment={}, lead={"country": "US", "email": "Pat@Initech.com"})
    decision = decide(lead, [rep("o"), rep("s1", team="sdr")], rules=ACCOUNT_RULES, accounts={"initech.com": "o"})
    assert decision.rep_id == "o"


def test_account_owner_without_fallback_passes_to_the_next_rule() -> None:
    rules = load_rules(
        {
            "fallback_team": "sales",
            "rules": [
                {"id": "owner", "action": {"account_owner": True}},
                {"id": "rest", "action": {"team": "sdr"}},
            ],
        }
    )
    decision = decide(view(), [rep("s1", team="sdr")], rules=rules, accounts={})
    assert (decision.rule_id, decision.rep_id) == ("rest", "s1")


def test_direct_rep_action_queues_in_that_reps_team_when_they_cannot_take_it() -> None:
    rules = load_rules({"fallback_team": "sales", "rules": [{"id": "vip", "action": {"rep": "boss"}}]})
    decision = decide(view(), [rep("boss", team="sdr", status="away")], rules=rules)
    assert (decision.outcome, decision.team_id, decision.rule_id) == ("queued", "sdr", "vip")
    missing = decide(view(), [], rules=rules)
    assert (missing.outcome, missing.team_id) == ("queued", "sales")
    assert "not in the roster" in missing.reason


NIGHT = datetime(2025, 3, 5, 23, 0, tzinfo=UTC)  # Wednesday 23:00 in London


def night_team() -> list:
    return [
        rep("lon", hours=NINE_TO_FIVE, timezone="Europe/London"),
        rep("dhaka", hours=NINE_TO_FIVE, timezone="Asia/Dhaka"),  # starts 03:00 UTC Thursday
        rep("gone", status="away", hours=NINE_TO_FIVE, timezone="Asia/Tokyo"),
    ]


def test_hold_outside_hours_waits_for_the_first_rep_to_start() -> None:
    decision = decide(view(), night_team(), rules=team_rules(hold_outside_hours=True), now=NIGHT)
    assert (decision.outcome, decision.rep_id, decision.team_id) == ("held", None, "sales")
    assert decision.hold_until == datetime(2025, 3, 6, 3, 0, tzinfo=UTC)
    assert "dhaka" in decision.reason


def test_outside_hours_assign_picks_among_reps_only_outside_hours() -> None:
    decision = decide(view(), night_team(), rules=team_rules(outside_hours="assign"), now=NIGHT)
    assert decision.outcome == "assigned"
    assert decision.rep_id in {"lon", "dhaka"}


def test_outside_hours_queue_queues() -> None:
    decision = decide(view(), night_team(), rules=team_rules(outside_hours="queue"), now=NIGHT)
    assert (decision.outcome, decision.team_id, decision.rep_id) == ("queued", "sales", None)


def test_in_hours_reps_are_preferred_over_off_hours_reps() -> None:
    reps = [
        rep("lon", hours=NINE_TO_FIVE, timezone="Europe/London"),
        rep("la", hours=NINE_TO_FIVE, timezone="America/Los_Angeles"),
    ]
    picks = set()
    rotation: dict = {}
    for _ in range(6):
        decision = decide(view(), reps, rotation=rotation)
        rotation = decision.rotation
        picks.add(decision.rep_id)
    assert picks == {"lon"}


def test_no_eligible_rep_uses_the_action_fallback_before_queueing() -> None:
    rules = load_rules(
        {"fallback_team": "sales", "rules": [{"action": {"team": "sales", "fallback": {"team": "sdr"}}}]}
    )
    decision = decide(view(), [rep("a", status="away"), rep("s", team="sdr")], rules=rules)
    assert (decision.rep_id, decision.team_id) == ("s", "sdr")


def test_unknown_team_is_queued_visibly() -> None:
    rules = load_rules({"fallback_team": "sales", "rules": [{"action": {"team": "salse"}}]})
    decision = decide(view(), [rep("a")], rules=rules)
    assert (decision.outcome, decision.team_id) == ("queued", "salse")
    assert "not in the roster" in decision.reason


def test_least_loaded_picks_fewest_open_and_rotates_ties() -> None:
    reps = [rep("a"), rep("b"), rep("c")]
    loads = {"a": RepLoad(4, 0), "b": RepLoad(1, 0), "c": RepLoad(1, 0)}
    first = decide(view(), reps, rules=team_rules("least_loaded"), loads=loads)
    second = decide(view(), reps, rules=team_rules("least_loaded"), loads=loads, rotation=first.rotation)
    assert {first.rep_id, second.rep_id} == {"b", "c"}


def test_round_robin_ignores_weights() -> None:
    reps = [rep("a", weight=5), rep("b", weight=1)]
    rotation: dict = {}
    wins = {"a": 0, "b": 0}
    for _ in range(10):
        decision = decide(view(), reps, rules=team_rules("round_robin"), rotation=rotation)
        rotation = decision.rotation
        wins[decision.rep_id] += 1
    assert wins == {"a": 5, "b": 5}


def test_team_default_method_applies_when_the_rule_names_none() -> None:
    rules = load_rules({"fallback_team": "sales", "rules": [{"action": {"team": "sales"}}]})
    teams = [Team("sales", "Sales", method="least_loaded")]
    decision = decide(view(), [rep("a"), rep("b")], rules=rules, teams=teams, loads={"a": RepLoad(3, 0)})
    assert (decision.method, decision.rep_id) == ("least_loaded", "b")


def test_decision_is_explained_without_pii_and_serialises_to_json() -> None:
    reps = [rep("a", weight=2, name="Dana Secret", email="dana@secret.example"), rep("b", status="away")]
    decision = decide(view(lead={"country": "US", "email": "lead@private.example"}), reps)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["rep_id"] == "a" and data["ruleset_version"] == team_rules().version
    assert data["candidates"] == [
        {"rep_id": "a", "eligible": True, "excluded_because": []},
        {"rep_id": "b", "eligible": False, "excluded_because": ["status:away"]},
    ]
    assert "a won" in decision.reason and "b (status:away)" in decision.reason
    for secret in ("Dana", "dana@", "private.example"):
        assert secret not in decision.reason


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide(view(), [rep("a")], now=datetime(2025, 3, 5, 12, 0))


def test_working_hours_with_lunch_break() -> None:
    lunch = WorkingHours(by_weekday={2: [(time(9), time(12)), (time(13), time(17))]})
    at_lunch = datetime(2025, 3, 5, 12, 30, tzinfo=UTC)
    assert decide(view(), [rep("x", hours=lunch), rep("peer")], now=at_lunch).rep_id == "peer"


def test_prefer_language_uses_speakers_first_and_anyone_when_none_is_free() -> None:
    lead = view(lead={"country": "DE", "language": "de"})
    reps = [rep("en1", languages=frozenset({"en"})), rep("de1", languages=frozenset({"de", "en"}))]
    rules = team_rules(prefer_language=True)
    rotation: dict = {}
    for _ in range(4):
        decision = decide(lead, reps, rules=rules, rotation=rotation)
        rotation = decision.rotation
        assert decision.rep_id == "de1"
    assert {c.rep_id: c.excluded_because for c in decision.candidates} == {"en1": ["language"], "de1": []}
    busy = decide(lead, reps, rules=rules, exclude=frozenset({"de1"}))
    assert busy.rep_id == "en1"
    # require_language, by contrast, queues rather than hand a German lead to a non-speaker.
    strict = decide(lead, reps, rules=team_rules(require_language=True), exclude=frozenset({"de1"}))
    assert strict.outcome == "queued"


def test_default_rules_never_queue_a_hot_lead_for_want_of_a_speaker() -> None:
    reps = [rep("ae-1", languages=frozenset({"en"})), rep("sdr-1", team="sdr")]
    french = view(lead={"country": "FR", "language": "fr"})
    assert decide(french, reps, rules=load_rules(DEFAULT_RULES_YAML)).rep_id == "ae-1"
