"""Rule matching: every operator, combinators, first match wins, fallback, validation errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from routing_builders import decide, rep, view

from routing.domain import DEFAULT_RULES_YAML, RulesError, load_rules

pytestmark = pytest.mark.unit


def matches(when: Any, lead: dict[str, Any]) -> bool:
    rules = load_rules({"fallback_team": "sales", "rules": [{"id": "r", "when": when, "action": {"nurture": True}}]})
    return rules.first_match(lead) is not None


LEAD = view(
    lead={"country": "DE", "language": "de-AT", "email": "kim@globex.de", "job_title": "VP Sales", "utm": {}},
    enrichment={
        "domain": "globex.de",
        "company": {"employee_band": "1001-5000", "industry": "Software"},
        "technologies": ["Salesforce", "HubSpot"],
    },
    score={"fit": 82.5, "intent": 40, "grade": "B", "qualified": True},
)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"score.grade": {"equals": "B"}}, True),
        ({"score.grade": {"equals": "b"}}, True),  # strings compare without case
        ({"score.grade": {"equals": "A"}}, False),
        ({"score.grade": "B"}, True),  # bare scalar = equals
        ({"score.qualified": True}, True),
        ({"score.qualified": 1}, False),  # a count of 1 is not `true`
        ({"score.grade": {"one_of": ["A", "B"]}}, True),
        ({"score.grade": ["C", "D"]}, False),  # bare list = one_of
        ({"lead.job_title": {"contains": "sales"}}, True),
        ({"lead.job_title": {"contains": "marketing"}}, False),
        ({"enrichment.technologies": {"contains": "hubspot"}}, True),  # list membership
        ({"enrichment.technologies": {"contains": "Hub"}}, False),  # members, not substrings
        ({"lead.email": {"regex": r"@globex\.(de|com)$"}}, True),
        ({"lead.email": {"regex": r"^admin@"}}, False),
        ({"enrichment.company.employee_band": {"regex": "^1001"}}, True),
        ({"score.fit": {"range": {"gte": 80, "lt": 90}}}, True),
        ({"score.fit": {"range": {"gt": 82.5}}}, False),
        ({"score.fit": {"range": [80, 82.5]}}, True),  # list form is inclusive at both ends
        ({"score.fit": {"range": [None, 50]}}, False),
        ({"score.grade": {"range": [0, 10]}}, False),  # a non-number is never in range
        ({"lead.company": {"exists": False}}, True),
        ({"lead.country": {"exists": True}}, True),
        ({"lead.company": {"equals": "Globex"}}, False),  # a missing field satisfies nothing
        ({"score.grade": {"not": {"one_of": ["C", "D"]}}}, True),
        ({"score.grade": {"not": "B"}}, False),
        ({"score.grade": "B", "lead.country": "DE"}, True),  # entries are ANDed
        ({"score.grade": "B", "lead.country": "FR"}, False),
        ({"any": [{"lead.country": "FR"}, {"lead.language": {"regex": "^de"}}]}, True),
        ({"any": [{"lead.country": "FR"}, {"score.grade": "A"}]}, False),
        ({"all": [{"lead.country": "DE"}, {"score.fit": {"range": {"gte": 90}}}]}, False),
        ({"not": {"lead.country": {"one_of": ["US", "CA"]}}}, True),
        ({"not": {"any": [{"lead.country": "DE"}, {"score.grade": "A"}]}}, False),
        (None, True),  # no `when` matches everything
    ],
)
def test_operators(when: Any, expected: bool) -> None:
    assert matches(when, LEAD) is expected


def test_norway_stays_a_country_in_yaml() -> None:
    rules = load_rules("fallback_team: sales\nrules:\n  - when: {lead.country: NO}\n    action: {nurture: true}\n")
    assert rules.first_match(view(lead={"country": "NO"})) is not None
    assert rules.first_match(view(lead={"country": "SE"})) is None


def test_first_match_wins_and_unmatched_leads_use_the_fallback_team() -> None:
    rules = load_rules(
        {
            "fallback_team": "sdr",
            "rules": [
                {
                    "id": "enterprise",
                    "when": {"score.fit": {"range": {"gte": 90}}},
                    "action": {"rep": "boss"},
                },
                {"id": "hot", "when": {"score.grade": "A"}, "action": {"team": "sales"}},
                {"id": "also-hot", "when": {"score.grade": "A"}, "action": {"nurture": True}},
            ],
        }
    )
    reps = [rep("boss"), rep("s1"), rep("d1", team="sdr")]
    assert decide(view(), reps, rules=rules).rule_id == "hot"
    top = decide(view(score={"grade": "A", "fit": 95, "qualified": True}), reps, rules=rules)
    assert (top.rule_id, top.rep_id, top.method) == ("enterprise", "boss", "direct")
    unmatched = decide(view(score={"grade": "C", "fit": 10, "qualified": True}), reps, rules=rules)
    assert (unmatched.rule_id, unmatched.team_id, unmatched.rep_id) == (None, "sdr", "d1")
    assert "No rule matched" in unmatched.reason


def test_json_and_yaml_of_the_same_rules_have_the_same_version_and_edits_change_it() -> None:
    data = {
        "fallback_team": "sdr",
        "rules": [{"id": "x", "when": {"score.grade": "A"}, "action": {"team": "s"}}],
    }
    from_yaml = load_rules("fallback_team: sdr\nrules:\n- id: x\n  when: {score.grade: A}\n  action: {team: s}\n")
    assert load_rules(json.dumps(data)).version == load_rules(data).version == from_yaml.version
    data["rules"][0]["when"] = {"score.grade": "B"}
    assert load_rules(data).version != from_yaml.version


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (
            {
                "fallback_team": "s",
                "rules": [{}, {}, {"when": {"score.grade": {"equal": "A"}}, "action": {"nurture": True}}],
            },
            "rules[2].when.score.grade: unknown operator 'equal'",
        ),
        ({"rules": []}, "fallback_team: is required"),
        (
            {"fallback_team": "s", "rules": [{"when": {"scor.grade": "A"}, "action": {"nurture": True}}]},
            "rules[0].when.scor.grade: unknown field 'scor.grade'",
        ),
        (
            {
                "fallback_team": "s",
                "rules": [{"when": {"lead.email": {"regex": "(["}}, "action": {"nurture": True}}],
            },
            "rules[0].when.lead.email.regex: invalid regex",
        ),
        (
            {
                "fallback_team": "s",
                "rules": [{"when": {"score.fit": {"range": [9, 1]}}, "action": {"nurture": True}}],
            },
            "rules[0].when.score.fit.range: lower bound is above upper bound",
        ),
        (
            {
                "fallback_team": "s",
                "rules": [{"when": {"score.fit": {"range": {"gte": "x"}}}, "action": {"nurture": True}}],
            },
            "rules[0].when.score.fit.range.gte: expected a number",
        ),
        (
            {
                "fallback_team": "s",
                "rules": [{"when": {"score.grade": {"one_of": []}}, "action": {"nurture": True}}],
            },
            "rules[0].when.score.grade.one_of: expected a non-empty list",
        ),
        (
            {
                "fallback_team": "s",
                "rules": [{"when": {"lead.country": {"exists": "yes"}}, "action": {"nurture": True}}],
            },
            "rules[0].when.lead.country.exists: expected true or false",
        ),
        (
            {"fallback_team": "s", "rules": [{"when": {"any": []}, "action": {"nurture": True}}]},
            "rules[0].when.any: expected a non-empty list",
        ),
        (
            {"fallback_team": "s", "rules": [{"action": {"team": "s", "method": "random"}}]},
            "rules[0].action.method: unknown method 'random'",
        ),
        (
            {"fallback_team": "s", "rules": [{"action": {"team": "s", "nurture": True}}]},
            "rules[0].action: needs exactly one of",
        ),
        ({"fallback_team": "s", "rules": [{"when": {"score.grade": "A"}}]}, "rules[0].action: is required"),
        (
            {
                "fallback_team": "s",
                "rules": [{"action": {"nurture": True}, "options": {"outside_hours": "wait"}}],
            },
            "rules[0].options.outside_hours: expected one of assign, hold, queue",
        ),
        (
            {
                "fallback_team": "s",
                "rules": [{"action": {"nurture": True}, "options": {"require_lang": True}}],
            },
            "rules[0].options.require_lang: unknown option",
        ),
        (
            {
                "fallback_team": "s",
                "rules": [{"id": "a", "action": {"nurture": True}}, {"id": "a", "action": {"nurture": True}}],
            },
            "rules[1].id: duplicate rule id 'a'",
        ),
        ({"fallback_team": "s", "rule": []}, "rule: unknown field"),
    ],
)
def test_validation_errors_name_the_field(document: dict[str, Any], error: str) -> None:
    with pytest.raises(RulesError) as raised:
        load_rules(document)
    assert any(message.startswith(error) for message in raised.value.errors), raised.value.errors


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(RulesError) as raised:
        load_rules({"rules": [{"when": {"score.grade": {"equal": "A"}}, "action": {"team": ""}}]})
    assert len(raised.value.errors) == 3  # fallback_team, the operator, the empty team id


def test_broken_yaml_is_a_rules_error() -> None:
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules("rules: [unclosed")


def test_default_rules_load_and_name_the_expected_teams() -> None:
    rules = load_rules(DEFAULT_RULES_YAML)
    assert rules.referenced_teams() == {"sales", "sdr"}
    assert [rule.id for rule in rules.rules][:2] == ["test-leads", "not-qualified"]


@pytest.mark.parametrize(
    ("lead", "outcome", "team"),
    [
        (view(is_test=True), "nurture", None),
        (view(score={"grade": "A", "qualified": False}), "nurture", None),
        (view(score={"grade": "D", "qualified": True}), "nurture", None),
        (view(score={"grade": "A", "qualified": True}), "assigned", "sales"),
        (view(score={"grade": "B", "qualified": True}), "assigned", "sales"),
        (view(score={"grade": "C", "qualified": True}), "assigned", "sdr"),
        (view(score={"grade": None, "qualified": True}), "assigned", "sdr"),  # ungraded: fallback team
    ],
)
def test_default_rules_route_by_grade(lead: dict[str, Any], outcome: str, team: str | None) -> None:
    reps = [rep("ae-1", weight=3), rep("ae-2"), rep("sdr-1", team="sdr"), rep("sdr-2", team="sdr")]
    decision = decide(lead, reps, rules=load_rules(DEFAULT_RULES_YAML))
    assert (decision.outcome, decision.team_id) == (outcome, team)
    assert (decision.rep_id is not None) == (outcome == "assigned")


def test_default_rules_send_a_known_account_to_its_owner_first() -> None:
    reps = [rep("ae-1"), rep("sdr-1", team="sdr"), rep("owner", team="sdr")]
    decision = decide(view(), reps, rules=load_rules(DEFAULT_RULES_YAML), accounts={"acme.io": "owner"})
    assert (decision.rep_id, decision.method, decision.rule_id) == ("owner", "account_owner", "account-owner")
    # Test leads never reach the owner.
    test_lead = decide(view(is_test=True), reps, rules=load_rules(DEFAULT_RULES_YAML), accounts={"acme.io": "owner"})
    assert test_lead.outcome == "nurture"
