"""Moving leads between people: a claim from a team's queue, a manager's reassignment, a rep's hand-over.

The pure aggregate decides each (routing.domain.lifecycle: `LeadCase.act("claim")`, `reassign`, `hand_over`);
this module makes them the one way `reroute` does: the case's pending timers cancelled (the old clock stops), the
current assignment ended, a new one started by `assign` on the rules' SLA for the new rep, and lead.reassigned
saying who moved the lead and why (`reassigned_by`, `reassign_note`, `reassign_reason`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from routing.domain import Decision
from routing.domain.lifecycle import OPEN_STATUSES, ActionRefused, Reroute, Target
from routing.store import AssignmentRow, CaseRecord, LeadRow, RoutingRepository
from routing.store.desk import DeskRepository
from routing.usecases import assign, clock
from routing.usecases.context import RoutingContext
from routing.usecases.decide import decide
from routing.usecases.shared import lock


class TargetRefused(ValueError):
    """The rep or team named cannot take the lead (the API answers 422 naming `field`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


async def reroute(
    rt: RoutingContext,
    session: AsyncSession,
    record: CaseRecord,
    how: Reroute,
    now: datetime,
    correlation_id: str | None,
) -> AssignmentRow:
    """Route the case's lead again as `how` says: to its target (a rep, a team's rotation), else by the rules."""
    forced = await _decision(rt, session, record.lead, record.current, how, now)
    extra = {"reassigned_by": how.by, "reassign_note": how.note} if how.by else None
    return await assign.assign(
        rt,
        session,
        record.lead,
        now=now,
        correlation_id=correlation_id,
        event_type="lead.reassigned",
        exclude=how.exclude,
        previous=record.current,
        end_reason=how.end_reason,
        forced=forced,
        extra=extra,
    )


async def _decision(
    rt: RoutingContext,
    session: AsyncSession,
    lead: LeadRow,
    previous: AssignmentRow | None,
    how: Reroute,
    now: datetime,
) -> Decision | None:
    target = how.target
    if target is None:
        return None
    roster = await rt.roster(session)
    rules = await rt.rules(session)
    if target.team_id is not None:
        if roster.team(target.team_id) is None:
            raise TargetRefused("team_id", f"no team {target.team_id!r}")
        # The team's own rotation, as if the rules' fallback named it: eligibility, capacity and hours apply.
        team_rules = replace(rules, rules=[], fallback_team=target.team_id, fallback_method=None)
        return await decide(rt, session, lead.view or {}, team_rules, now=now, exclude=how.exclude)
    rep = roster.rep(target.rep_id)
    if rep is None or rep.status == "left":
        raise TargetRefused("rep_id", f"no rep {target.rep_id!r} who can take leads")
    claimed = how.end_reason == "claimed"
    if claimed and lead.team_id and rep.team != lead.team_id:
        raise ActionRefused(f"{rep.id} is not on team {lead.team_id!r}, whose queue holds this lead")
    if claimed:
        reason = f"{rep.id} claimed the lead from team '{lead.team_id}' queue."
    else:
        reason = f"Reassigned to {rep.id} by {how.by}" + (f": {how.note}" if how.note else ".")
    return Decision(
        outcome="assigned",
        rep_id=rep.id,
        team_id=rep.team or lead.team_id,
        # The rule that routed the lead keeps deciding its SLA: the new rep's clock starts as the rules say.
        rule_id=previous.rule_id if previous else None,
        ruleset_version=previous.ruleset_version if previous else rules.version,
        method="claim" if claimed else "manager",
        candidates=[],
        reason=reason,
    )


async def _case(rt: RoutingContext, session: AsyncSession, lead_id: str, now: datetime) -> CaseRecord:
    """The lead's case, after any breach detected before now has been escalated (it happened first)."""
    repo = RoutingRepository(session)
    record = await repo.load_case(lead_id)
    if record is None:
        raise LookupError("this lead has not been routed (yet)")
    if record.escalations:
        await clock.escalate_pending(rt, session, record.lead, now, record.escalations)
        record = await repo.load_case(lead_id)
        assert record is not None
    return record


async def reassign(
    rt: RoutingContext,
    session: AsyncSession,
    lead_id: str,
    target: Target,
    *,
    by: str,
    note: str | None,
    correlation_id: str | None,
) -> dict[str, Any]:
    """A manager moves an open lead to a named rep or a team's rotation; LookupError for an unknown lead,
    ActionRefused when the lead is closed or already with that rep, TargetRefused for an unknown rep or team."""
    await lock(session)
    now = rt.clock()
    record = await _case(rt, session, lead_id, now)
    previous_rep = record.lead.current_rep_id
    outcome = record.case().reassign(target, by=by, note=note)
    RoutingRepository(session).save_case(record, outcome, now)
    assert outcome.reroute is not None
    new = await reroute(rt, session, record, outcome.reroute, now, correlation_id)
    await session.flush()
    return {**_moved(record.lead, new), "previous_rep_id": previous_rep}


async def hand_over(
    rt: RoutingContext, session: AsyncSession, rep_id: str, *, by: str, correlation_id: str | None
) -> dict[str, Any]:
    """Every open lead of the rep routed again through the rules without them, each a lead.reassigned
    (reassign_reason handover); a repeat finds none left and moves nothing. LookupError for an unknown rep."""
    if (await rt.roster(session)).rep(rep_id) is None:
        raise LookupError("no rep with this id")
    await lock(session)
    now = rt.clock()
    moved = []
    for lead_id in await DeskRepository(session).open_leads_of(rep_id, OPEN_STATUSES):
        record = await _case(rt, session, lead_id, now)
        outcome = record.case().hand_over(rep_id, by=by)
        if outcome is None or outcome.reroute is None:
            continue  # an escalation just moved it, or it is no longer open
        RoutingRepository(session).save_case(record, outcome, now)
        new = await reroute(rt, session, record, outcome.reroute, now, correlation_id)
        moved.append(_moved(record.lead, new))
    await session.flush()
    return {"rep_id": rep_id, "moved": len(moved), "leads": moved}


def _moved(lead: LeadRow, new: AssignmentRow) -> dict[str, Any]:
    return {
        "lead_id": lead.lead_id,
        "status": lead.status,
        "outcome": new.outcome,
        "rep_id": new.rep_id,
        "team_id": new.team_id,
        "sla_due_at": new.sla_due_at.isoformat() if new.sla_due_at else None,
    }
