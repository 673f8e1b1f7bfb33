"""Speed-to-lead SLAs and the escalation ladder.

Defaults (decided here, overridable by the caller):
- A: 5 minutes, counted in the assigned rep's working time. Rules send A leads to someone working now
  when anyone is, so during the day the clock is the wall clock; at night it waits for the rep instead
  of breaching, escalating and paging a manager while everyone is asleep.
- B: 60 working minutes.  C: one business day = 480 working minutes.  D: 60 working minutes (D leads
  normally go to nurture; this applies if a rule routes them to a rep).
- queue: 60 minutes of the team's working time for a lead nobody could take.
- Each tier nudges at half its SLA (warn_at=(0.5,)); at the deadline the lead is reassigned, up to
  `max_reassignments` times, then goes to the manager or the team queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # reps parses teams' `sla:` blocks with this module, so it is imported for types only
    from routing.domain.reps import Rep, Team

ESCALATION_STEPS = ("reassign", "manager", "queue")
QUEUE = "queue"


@dataclass(frozen=True)
class SlaPolicy:
    """How long a rep has to make first contact, and when to nudge."""

    grade: str
    minutes: float  # fractional minutes are allowed (short SLAs in drills and tests)
    business_hours: bool
    warn_at: tuple[float, ...] = (0.5,)


def default_sla_policies() -> dict[str, SlaPolicy]:
    """SLA per grade plus the team-queue policy under the key 'queue' (see the module docstring)."""
    return {
        "A": SlaPolicy("A", 5, business_hours=True),
        "B": SlaPolicy("B", 60, business_hours=True),
        "C": SlaPolicy("C", 8 * 60, business_hours=True),
        "D": SlaPolicy("D", 60, business_hours=True),
        QUEUE: SlaPolicy(QUEUE, 60, business_hours=True),
    }


def sla_policy_for(
    grade: str | None, *, queued: bool = False, policies: Mapping[str, SlaPolicy] | None = None
) -> SlaPolicy:
    """The policy for a lead's grade (or the queue policy); an unknown grade gets the queue policy."""
    table = policies if policies is not None else default_sla_policies()
    if queued or not grade:
        return table[QUEUE]
    return table.get(grade.upper(), table[QUEUE])


GRADE_ORDER = ("A", "B", "C", "D")  # hottest first


def is_hotter(grade: str | None, than: str | None) -> bool:
    """Whether `grade` is hotter than `than` (a known grade beats none; unknown grades are never hotter)."""
    if not grade or grade.upper() not in GRADE_ORDER:
        return False
    if not than or than.upper() not in GRADE_ORDER:
        return True
    return GRADE_ORDER.index(grade.upper()) < GRADE_ORDER.index(than.upper())


def queue_policy(team: Team) -> SlaPolicy:
    """The SLA of one team's queue, from the team's own settings."""
    return SlaPolicy(QUEUE, team.queue_sla_minutes, business_hours=team.queue_business_hours)


@dataclass(frozen=True)
class EscalationPolicy:
    """What happens when an SLA deadline passes without first contact."""

    max_reassignments: int = 2
    then: str = "manager"  # "manager" | "queue"

    def __post_init__(self) -> None:
        if self.max_reassignments < 0:
            raise ValueError("max_reassignments must not be negative")
        if self.then not in ("manager", QUEUE):
            raise ValueError("then must be 'manager' or 'queue'")


def next_escalation_step(reassignments_so_far: int, policy: EscalationPolicy) -> str:
    """'reassign' while reassignments remain, then the policy's final step ('manager' or 'queue')."""
    if reassignments_so_far < 0:
        raise ValueError("reassignments_so_far must not be negative")
    if reassignments_so_far < policy.max_reassignments:
        return "reassign"
    return policy.then


def manager_for(
    rep_id: str, reps: Sequence[Rep], teams: Sequence[Team], *, now: datetime | None = None
) -> str | None:
    """Who a missed lead escalates to: the rep's manager, else the team's; with `now`, only one present."""
    by_id = {rep.id: rep for rep in reps}
    rep = by_id.get(rep_id)
    if rep is None:
        return None
    team = next((t for t in teams if t.id == rep.team), None)
    for manager in (rep.manager_id, team.manager_id if team else None):
        if manager and manager != rep_id and by_id.get(manager) is not None:
            manager_rep = by_id[manager]
            if manager_rep.status == "left":
                continue
            if now is not None and not manager_rep.is_available(now):
                continue  # an escalation to someone on leave is a lead nobody will call
            return manager
    return None
