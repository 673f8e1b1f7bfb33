"""Actions: a rep accepts, rejects, touches, disqualifies or converts a lead, or claims a queued one.

The whole path, in order: the route parses the request and calls `act`; `act` takes the lead's team lock and loads
the lead's case in one repository call; breaches detected before the action are escalated first (they happened
first); the pure aggregate (`routing.domain.lifecycle.LeadCase.act`) decides what the action produces; the
repository saves it onto the case's rows once; the events go to the outbox in the same transaction; a reject
routes the lead again. The route's session commits before the answer leaves.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from routing import metrics
from routing.store import CaseRecord, RoutingRepository
from routing.usecases import clock, handover
from routing.usecases.context import RoutingContext
from routing.usecases.shared import adjust_load, event, lock_teams, publish

NOT_ROUTED = "this lead has not been routed (yet)"


async def act(
    rt: RoutingContext,
    session: AsyncSession,
    lead_id: str,
    action: str,
    *,
    rep_id: str | None,
    reason: str | None,
    correlation_id: str | None,
    owner_only: bool = False,
) -> dict[str, Any]:
    """A rep's action; raises LookupError for a lead routing never saw and ValueError (ActionRefused) for an
    action the lead's state does not allow; with `owner_only` (a rep's own credential), PermissionError when the
    lead is with another rep."""
    repo = RoutingRepository(session)
    # The lead's team is locked, not the whole of routing (other teams' decisions go on); a lead moved to
    # another team before the lock was held is read again under that team's lock too.
    await lock_teams(session, [await repo.lead_team(lead_id)])
    record = await _load(repo, lead_id)
    while await lock_teams(session, [record.lead.team_id]):
        session.expire_all()  # what was read before that lock is read again
        record = await _load(repo, lead_id)
    now = rt.clock()
    if record.escalations:
        await clock.escalate_pending(rt, session, record.lead, now, record.escalations)
        record = await _load(repo, lead_id)  # the escalation may have given the lead a new assignment
    roster = await rt.roster(session)
    case = record.case()
    if owner_only and action != "claim" and case.current is not None and case.current.rep_id not in (None, rep_id):
        raise PermissionError(f"lead {lead_id} is assigned to another rep; a rep acts only on their own leads")
    rep = roster.rep(case.current.rep_id) if case.current else None
    outcome = case.act(
        action, rep_id=rep_id, reason=reason, now=now, rep_hours=(rep.hours, rep.timezone) if rep else None
    )

    repo.save_case(record, outcome, now)
    if outcome.release_rep:
        await adjust_load(session, outcome.release_rep, open_delta=-1, day=None)
    for timer in outcome.new_timers:
        rt.on_timer_written(timer.due_at)
    if outcome.time_to_first_touch_s is not None:
        metrics.record(session, partial(metrics.TIME_TO_FIRST_TOUCH.observe, outcome.time_to_first_touch_s))
    await publish(rt, session, [event(kind, lead_id, data, now, correlation_id) for kind, data in outcome.events])

    lead = record.lead
    if outcome.reroute is not None:  # a reject routes the lead again; a claim gives it to the claimer
        await handover.reroute(rt, session, record, outcome.reroute, now, correlation_id)
        return {"lead_id": lead_id, "status": lead.status, "rep_id": lead.current_rep_id}
    await session.flush()
    return outcome.answer(lead_id, lead.current_rep_id)


async def _load(repo: RoutingRepository, lead_id: str) -> CaseRecord:
    record = await repo.load_case(lead_id)
    if record is None:
        raise LookupError(NOT_ROUTED)
    return record
