"""Backtest: replay the scored leads of a past window through a candidate ruleset, beside the current one.

Nothing is written: the leads are read from routing's own store and decided again in memory by the same
`route()` the router uses. The model, which the response repeats so nobody mistakes it for a forecast:

- Each lead is decided again at the moment it was first routed, from the lead view routing stored (lead,
  enrichment, score, source), against today's roster (teams, reps, weights, hours, capacity, status and
  out-of-office windows) and today's account owners.
- Both rulesets start from the same state at the window start: neutral rotation and no open leads. Each
  replayed assignment adds one open lead to its rep and one to the rep's count for their local day; a lead
  that really closed (converted or disqualified) stops counting at its real close time. Reps never touch or
  reject anything in the replay, so escalations are not replayed.
- A repeat lead goes to the rep the replay gave the original; an original from before the window counts with
  the rep it really has.
- A projected SLA breach is a lead the replay (a) queues, (b) gives to a rep outside their working hours at
  that moment (speed-to-lead is lost whatever the clock policy says), or (c) gives to a rep already at their
  open or daily capacity (account owners and repeat leads may go over it), or (d) whose real first touch came
  after the due time of the SLA policy each ruleset gives it (the rule's `sla:` block, the team's, the
  environment defaults), the same response delay assumed whoever gets the lead; a lead never touched is not
  projected by (d). Held and nurture leads count none.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from routing.domain import Rep, RepLoad, RoutingRules, SlaPolicy, Team, is_working_time, route, sla_deadline
from routing.domain.accounts import AccountBook
from routing.domain.hours import zone
from routing.domain.sla import LadderStep, default_sla_policies, resolve_sla
from routing.store import RoutingRepository

MODEL = (
    "Each lead of the window is decided again when it was first routed, with today's roster and account owners;"
    " both rulesets start with neutral rotation and no open leads; a replayed lead stays open for its rep until"
    " it really closed (else to the end of the window). Projected SLA breaches: leads queued, given to a rep"
    " outside their working hours, given to a rep already at capacity, or really first touched later than the"
    " due time of the SLA policy the ruleset gives them (late_first_touch; the same response delay assumed)."
)
BREACH_REASONS = ("queued", "outside_hours", "over_capacity", "late_first_touch")


@dataclass(frozen=True)
class PastLead:
    """A lead as the store holds it: its view, when it was first routed and, if so, when it closed."""

    lead_id: str
    view: Mapping[str, Any]
    routed_at: datetime
    closed_at: datetime | None = None
    first_touch_at: datetime | None = None


@dataclass(frozen=True)
class Replayed:
    """Where one lead would go under one ruleset, and whether its SLA is likely to be missed."""

    outcome: str
    rep_id: str | None
    team_id: str | None
    rule_id: str | None
    breach: str | None
    sla_minutes: float | None = None
    sla_due_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "outcome": self.outcome,
            "rep_id": self.rep_id,
            "team_id": self.team_id,
            "rule_id": self.rule_id,
            "projected_breach": self.breach,
            "sla": {"minutes": self.sla_minutes, "due_at": self.sla_due_at.isoformat()} if self.sla_due_at else None,
        }

    def lands(self) -> tuple[str, str | None, str | None]:
        """What a sales team notices: the outcome and who (or which queue) gets the lead."""
        return self.outcome, self.rep_id, self.team_id


def replay(
    leads: Sequence[PastLead],
    *,
    rules: RoutingRules,
    teams: Sequence[Team],
    reps: Sequence[Rep],
    accounts: Mapping[str, str] | AccountBook,
    known_reps: Mapping[str, str],
    sla_defaults: Mapping[str, SlaPolicy] | None = None,
) -> dict[str, Replayed]:
    """Decide every lead again, in routing order, carrying rotation and load from one lead to the next."""
    by_id = {rep.id: rep for rep in reps}
    teams_by_id = {team.id: team for team in teams}
    defaults = sla_defaults if sla_defaults is not None else default_sla_policies()
    rotation: dict[str, dict[str, int]] = {}
    open_leads: Counter[str] = Counter()
    per_day: Counter[tuple[str, str]] = Counter()
    closing: list[tuple[datetime, str]] = []
    given: dict[str, str] = {}
    results: dict[str, Replayed] = {}
    for lead in sorted(leads, key=lambda item: item.routed_at):
        now = lead.routed_at
        while closing and closing[0][0] <= now:
            _, rep_id = heapq.heappop(closing)
            open_leads[rep_id] -= 1
        days = {rep.id: now.astimezone(zone(rep.timezone)).date().isoformat() for rep in reps}
        loads = {rep.id: RepLoad(open_leads[rep.id], per_day[(rep.id, days[rep.id])]) for rep in reps}
        original = lead.view.get("duplicate_of")
        previous = (given.get(original) or known_reps.get(original)) if isinstance(original, str) else None
        decision = route(
            lead.view,
            rules=rules,
            teams=teams,
            reps=reps,
            loads=loads,
            rotation=rotation,
            accounts=accounts,
            previous_rep=previous,
            now=now,
        )
        rotation.update(decision.rotation)
        breach: str | None = "queued" if decision.outcome == "queued" else None
        rep = by_id.get(decision.rep_id or "")
        due: datetime | None = None
        minutes: float | None = None
        if decision.outcome == "assigned" and rep is not None:
            rule, team = rules.rule(decision.rule_id), teams_by_id.get(decision.team_id or "")
            grade = (lead.view.get("score") or {}).get("grade")
            policy = resolve_sla(
                grade if isinstance(grade, str) else None,
                rule_block=rule.sla if rule else None,
                team_block=team.sla if team else None,
                defaults=defaults,
                ladder=(LadderStep("reassign"),),  # escalations are not replayed
                rule_id=decision.rule_id,
                team_id=decision.team_id,
            ).policy
            minutes = policy.minutes
            due = sla_deadline(
                now, policy.minutes, business_hours=policy.business_hours, hours=rep.hours, tz=rep.timezone
            )
            load = loads[rep.id]
            if not is_working_time(now, hours=rep.hours, tz=rep.timezone):
                breach = "outside_hours"
            elif (rep.max_open is not None and load.open_leads >= rep.max_open) or (
                rep.max_per_day is not None and load.assigned_today >= rep.max_per_day
            ):
                breach = "over_capacity"
            elif lead.first_touch_at is not None and lead.first_touch_at > due:
                breach = "late_first_touch"
            open_leads[rep.id] += 1
            per_day[(rep.id, days[rep.id])] += 1
            given[lead.lead_id] = rep.id
            if lead.closed_at is not None:
                heapq.heappush(closing, (lead.closed_at, rep.id))
        results[lead.lead_id] = Replayed(
            decision.outcome, decision.rep_id, decision.team_id, decision.rule_id, breach, minutes, due
        )
    return results


def summarize(results: Mapping[str, Replayed], *, rules: RoutingRules, reps: Sequence[Rep]) -> dict[str, Any]:
    """Per rep: leads received and projected breaches; per outcome and per queue: counts."""
    per_rep: dict[str, dict[str, Any]] = {
        rep.id: {"rep_id": rep.id, "team_id": rep.team, "leads": 0, "projected_breaches": 0} for rep in reps
    }
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    queues: Counter[str] = Counter()
    for item in results.values():
        outcomes[item.outcome] += 1
        if item.breach:
            reasons[item.breach] += 1
        if item.outcome == "queued":
            queues[item.team_id or "none"] += 1
        if item.rep_id is not None:
            tally = per_rep.setdefault(
                item.rep_id, {"rep_id": item.rep_id, "team_id": item.team_id, "leads": 0, "projected_breaches": 0}
            )
            tally["leads"] += 1
            tally["projected_breaches"] += 1 if item.breach else 0
    return {
        "ruleset_version": rules.version,
        "outcomes": {outcome: outcomes[outcome] for outcome in ("assigned", "queued", "held", "nurture")},
        "projected_breaches": sum(reasons.values()),
        "projected_breaches_by_reason": {reason: reasons[reason] for reason in BREACH_REASONS},
        "reps": sorted(per_rep.values(), key=lambda tally: (-int(tally["leads"]), str(tally["rep_id"]))),
        "queues": [{"team_id": team, "leads": count} for team, count in sorted(queues.items())],
    }


def compare(
    leads: Iterable[PastLead],
    current: Mapping[str, Replayed],
    candidate: Mapping[str, Replayed],
    *,
    limit: int,
) -> dict[str, Any]:
    """The leads whose outcome or owner differs between the two runs (the first `limit`, in routing order)."""
    changed = [
        lead
        for lead in sorted(leads, key=lambda item: item.routed_at)
        if current[lead.lead_id].lands() != candidate[lead.lead_id].lands()
    ]
    return {
        "count": len(changed),
        "leads": [
            {
                "lead_id": lead.lead_id,
                "routed_at": lead.routed_at.isoformat(),
                "current": current[lead.lead_id].to_dict(),
                "candidate": candidate[lead.lead_id].to_dict(),
            }
            for lead in changed[:limit]
        ],
    }


class WindowTooLarge(ValueError):
    """More leads in the window than a backtest replays at once."""


async def backtest(
    session: AsyncSession,
    *,
    current: RoutingRules,
    candidate: RoutingRules,
    teams: Sequence[Team],
    reps: Sequence[Rep],
    since: datetime,
    until: datetime,
    max_leads: int,
    changed_limit: int,
    sla_defaults: Mapping[str, SlaPolicy] | None = None,
) -> dict[str, Any]:
    """Read the window from the store (nothing is written), replay it through both rulesets, compare."""
    repo = RoutingRepository(session)
    count = await repo.count_routed_between(since, until)
    if count > max_leads:
        raise WindowTooLarge(f"the window holds {count} leads; a backtest replays at most {max_leads}, narrow it")
    rows = await repo.routed_between(since, until)
    closed = await repo.closed_between(since, until)
    leads = [
        PastLead(
            row.lead_id,
            row.view or {},
            row.routed_at,
            closed.get(row.lead_id),
            row.first_touch_at,
        )
        for row in rows
    ]
    inside = {lead.lead_id for lead in leads}
    originals = {
        str(lead.view["duplicate_of"])
        for lead in leads
        if lead.view.get("duplicate_of") and lead.view["duplicate_of"] not in inside
    }
    known_reps = await repo.current_reps(originals)
    accounts = AccountBook.of(row.to_account() for row in await repo.accounts())

    def run() -> dict[str, Any]:
        runs = {
            name: replay(
                leads,
                rules=rules,
                teams=teams,
                reps=reps,
                accounts=accounts,
                known_reps=known_reps,
                sla_defaults=sla_defaults,
            )
            for name, rules in (("current", current), ("candidate", candidate))
        }
        return {
            "window": {"since": since.isoformat(), "until": until.isoformat(), "leads": len(leads)},
            "model": MODEL,
            "current": summarize(runs["current"], rules=current, reps=reps),
            "candidate": summarize(runs["candidate"], rules=candidate, reps=reps),
            "changed": compare(leads, runs["current"], runs["candidate"], limit=changed_limit),
        }

    # Replaying tens of thousands of leads is CPU work: keep the event loop (HTTP, Kafka, timers) answering.
    return await asyncio.to_thread(run)
