"""SLA policies, deadlines for real reps, and the escalation ladder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from routing_builders import rep

from routing.domain import (
    EscalationPolicy,
    Team,
    WorkingHours,
    default_sla_policies,
    manager_for,
    next_escalation_step,
    queue_policy,
    sla_deadline,
    sla_policy_for,
)

pytestmark = pytest.mark.unit


def test_default_policies_tier_by_grade() -> None:
    policies = default_sla_policies()
    assert {grade: (p.minutes, p.business_hours) for grade, p in policies.items()} == {
        "A": (5, True),
        "B": (60, True),
        "C": (480, True),
        "D": (60, True),
        "queue": (60, True),
    }
    assert all(p.warn_at == (0.5,) for p in policies.values())


def test_policy_lookup_handles_case_unknown_grades_and_queues() -> None:
    assert sla_policy_for("a").minutes == 5
    assert sla_policy_for("Z").grade == "queue"
    assert sla_policy_for(None).grade == "queue"
    assert sla_policy_for("A", queued=True).grade == "queue"
    assert queue_policy(Team("sdr", "SDR", queue_sla_minutes=15, queue_business_hours=False)).minutes == 15


def test_an_a_lead_at_night_is_due_five_minutes_into_the_reps_morning() -> None:
    policy = sla_policy_for("A")
    la_rep = rep("r", timezone="America/Los_Angeles", hours=WorkingHours())
    start = datetime(2025, 3, 5, 6, 0, tzinfo=UTC)  # Tuesday 22:00 in Los Angeles
    due = sla_deadline(
        start, policy.minutes, business_hours=policy.business_hours, hours=la_rep.hours, tz=la_rep.timezone
    )
    assert due == datetime(2025, 3, 5, 17, 5, tzinfo=UTC)  # Wednesday 09:05 PST


@pytest.mark.parametrize(
    ("policy", "ladder"),
    [
        (EscalationPolicy(), ["reassign", "reassign", "manager", "manager"]),
        (EscalationPolicy(max_reassignments=1, then="queue"), ["reassign", "queue", "queue", "queue"]),
        (EscalationPolicy(max_reassignments=0), ["manager", "manager", "manager", "manager"]),
    ],
)
def test_escalation_ladder(policy: EscalationPolicy, ladder: list[str]) -> None:
    assert [next_escalation_step(n, policy) for n in range(4)] == ladder


def test_escalation_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        EscalationPolicy(then="ceo")
    with pytest.raises(ValueError):
        EscalationPolicy(max_reassignments=-1)
    with pytest.raises(ValueError):
        next_escalation_step(-1, EscalationPolicy())


def test_manager_is_the_reps_then_the_teams_and_never_someone_who_left() -> None:
    teams = [Team("sales", "Sales", manager_id="head")]
    reps = [rep("a", manager_id="lead"), rep("b"), rep("lead"), rep("head"), rep("c", manager_id="ghost")]
    assert manager_for("a", reps, teams) == "lead"
    assert manager_for("b", reps, teams) == "head"
    assert manager_for("head", reps, teams) is None  # not their own manager
    assert manager_for("c", reps, teams) == "head"  # unknown manager id: fall back to the team's
    reps[3] = rep("head", status="left")
    assert manager_for("b", reps, teams) is None
    assert manager_for("nobody", reps, teams) is None


def test_with_a_clock_an_absent_manager_is_skipped_for_the_teams() -> None:
    teams = [Team("sales", "Sales", manager_id="head")]
    reps = [rep("a", manager_id="lead"), rep("lead", status="ooo"), rep("head")]
    now = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
    assert manager_for("a", reps, teams) == "lead"
    assert manager_for("a", reps, teams, now=now) == "head"
