"""Assign: decide where a scored lead goes and record it (its assignment, clock, timeline entry and event); a
repeat joins the person's open lead instead; a held lead is routed again when its hold ends."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from routing import metrics
from routing.domain import Decision, Rep, SlaPolicy, sla_deadline
from routing.domain.lifecycle import CLOSED_STATUSES
from routing.domain.sla import ResolvedSla, is_hotter
from routing.store import AssignmentRow, LeadRow, RoutingRepository, SlaTimer, TimelineRow
from routing.usecases import clock
from routing.usecases.context import Roster, RoutingContext
from routing.usecases.decide import decide, resolve_decision_sla
from routing.usecases.decisions import assignment_data, assignment_row, scored_view, timeline_detail
from routing.usecases.shared import (
    adjust_load,
    clock_of,
    event,
    local_day,
    lock_teams,
    parse_time,
    publish,
    save_rotation,
    schedule_clock,
    tx,
)

# What a repeat submission says that its open lead's timeline and lead.resubmitted carry.
RESUBMISSION_FIELDS = ("message", "form_id", "page_url", "referrer", "utm", "submitted_at")


async def on_scored(rt: RoutingContext, session: AsyncSession, scored: Event) -> None:
    """lead.scored -> one routing decision, stored with its reasons, its SLA clock and lead.assigned."""
    repo = RoutingRepository(session)
    lead_id = scored.subject
    if lead_id in tx(session).routed:
        return  # routed already in this very batch (a re-published score): a lead is assigned once
    data = scored.data
    thread_id = lead_id
    if data.get("duplicate_of"):
        thread_id = await _thread_of(session, str(data["duplicate_of"]))
    # The person's thread is locked before anything is read: two routing processes never both route one lead,
    # nor both join a repeat and route the lead it joins (the database's one-current-assignment index holds too).
    await lock_teams(session, (), threads=[thread_id])
    routed, erased = await repo.seen(lead_id)
    if routed:
        return
    view = scored_view(data, erased=erased)
    now = rt.clock()
    if view["duplicate_of"]:
        open_lead = await repo.open_lead_in_thread(thread_id, CLOSED_STATUSES)
        if open_lead is not None:
            tx(session).routed.add(lead_id)
            await join_open_lead(rt, session, open_lead, lead_id, thread_id, view, scored, now, erased=erased)
            return
    lead = LeadRow(
        lead_id=lead_id,
        status="new",
        grade=view["score"].get("grade"),
        source_kind=view["source"].get("kind"),
        source_id=view["source"].get("id"),
        duplicate_of=view["duplicate_of"],
        is_test=view["is_test"],
        view=view,
        received_at=parse_time(data.get("received_at")),
        submitted_at=parse_time((data.get("lead") or {}).get("submitted_at")),
        routed_at=now,
        reassignments=0,
        erased_at=now if erased else None,
        thread_id=thread_id if thread_id != lead_id else None,  # a first lead's thread is itself (see batch_rows)
    )
    session.add(lead)  # inserted with the assignment, already carrying its outcome
    tx(session).routed.add(lead_id)
    # What ingest kept but could not read (phone_unparsed, ...) shows on the first timeline entry, for the rep.
    flags = view["quality"].get("flags")
    note = {"quality_flags": flags} if flags else None
    await assign(
        rt, session, lead, now=now, correlation_id=scored.correlation_id, event_type="lead.assigned", note=note
    )
    _record_latency(session, lead, now)


async def _thread_of(session: AsyncSession, original_id: str) -> str:
    """The person's thread a repeat belongs to: its original's (ingest names the first lead in its window,
    which may itself be a repeat of an earlier one), or the original's id when routing has not seen it."""
    await session.flush()  # an original routed earlier in this consumer batch is found
    original = await RoutingRepository(session).lead(original_id)
    if original is None:
        return original_id
    return original.thread_id or original.duplicate_of or original.lead_id


async def join_open_lead(
    rt: RoutingContext,
    session: AsyncSession,
    lead: LeadRow,
    repeat_id: str,
    thread_id: str,
    view: dict[str, Any],
    scored: Event,
    now: datetime,
    *,
    erased: bool,
) -> None:
    """A repeat while the person's lead is open: recorded on that lead (lead.resubmitted, a timeline entry, the
    hotter grade) with its rep and clock kept, or the clock tightened; the repeat is merged, never assigned."""
    repo = RoutingRepository(session)
    await clock.escalate_pending(rt, session, lead, now)  # a breach detected before the repeat came happened first
    current = await repo.current_assignment(lead.lead_id)
    grade = view["score"].get("grade")
    previous_grade = lead.grade
    raised = is_hotter(grade, previous_grade)
    if raised:
        lead.grade = grade
    previous_due = current.sla_due_at if current else None
    tightened = await clock.tighten_clock(rt, session, lead, current, grade, now) if current else None
    rerouted = False
    if raised and current is not None and lead.status == "nurture":
        # A nurture lead has no rep and no clock to keep: hotter intent routes it again, on the new score.
        lead.view = {**(lead.view or {}), "score": view["score"]}
        current = await assign(
            rt,
            session,
            lead,
            now=now,
            correlation_id=scored.correlation_id,
            event_type="lead.reassigned",
            previous=current,
            end_reason="resubmitted",
        )
        rerouted = True
    session.add(
        LeadRow(
            lead_id=repeat_id,
            status="merged",
            current_rep_id=lead.current_rep_id,
            team_id=lead.team_id,
            grade=grade,
            source_kind=view["source"].get("kind"),
            source_id=view["source"].get("id"),
            duplicate_of=view["duplicate_of"],
            is_test=view["is_test"],
            view=view,
            received_at=parse_time(scored.data.get("received_at")),
            submitted_at=parse_time(view["lead"].get("submitted_at")),
            routed_at=now,
            reassignments=0,
            erased_at=now if erased else None,
            thread_id=thread_id,
            merged_into=lead.lead_id,
        )
    )
    due = current.sla_due_at if current else None
    data: dict[str, Any] = {
        "lead_id": lead.lead_id,
        "repeat_lead_id": repeat_id,
        "received_at": scored.data.get("received_at"),
        "resubmitted_at": now.isoformat(),
        "grade": grade,
        "previous_grade": previous_grade,
        "grade_raised": raised,
        "score": view["score"],
        # What the person said and where this time: personal data, emptied when either lead is erased.
        "lead": {k: view["lead"][k] for k in RESUBMISSION_FIELDS if view["lead"].get(k) is not None},
        "source": view["source"] or None,
        "quality": view["quality"] or None,
        "status": lead.status,
        "rep_id": lead.current_rep_id,
        "team_id": lead.team_id,
        "assignment_id": current.id if current else None,
        "sla_due_at": due.isoformat() if due else None,
        "previous_sla_due_at": previous_due.isoformat() if previous_due else None,
        "clock_tightened": tightened is not None,
        "rerouted": rerouted,
    }
    session.add(TimelineRow(lead_id=lead.lead_id, at=now, kind="resubmitted", detail=data))
    session.add(TimelineRow(lead_id=repeat_id, at=now, kind="merged", detail={"merged_into": lead.lead_id}))
    metrics.record(session, metrics.LEADS_ASSIGNED.labels(outcome="merged").inc)
    await publish(rt, session, [event("lead.resubmitted", lead.lead_id, data, now, scored.correlation_id)])


async def assign(
    rt: RoutingContext,
    session: AsyncSession,
    lead: LeadRow,
    *,
    now: datetime,
    correlation_id: str | None,
    event_type: str,
    exclude: frozenset[str] = frozenset(),
    previous: AssignmentRow | None = None,
    end_reason: str | None = None,
    forced: Decision | None = None,
    note: Mapping[str, Any] | None = None,
    sla: ResolvedSla | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AssignmentRow:
    """Decide, persist the decision with rotation and load in this transaction, start the clock, emit.

    `sla` is the policy an escalation carries on (its ladder and the step's clock); else it is resolved from
    the matched rule's `sla:` block, the team's, then the environment defaults. `extra` (who moved the lead and
    why) goes into the event's data and the timeline entry."""
    roster = await rt.roster(session)
    repo = RoutingRepository(session)
    involved = [lead.team_id, previous.team_id if previous else None]
    while True:
        rules = await rt.rules(session)
        decision = forced or await decide(rt, session, lead.view or {}, rules, now=now, exclude=exclude)
        # Rotation and load are per team: the decision's team (and the lead's before) are locked, and a decision
        # made before its team's lock was held is made again under it (another process may have moved the team).
        if not await lock_teams(session, [*involved, decision.team_id]):
            break
    if previous is not None:
        previous.ended_at = now
        previous.end_reason = end_reason
        if previous.rep_id:
            await adjust_load(session, previous.rep_id, open_delta=-1, day=None)
        await session.flush()  # the old assignment ends before the new one starts (unique current index)
    await save_rotation(session, decision.rotation)
    resolved = resolve_decision_sla(rt, decision, roster, lead.grade, rules=await rt.rules(session), carried=sla)
    policy = resolved.policy if resolved else None
    rep = roster.rep(decision.rep_id)
    due = None
    if policy is not None and decision.outcome in ("assigned", "queued"):
        hours, tz = clock_of(rep, roster.team(decision.team_id))
        due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
    attempt = (previous.attempt + 1) if previous else 1
    # The id is taken from the database's counter before the row is flushed (the timers, timeline and event all
    # carry it); distinct without relying on any lock.
    assignment = AssignmentRow(
        **assignment_row(await repo.next_assignment_id(), lead.lead_id, decision, resolved, due, attempt, now)._asdict()
    )
    session.add(assignment)
    lead.status = decision.outcome
    lead.current_rep_id = decision.rep_id
    lead.team_id = decision.team_id
    if decision.rep_id:
        day = local_day(now, rep.timezone) if rep else None
        await adjust_load(session, decision.rep_id, open_delta=1, day=day)
    _start_clock(rt, session, lead, assignment, policy, rep, roster, decision, now)
    session.add(
        TimelineRow(
            lead_id=lead.lead_id,
            at=now,
            kind=event_type.removeprefix("lead."),
            detail={
                **timeline_detail(assignment.id, attempt, decision, previous, end_reason, due, note),
                **(extra or {}),
            },
        )
    )
    metrics.record(session, metrics.LEADS_ASSIGNED.labels(outcome=decision.outcome).inc)
    data = {**assignment_data(lead, assignment, decision, rep, previous, end_reason), **(extra or {})}
    # The rows go in with the commit's flush, batched across a consumer batch.
    await publish(rt, session, [event(event_type, lead.lead_id, data, now, correlation_id)])
    return assignment


def _start_clock(
    rt: RoutingContext,
    session: AsyncSession,
    lead: LeadRow,
    assignment: AssignmentRow,
    policy: SlaPolicy | None,
    rep: Rep | None,
    roster: Roster,
    decision: Decision,
    now: datetime,
) -> None:
    if decision.outcome == "held" and decision.hold_until:
        session.add(
            SlaTimer(lead_id=lead.lead_id, assignment_id=assignment.id, kind="hold", due_at=decision.hold_until)
        )
        rt.on_timer_written(decision.hold_until)
        return
    due = assignment.sla_due_at
    if policy is None or due is None:
        return
    hours, tz = clock_of(rep, roster.team(decision.team_id))
    schedule_clock(rt, session, lead.lead_id, assignment.id, policy, now, due, hours, tz)


def _record_latency(session: AsyncSession, lead: LeadRow, now: datetime) -> None:
    """Speed of the pipeline itself: source submit and Handoff receipt to the first decision."""
    for since, at in (("received", lead.received_at), ("submitted", lead.submitted_at)):
        if at is not None and at <= now:
            seconds = (now - at).total_seconds()
            metrics.record(session, partial(metrics.ASSIGNMENT_LATENCY.labels(since=since).observe, seconds))
