"""A lead's life cycle as a pure aggregate: its states, the actions each allows, and what an action produces.

The routing side of the life cycle (decisions, escalations, repeats) is made by the assign and clock use cases;
a rep's action is decided here, from a case the store loads in one call, and the store saves what comes out:

    new --(decision)--> assigned | queued | held | nurture
    held --(hold ends)--> routed again;  assigned/queued --(breach)--> the ladder's next step
    a repeat while the person's lead is open --> merged (recorded on that lead)
    open (assigned, queued, held, nurture, accepted, touched, merged) --accept--> accepted
                                                                        --touch--> touched
                                                                        --reject--> routed again, the rep excluded
                                                                        --convert--> converted
                                                                        --disqualify--> disqualified
    queued --claim--> assigned to the claimer (the first claim wins; the queue's clock stops, the rep's starts)
    open --reassign (a manager: to a named rep or a team)--> routed again;  --hand-over (of its rep)--> routed again
    converted, disqualified: closed, no action applies.  Erasure empties a lead's personal data in any state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from routing.domain.hours import WorkingHours, working_minutes_between
from routing.domain.sla import ResolvedSla

STATES = (
    "new",
    "assigned",
    "held",
    "queued",
    "nurture",
    "accepted",
    "touched",
    "converted",
    "disqualified",
    "merged",
    "erased",
)
ACTIONS = ("accept", "reject", "touch", "disqualify", "convert")
# What a queued lead takes besides: a rep of its team claims it (a regular action, so a signed link can carry it).
CLAIM = "claim"
# A lead in these takes no more actions.
FINAL_STATUSES = ("converted", "disqualified")
# A lead in these is closed to repeats (erased leads too): the next submission of the person is a new lead.
CLOSED_STATUSES = ("converted", "disqualified", "merged")
OPEN_STATUSES = ("assigned", "queued", "held", "touched", "accepted")
# The event (and, without its prefix, the timeline entry) each action records.
ACTION_EVENTS = {
    "touch": "lead.touched",
    "accept": "lead.accepted",
    "reject": "lead.rejected",
    "convert": "lead.converted",
    "disqualify": "lead.disqualified",
}


class ActionRefused(ValueError):
    """The action does not apply to the lead in its state (the API answers 409)."""


@dataclass(frozen=True)
class CurrentAssignment:
    """The running assignment: who has the lead, until when the first-contact clock runs, and its policy."""

    id: int
    rep_id: str | None
    sla_due_at: datetime | None
    sla: ResolvedSla | None  # the policy kept with the assignment (its follow-up clock)


@dataclass(frozen=True)
class PendingTimer:
    """A timer of the running assignment that has not fired."""

    id: int
    kind: str  # warning | breach | hold | follow_up | escalate


@dataclass(frozen=True)
class NewTimer:
    kind: str
    due_at: datetime


@dataclass(frozen=True)
class Target:
    """Where a claim or a manager sends a lead: a named rep, or a team's rotation (neither: the rules decide)."""

    rep_id: str | None = None
    team_id: str | None = None


@dataclass(frozen=True)
class Reroute:
    """Route the lead again, ending the current assignment; the reps in `exclude` are not considered."""

    exclude: frozenset[str]
    end_reason: str
    target: Target | None = None
    by: str | None = None  # who moved it (a manager, the claiming rep), carried on lead.reassigned
    note: str | None = None  # why, in the manager's words


@dataclass(frozen=True)
class Outcome:
    """What one action produces; the store saves it once and the events go to the outbox."""

    action: str
    status: str
    first_touch_at: datetime | None = None  # set by a first touch
    cancel_timers: tuple[int, ...] = ()
    new_timers: tuple[NewTimer, ...] = ()
    end_assignment: str | None = None  # the end reason when the current assignment ends here
    release_rep: str | None = None  # a rep whose open load drops by one
    timeline: tuple[tuple[str, dict[str, Any]], ...] = ()
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    reroute: Reroute | None = None
    time_to_first_touch_s: float | None = None

    def answer(self, lead_id: str, rep_id: str | None) -> dict[str, Any]:
        """The action's answer: the lead's status and rep, and a first touch's speed-to-lead facts."""
        detail = self.events[0][1] if self.events else {}
        facts = {k: v for k, v in detail.items() if k in ("time_to_first_touch_s", "working_minutes", "within_sla")}
        return {"lead_id": lead_id, "status": self.status, "rep_id": rep_id, **facts}


@dataclass(frozen=True)
class LeadCase:
    """A lead as an action sees it: its state, its running assignment and that assignment's pending timers."""

    lead_id: str
    status: str
    routed_at: datetime | None
    first_touch_at: datetime | None = None
    erased: bool = False
    current: CurrentAssignment | None = None
    pending: tuple[PendingTimer, ...] = ()
    tried_reps: frozenset[str] = field(default_factory=frozenset)  # every rep the lead has been with
    touches_since_first: int = 0  # touches recorded since the first one (that one included)

    @property
    def state(self) -> str:
        """The life-cycle state: the status, or erased once the person's data is gone."""
        return "erased" if self.erased else self.status

    def allowed(self) -> tuple[str, ...]:
        """The actions this lead takes now."""
        if self.status in FINAL_STATUSES:
            return ()
        if self.current is None or self.current.rep_id is None:
            claim = (CLAIM,) if self.status == "queued" and self.current is not None else ()
            return tuple(a for a in ACTIONS if a != "reject") + claim
        return ACTIONS

    def act(
        self,
        action: str,
        *,
        rep_id: str | None,
        reason: str | None,
        now: datetime,
        rep_hours: tuple[WorkingHours, str] | None = None,
    ) -> Outcome:
        """Decide a rep's action. touch stops the SLA clock; reject reroutes; convert and disqualify close the
        lead. `rep_hours` is the current rep's working week and zone (time to first touch in working minutes)."""
        if action not in ACTIONS and action != CLAIM:
            raise ActionRefused(f"unknown action {action!r}")
        if self.status in FINAL_STATUSES:
            raise ActionRefused(f"the lead is already {self.status}")
        if action == CLAIM:
            return self._claim(rep_id)
        actor = rep_id or (self.current.rep_id if self.current else None)
        detail: dict[str, Any] = {"lead_id": self.lead_id, "rep_id": actor, "action": action, "at": now.isoformat()}
        if action == "touch":
            return self._touch(detail, now, rep_hours)
        if action == "accept":
            return self._recorded(Outcome(action, "accepted"), detail)
        if action == "reject":
            if self.current is None or self.current.rep_id is None:
                raise ActionRefused("the lead has no rep to reject it")
            detail["reason"] = reason
            outcome = Outcome(
                action,
                self.status,  # unchanged until the lead is routed again
                cancel_timers=self._all_pending(),
                reroute=Reroute(self.tried_reps, "rejected"),
            )
            return self._recorded(outcome, detail)
        # convert, disqualify: the lead leaves the rep's open load
        detail["reason"] = reason
        status = "converted" if action == "convert" else "disqualified"
        outcome = Outcome(
            action,
            status,
            cancel_timers=self._all_pending(),
            end_assignment=status if self.current is not None else None,
            release_rep=self.current.rep_id if self.current is not None else None,
        )
        return self._recorded(outcome, detail)

    def _claim(self, rep_id: str | None) -> Outcome:
        """The first claim of a queued lead wins: the queue's clock stops and the lead goes to the claimer."""
        current = self.current
        if current is not None and current.rep_id is not None:
            raise ActionRefused(f"already claimed by {current.rep_id}")
        if self.status != "queued" or current is None:
            raise ActionRefused(f"only a queued lead can be claimed; this one is {self.status}")
        if not rep_id:
            raise ActionRefused("a claim needs the rep who claims")
        target = Target(rep_id=rep_id)
        reroute = Reroute(frozenset(), "claimed", target, by=rep_id)
        return Outcome(CLAIM, self.status, cancel_timers=self._all_pending(), reroute=reroute)

    def reassign(self, target: Target, *, by: str, note: str | None) -> Outcome:
        """A manager moves an open lead to a named rep, or into a team's rotation (its current rep left out)."""
        current = self.current
        if self.status in FINAL_STATUSES:
            raise ActionRefused(f"the lead is already {self.status}")
        if current is None or self.status not in OPEN_STATUSES:
            raise ActionRefused(f"only an open lead can be reassigned; this one is {self.status}")
        if target.rep_id is not None and target.rep_id == current.rep_id:
            raise ActionRefused(f"the lead is already with {target.rep_id}")
        exclude = frozenset({current.rep_id}) if current.rep_id and target.rep_id is None else frozenset()
        reroute = Reroute(exclude, "reassigned", target, by=by, note=note)
        return Outcome("reassign", self.status, cancel_timers=self._all_pending(), reroute=reroute)

    def hand_over(self, rep_id: str, *, by: str) -> Outcome | None:
        """The lead leaves a rep who hands over: routed again through the rules without them; None when the
        lead is not (or no longer) that rep's open lead, so a hand-over repeated moves nothing twice."""
        current = self.current
        if current is None or current.rep_id != rep_id or self.status not in OPEN_STATUSES:
            return None
        reroute = Reroute(frozenset({rep_id}), "handover", None, by=by)
        return Outcome("handover", self.status, cancel_timers=self._all_pending(), reroute=reroute)

    def _touch(self, detail: dict[str, Any], now: datetime, rep_hours: tuple[WorkingHours, str] | None) -> Outcome:
        if self.first_touch_at is None:
            # The first touch stops the first-contact clock and starts the policy's follow-up clock.
            due = self.current.sla_due_at if self.current else None
            detail.update(touch_facts(self.routed_at, due, now, rep_hours))
            follow_up = self.current.sla.follow_up if self.current and self.current.sla else None
            timers = (NewTimer("follow_up", now + timedelta(hours=follow_up.within_hours)),) if follow_up else ()
            outcome = Outcome(
                "touch",
                "touched",
                first_touch_at=now,
                cancel_timers=self._all_pending(),
                new_timers=timers,
                time_to_first_touch_s=detail["time_to_first_touch_s"],
            )
            return self._recorded(outcome, detail)
        # A later touch: once the follow-up's touches are all recorded (this one included), its clock stops.
        return self._recorded(Outcome("touch", "touched", cancel_timers=self._follow_up_done()), detail)

    def _follow_up_done(self) -> tuple[int, ...]:
        sla = self.current.sla if self.current else None
        pending = tuple(t.id for t in self.pending if t.kind == "follow_up")
        if sla is None or sla.follow_up is None or not pending:
            return ()
        return pending if self.touches_since_first + 1 >= sla.follow_up.touches else ()

    def _all_pending(self) -> tuple[int, ...]:
        return tuple(t.id for t in self.pending)

    @staticmethod
    def _recorded(outcome: Outcome, detail: dict[str, Any]) -> Outcome:
        kind = ACTION_EVENTS[outcome.action]
        return replace(outcome, timeline=((kind.removeprefix("lead."), detail),), events=((kind, detail),))


def touch_facts(
    routed_at: datetime | None,
    sla_due_at: datetime | None,
    now: datetime,
    rep_hours: tuple[WorkingHours, str] | None,
) -> dict[str, Any]:
    """Time to first touch, raw and in the rep's working time, and whether it beat the SLA."""
    start = routed_at or now
    facts: dict[str, Any] = {"time_to_first_touch_s": round((now - start).total_seconds(), 3)}
    if rep_hours is not None:
        hours, tz = rep_hours
        facts["working_minutes"] = round(working_minutes_between(start, now, hours=hours, tz=tz), 2)
    facts["within_sla"] = None if sla_due_at is None else now <= sla_due_at
    return facts


def sla_of(decision: Mapping[str, Any] | None) -> ResolvedSla | None:
    """The policy an assignment's stored decision carries, if it was made after policies became data."""
    return ResolvedSla.from_dict((decision or {}).get("sla"))
