"""SLA policies as data: `sla:` blocks on rules and teams, their errors, resolution (rule > team > defaults)."""

from __future__ import annotations

import pytest

from routing.domain import (
    EscalationPolicy,
    LadderStep,
    ResolvedSla,
    RosterError,
    RulesError,
    default_ladder,
    default_sla_policies,
    load_rules,
    next_escalation_step,
    parse_reps,
    resolve_sla,
)
from routing.domain.sla import FollowUp, SlaBlock, WarnPoint

pytestmark = pytest.mark.unit

RULES = """
fallback_team: t
rules:
  - id: hot
    when: {score.grade: A}
    action: {team: t}
    sla:
      minutes: {A: 3, B: 30}
      business_hours: false
      warn_at: [0.5, {minutes_before: 1}]
      escalation: [reassign, {step: notify_manager, minutes: 10}, manager, queue]
      follow_up: {touches: 3, within_hours: 48}
  - id: rest
    action: {team: t}
"""


def test_a_rules_sla_block_parses_every_field_and_changes_the_version() -> None:
    rules = load_rules(RULES)
    hot = rules.rule("hot")
    assert hot is not None and hot.sla is not None
    assert hot.sla.minutes_for("a") == 3 and hot.sla.minutes_for("C") is None
    assert hot.sla.business_hours is False
    assert [step.step for step in hot.sla.escalation or ()] == ["reassign", "notify_manager", "manager", "queue"]
    assert hot.sla.escalation and hot.sla.escalation[1].minutes == 10
    assert hot.sla.follow_up == FollowUp(3, 48)
    assert rules.rule("rest") is not None and rules.rule("rest").sla is None  # type: ignore[union-attr]
    # The block is part of the document: changing it is a new ruleset version.
    assert load_rules(RULES.replace("B: 30", "B: 20")).version != rules.version


def test_bad_sla_blocks_are_refused_with_the_path_of_each_problem() -> None:
    text = """
fallback_team: t
rules:
  - {id: a, action: {team: t}}
  - {id: b, action: {team: t}}
  - id: c
    action: {team: t}
    sla:
      minutes: 0
      business_hours: sometimes
      warn_at: [1.5, {minutes_before: -2}]
      escalation: [reassign, {step: call_ceo}]
      follow_up: {touches: 1, within_hours: 0}
      deadline: 5
"""
    with pytest.raises(RulesError) as caught:
        load_rules(text)
    errors = caught.value.errors
    assert "rules[2].sla.minutes: must be > 0" in errors
    for path in (
        "rules[2].sla.business_hours: ",
        "rules[2].sla.warn_at[0]: ",
        "rules[2].sla.warn_at[1]: ",
        "rules[2].sla.escalation[1]: unknown step 'call_ceo'",
        "rules[2].sla.follow_up.touches: ",
        "rules[2].sla.follow_up.within_hours: must be > 0",
        "rules[2].sla.deadline: unknown field",
    ):
        assert any(error.startswith(path) for error in errors), (path, errors)
    with pytest.raises(RulesError, match=r"rules\[0\]\.sla\.minutes\.E: unknown grade"):
        load_rules("fallback_team: t\nrules: [{action: {team: t}, sla: {minutes: {E: 5}}}]")


def test_a_teams_sla_block_is_parsed_and_checked_in_the_roster() -> None:
    teams, _ = parse_reps({"teams": [{"id": "t", "sla": {"minutes": 20, "escalation": ["notify_manager"]}}]})
    assert teams[0].sla == SlaBlock(minutes=20, escalation=(LadderStep("notify_manager"),))
    with pytest.raises(RosterError) as caught:
        parse_reps({"teams": [{"id": "t", "sla": {"minutes": -1}}]})
    assert caught.value.errors == ["teams[0].sla.minutes: must be > 0"]


def test_the_rules_block_wins_over_the_teams_which_wins_over_the_defaults_field_by_field() -> None:
    defaults = default_sla_policies()
    ladder = default_ladder(EscalationPolicy(2, "manager"))
    rule = SlaBlock(minutes_by_grade=(("A", 2.0),), business_hours=False)
    team = SlaBlock(minutes=45, business_hours=True, escalation=(LadderStep("notify_manager", 15),))

    def resolve(grade: str, rule_block: SlaBlock | None, team_block: SlaBlock | None) -> ResolvedSla:
        return resolve_sla(
            grade,
            rule_block=rule_block,
            team_block=team_block,
            defaults=defaults,
            ladder=ladder,
            rule_id="hot",
            team_id="t",
        )

    a = resolve("A", rule, team)
    assert (a.policy.minutes, a.policy.business_hours, a.source) == (2, False, "rule:hot")
    assert a.escalation == (LadderStep("notify_manager", 15),)  # the rule sets no ladder: the team's applies
    b = resolve("B", rule, team)  # the rule has no minutes for B: the team's
    assert (b.policy.minutes, b.policy.business_hours, b.source) == (45, False, "team:t")
    c = resolve("C", None, None)  # no blocks: exactly the environment's policy and ladder
    assert (c.policy, c.escalation, c.follow_up, c.source) == (defaults["C"], ladder, None, "default")


def test_warnings_minutes_before_due_become_fractions_of_the_resolved_clock() -> None:
    points = (WarnPoint(fraction=0.5), WarnPoint(minutes_before=2), WarnPoint(minutes_before=30))
    block = SlaBlock(minutes=10, warn_at=points)
    resolved = resolve_sla("A", rule_block=block, team_block=None, defaults=default_sla_policies(), ladder=())
    assert resolved.policy.warn_at == (0.5, 0.8)  # 30 minutes before a 10-minute clock is no warning at all


def test_the_ladder_runs_in_order_with_a_notify_step_and_its_own_clock_then_repeats_its_last_step() -> None:
    policy = default_sla_policies()["A"]
    sla = ResolvedSla(
        policy, (LadderStep("reassign"), LadderStep("notify_manager", 10), LadderStep("queue")), FollowUp(3, 48)
    )
    assert [sla.step_after(n).step for n in range(5)] == [  # type: ignore[union-attr]
        "reassign",
        "notify_manager",
        "queue",
        "queue",
        "queue",
    ]
    notify = sla.step_after(1)
    assert notify is not None
    assert sla.for_step(notify).policy.minutes == 10  # the notify step's own clock
    assert sla.for_step(LadderStep("reassign")).policy.minutes == policy.minutes  # no minutes: the policy's
    assert ResolvedSla(policy, ()).step_after(0) is None  # an empty ladder escalates nothing
    assert ResolvedSla.from_dict(sla.to_dict()) == sla  # kept with the assignment and read back whole
    assert ResolvedSla.from_dict({"policy": "A"}) is None  # an assignment from before policies were data


@pytest.mark.parametrize(("max_reassignments", "then"), [(2, "manager"), (0, "queue"), (1, "queue")])
def test_the_environments_ladder_is_the_old_escalation_policy(max_reassignments: int, then: str) -> None:
    escalation = EscalationPolicy(max_reassignments, then)
    sla = ResolvedSla(default_sla_policies()["A"], default_ladder(escalation))
    assert [sla.step_after(n).step for n in range(5)] == [  # type: ignore[union-attr]
        next_escalation_step(n, escalation) for n in range(5)
    ]
