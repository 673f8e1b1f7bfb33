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
from functools import cached_property
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


def manager_for(rep_id: str, reps: Sequence[Rep], teams: Sequence[Team], *, now: datetime | None = None) -> str | None:
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


# -- SLA policies as data: `sla:` blocks on routing rules and on teams, parsed by routing.domain.sla_grammar -------
#
# Each field comes from the most specific block that sets it: the matched rule's, else the team's, else the
# environment defaults (resolve_sla below).

LADDER_STEPS = ("reassign", "notify_manager", "manager", "queue")
CLOCKS = ("first_contact", "follow_up")


@dataclass(frozen=True)
class LadderStep:
    """One rung of the escalation ladder and the clock that runs after it (None: the policy's minutes)."""

    step: str
    minutes: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"step": self.step, "minutes": self.minutes}


@dataclass(frozen=True)
class WarnPoint:
    """A warning: at a fraction of the SLA, or some minutes before it is due."""

    fraction: float | None = None
    minutes_before: float | None = None

    def fraction_of(self, minutes: float) -> float | None:
        """As a fraction of an SLA this long; None when the point falls outside the clock."""
        if self.fraction is not None:
            return self.fraction
        share = 1 - (self.minutes_before or 0) / minutes
        return round(share, 6) if 0 < share < 1 else None


@dataclass(frozen=True)
class FollowUp:
    """After the first touch, `touches` touches (the first included) within `within_hours` wall-clock hours."""

    touches: int
    within_hours: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"touches": self.touches, "within_hours": self.within_hours}


@dataclass(frozen=True)
class SlaBlock:
    """A parsed `sla:` block; None in a field means 'not set here, ask the next level'."""

    minutes: float | None = None
    minutes_by_grade: tuple[tuple[str, float], ...] = ()
    business_hours: bool | None = None
    warn_at: tuple[WarnPoint, ...] | None = None
    escalation: tuple[LadderStep, ...] | None = None
    follow_up: FollowUp | None = None

    def minutes_for(self, grade: str | None) -> float | None:
        """This block's SLA for a grade, if it sets one."""
        if self.minutes is not None:
            return self.minutes
        return dict(self.minutes_by_grade).get((grade or "").upper())


@dataclass(frozen=True)
class ResolvedSla:
    """The policy that applies to one assignment: its clock, warnings, ladder, follow-up and where they came from."""

    policy: SlaPolicy
    escalation: tuple[LadderStep, ...]
    follow_up: FollowUp | None = None
    source: str = "default"  # which level set the minutes: rule:<id>, team:<id>, team_queue or default

    def step_after(self, steps_taken: int) -> LadderStep | None:
        """The ladder step a breach calls for after `steps_taken` steps; beyond the end the last step repeats."""
        if not self.escalation:
            return None
        return self.escalation[min(max(steps_taken, 0), len(self.escalation) - 1)]

    def for_step(self, step: LadderStep) -> ResolvedSla:
        """The same policy with the clock a ladder step runs after it."""
        if step.minutes is None:
            return self
        policy = self.policy
        return ResolvedSla(
            SlaPolicy(policy.grade, step.minutes, policy.business_hours, policy.warn_at),
            self.escalation,
            self.follow_up,
            self.source,
        )

    @cached_property
    def stored(self) -> dict[str, Any]:
        """to_dict() built once (read-only: copy before changing it): a batch stores it with every assignment it
        makes under this policy."""
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, kept with the assignment so its ladder outlives a change of rules."""
        return {
            "policy": self.policy.grade,
            "minutes": self.policy.minutes,
            "business_hours": self.policy.business_hours,
            "warn_at": list(self.policy.warn_at),
            "escalation": [step.to_dict() for step in self.escalation],
            "follow_up": self.follow_up.to_dict() if self.follow_up else None,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ResolvedSla | None:
        """Read back what to_dict wrote; None for anything else (assignments made before policies were data)."""
        if not isinstance(data, Mapping) or "escalation" not in data:
            return None
        follow = data.get("follow_up")
        return cls(
            SlaPolicy(
                str(data["policy"]),
                float(data["minutes"]),
                bool(data["business_hours"]),
                tuple(float(f) for f in data.get("warn_at") or ()),
            ),
            tuple(LadderStep(str(s["step"]), s.get("minutes")) for s in data["escalation"]),
            FollowUp(int(follow["touches"]), float(follow["within_hours"])) if follow else None,
            str(data.get("source") or "default"),
        )


def default_ladder(policy: EscalationPolicy) -> tuple[LadderStep, ...]:
    """The environment's ladder: reassign `max_reassignments` times, then the manager or the queue."""
    return (LadderStep("reassign"),) * policy.max_reassignments + (LadderStep(policy.then),)


def resolve_sla(
    grade: str | None,
    *,
    rule_block: SlaBlock | None,
    team_block: SlaBlock | None,
    defaults: Mapping[str, SlaPolicy],
    ladder: tuple[LadderStep, ...],
    rule_id: str | None = None,
    team_id: str | None = None,
    queue: SlaPolicy | None = None,
) -> ResolvedSla:
    """Field by field, the rule's block wins over the team's, which wins over the defaults; `queue` is the
    queue clock of a queued lead (its minutes and hours are the team's whatever the blocks say)."""
    levels = [(f"rule:{rule_id}", rule_block), (f"team:{team_id}", team_block)]
    blocks = [block for _, block in levels if block is not None]
    base = queue if queue is not None else sla_policy_for(grade, policies=defaults)
    minutes, source = base.minutes, "team_queue" if queue is not None else "default"
    business = base.business_hours
    if queue is None:
        for name, block in levels:
            found = block.minutes_for(grade) if block is not None else None
            if found is not None:
                minutes, source = found, name
                break
        business = next((b.business_hours for b in blocks if b.business_hours is not None), business)
    warn_at = base.warn_at
    points = next((b.warn_at for b in blocks if b.warn_at is not None), None)
    if points is not None:
        warn_at = tuple(sorted({f for p in points if (f := p.fraction_of(minutes)) is not None}))
    escalation = next((b.escalation for b in blocks if b.escalation is not None), ladder)
    follow_up = next((b.follow_up for b in blocks if b.follow_up is not None), None)
    return ResolvedSla(SlaPolicy(base.grade, minutes, business, warn_at), escalation, follow_up, source)
