"""Clock: the SLA timers fire (warnings, breaches, follow-up clocks, holds ending), and a breach climbs the
escalation ladder (reassign, notify the manager, hand to the manager, the team queue), each step its own clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from functools import lru_cache, partial
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from routing import metrics
from routing.domain import Decision, manager_for, sla_deadline, sla_policy_for
from routing.domain.sla import ResolvedSla, is_hotter, resolve_sla
from routing.store import AssignmentRow, ClaimedTimer, LeadRow, RoutingRepository, SlaTimer, TimelineRow
from routing.usecases import assign as assigning
from routing.usecases.context import Roster, RoutingContext
from routing.usecases.notices import emit_sla, event_ids, sla_event
from routing.usecases.shared import clock_of, lock_teams, schedule_clock


async def fire_due_timers(rt: RoutingContext, session: AsyncSession, now: datetime, limit: int) -> int:
    """Detect what is due and make the escalations it calls for, all in this transaction; returns how many
    timers were due (the timer loop fires and escalates in separate transactions)."""
    fired = await detect_due_timers(rt, session, now, limit)
    while await escalate_due(rt, session, now, limit):
        pass
    return fired


async def detect_due_timers(
    rt: RoutingContext, session: AsyncSession, now: datetime, limit: int, *, due_by: datetime | None = None
) -> int:
    """Fire up to `limit` timers due by `due_by` (default: now), whoever's they are, found in the store: the
    sweep of what no owner took, and tests and tools. Returns how many fired."""
    timers = await RoutingRepository(session).claim_due_timers(now, limit, due_by=due_by)
    return await _fire(rt, session, timers, now)


async def fire_timers(rt: RoutingContext, session: AsyncSession, timer_ids: Collection[int], now: datetime) -> int:
    """Fire these timers (the timer loop's near horizon), those still open: each is claimed by id in the one
    conditional UPDATE that marks it fired, so it fires in this transaction or not at all. Returns how many."""
    timers = await RoutingRepository(session).claim_timers(timer_ids, now)
    return await _fire(rt, session, timers, now)


async def _fire(rt: RoutingContext, session: AsyncSession, timers: Sequence[ClaimedTimer], now: datetime) -> int:
    """Warnings, breaches and holds, claimed: notices, timeline rows and escalation markers, one statement each
    for the whole batch. No routing lock: the timer rows are claimed (row locks that a touch waits for, never
    the other way round), and what needs the roster's state (a reassignment, routing a held lead again) is
    left as a marker on the timer row for escalate_due, which takes the lock in its own transaction."""
    if not timers:
        return 0
    repo = RoutingRepository(session)
    facts = await repo.clock_facts({timer.lead_id for timer in timers})
    notices: list[Event] = []
    unmarked: list[int] = []  # claimed with an escalation mark (ESCALATING_KINDS) that calls for no step
    lateness: list[float] = []
    cancelled: list[int] = []
    counted: Counter[tuple[Any, str | None]] = Counter()  # (metric, team id) -> notices of that kind
    # What each first-contact breach calls for: its ladder's next step (a notify step names the manager).
    breached = [facts[t.lead_id] for t in timers if t.kind == "breach" and t.lead_id in facts]
    steps = await _breach_steps(rt, session, breached, now)
    ids, stamp = iter(event_ids(len(timers))), now.isoformat()  # once per batch, not per notice

    def notice(kind: str, clock: Any, timer: Any, **extra: Any) -> None:
        notices.append(sla_event(kind, clock, clock, timer, now, event_id=next(ids), fired_at=stamp, **extra))

    for timer in timers:
        clock = facts.get(timer.lead_id)
        if clock is None or clock.id != timer.assignment_id:
            cancelled.append(timer.id)  # the lead moved on (touched, reassigned): this clock no longer runs
            continue
        lateness.append(max(0.0, (now - timer.due_at).total_seconds()))
        if timer.kind == "hold":
            continue  # marked by the claim: escalate_due routes the lead again, under the routing lock
        elif timer.kind == "warning":
            counted[metrics.SLA_WARNINGS, clock.team_id] += 1
            notice("lead.sla_warning", clock, timer)
        elif timer.kind == "follow_up":
            # Touches missing after the first one: reported, never escalated (the rep is working the lead).
            counted[metrics.SLA_BREACHES, clock.team_id] += 1
            notice("lead.sla_breached", clock, timer, clock_kind="follow_up")
        else:
            counted[metrics.SLA_BREACHES, clock.team_id] += 1
            step, manager_id = steps.get(clock.id, (None, None))
            notice("lead.sla_breached", clock, timer, step=step, manager_id=manager_id)
            if step is None:  # an empty ladder: the breach is reported and the rep keeps the lead
                unmarked.append(timer.id)
    for (counter, team_id), n in counted.items():  # counted once per team and kind, after the commit
        metrics.record(session, partial(counter.labels(team=metrics.team_label(team_id)).inc, n))
    await repo.cancel_timers(cancelled)
    await repo.clear_escalations(unmarked)
    if lateness:
        metrics.record(session, partial(_observe_all, metrics.SLA_TIMER_LATENESS, lateness))
    await emit_sla(rt, session, notices)
    return len(timers)


async def escalate_due(rt: RoutingContext, session: AsyncSession, now: datetime, limit: int) -> int:
    """Make the follow-ups of fired timers (a breach's ladder step, a hold's new routing), each once: its marker
    is cleared in the transaction that makes it, so a crash retries it and two processes never both take it."""
    repo = RoutingRepository(session)
    if not await repo.escalation_due(max(now, rt.clock())):
        return 0  # nothing waits: take no lock
    # Every writer takes its routing locks before any row lock (here: before claiming markers), so a rep's
    # touch and an escalation at the same moment serialize instead of deadlocking on each other's rows. An
    # escalation moves leads within their teams: it locks those teams, and other teams' decisions go on.
    await lock_teams(session, await repo.escalation_teams(max(now, rt.clock()), limit))
    now = max(now, rt.clock())
    markers = await repo.due_escalations(now, limit)
    if not markers:
        return 0
    lead_ids = {marker.lead_id for marker in markers}
    currents = await repo.current_assignments(lead_ids)
    leads = await repo.leads(lead_ids)
    for marker in markers:
        await _escalate_marker(rt, session, marker, leads.get(marker.lead_id), currents, now)
    await session.flush()
    return len(markers)


async def _escalate_marker(
    rt: RoutingContext,
    session: AsyncSession,
    marker: SlaTimer,
    lead: LeadRow | None,
    currents: dict[str, AssignmentRow],
    now: datetime,
) -> None:
    detected = marker.escalate_at or now
    marker.escalate_at = None
    current = currents.get(marker.lead_id)
    if lead is None or current is None or current.id != marker.assignment_id or marker.cancelled:
        return  # the lead moved on before the escalation (a manual reassignment, a touch)
    if marker.kind == "hold":
        currents[lead.lead_id] = await assigning.assign(
            rt,
            session,
            lead,
            now=now,
            correlation_id=None,
            event_type="lead.assigned",
            previous=current,
            end_reason="hold_ended",
        )
        return
    if lead.first_touch_at is not None:
        return  # touched while the breach fired: the clock had stopped, nothing to escalate
    late_ms = max(0, round((now - detected).total_seconds() * 1000))
    note = {"breach_detected_at": detected.isoformat(), "escalation_late_ms": late_ms}
    currents[lead.lead_id] = await escalate(rt, session, lead, current, now, note=note)


async def escalate_pending(
    rt: RoutingContext,
    session: AsyncSession,
    lead: LeadRow,
    now: datetime,
    markers: Sequence[SlaTimer] | None = None,
) -> None:
    """A breach detected (or a hold ended) but not yet followed up happened first: do it before anything else
    changes the lead. `markers`: the lead's pending markers when the caller has loaded them already."""
    repo = RoutingRepository(session)
    if markers is None:
        markers = await repo.pending_escalations(lead.lead_id)
    if not markers:
        return
    currents = await repo.current_assignments({lead.lead_id})
    for marker in markers:
        await _escalate_marker(rt, session, marker, lead, currents, now)
    await session.flush()


async def _breach_steps(
    rt: RoutingContext, session: AsyncSession, clocks: Sequence[Any], now: datetime
) -> dict[int, tuple[str | None, str | None]]:
    """By assignment id: the ladder step each breach calls for, and for a notify_manager step the manager."""
    if not clocks:
        return {}
    roster: Roster | None = None
    steps: dict[int, tuple[str | None, str | None]] = {}
    for clock in clocks:
        carried = _kept_sla(clock.sla) or carried_sla(rt, None, clock.grade)
        rung = carried.step_after(clock.reassignments or 0)
        manager = None
        if rung is not None and rung.step == "notify_manager" and clock.rep_id:
            roster = roster or await rt.roster(session)
            manager = manager_for(clock.rep_id, roster.reps, roster.teams, now=now)
        steps[clock.id] = (rung.step if rung else None, manager)
    return steps


@lru_cache(maxsize=256)
def _kept_sla(text: str | None) -> ResolvedSla | None:
    """The policy kept with an assignment, from its JSON text (parsed once per distinct policy)."""
    return ResolvedSla.from_dict(orjson.loads(text)) if text and text != "null" else None


def carried_sla(rt: RoutingContext, snapshot: Any, grade: str | None) -> ResolvedSla:
    """The policy an assignment runs on: the one kept with it, else (made before policies were data) the
    environment's for the grade."""
    kept = ResolvedSla.from_dict(snapshot)
    return kept or ResolvedSla(sla_policy_for(grade, policies=rt.sla_policies), rt.ladder)


async def escalate(
    rt: RoutingContext,
    session: AsyncSession,
    lead: LeadRow,
    current: AssignmentRow,
    now: datetime,
    *,
    note: Mapping[str, Any] | None = None,
) -> AssignmentRow:
    """The ladder's next step (the assignment's policy, else the environment's): reassign to the next eligible
    rep, notify the manager and keep the rep, hand the lead to the manager, or send it to the team queue; each
    starts the step's own clock. `lead.reassignments` counts the steps taken, a notify step included."""
    carried = carried_sla(rt, (current.decision or {}).get("sla"), lead.grade)
    rung = carried.step_after(lead.reassignments)
    if rung is None:
        return current  # an empty ladder: nothing to do beyond the breach already reported
    step = rung.step
    carried = carried.for_step(rung)
    if step == "notify_manager":
        return await _notify_manager(rt, session, lead, current, carried, now, note=note)
    tried = frozenset(a.rep_id for a in await RoutingRepository(session).assignments(lead.lead_id) if a.rep_id)
    forced: Decision | None = None
    if step == "manager" and current.rep_id:
        roster = await rt.roster(session)
        manager = manager_for(current.rep_id, roster.reps, roster.teams, now=now)
        if manager:
            forced = Decision(
                outcome="assigned",
                rep_id=manager,
                team_id=current.team_id,
                rule_id="escalation:manager",
                ruleset_version=current.ruleset_version,
                method=None,
                candidates=[],
                reason=f"SLA missed {lead.reassignments + 1} times; escalated to the manager",
            )
        else:
            step = "queue"
    if step == "queue":
        forced = Decision(
            outcome="queued",
            rep_id=None,
            team_id=current.team_id or (await rt.rules(session)).fallback_team,
            rule_id="escalation:queue",
            ruleset_version=current.ruleset_version,
            method=None,
            candidates=[],
            reason="SLA missed and no one left to escalate to; the lead waits in the team queue",
        )
    lead.reassignments += 1
    return await assigning.assign(
        rt,
        session,
        lead,
        now=now,
        correlation_id=None,
        event_type="lead.reassigned",
        exclude=tried,
        previous=current,
        end_reason="sla_breach",
        forced=forced,
        note=note,
        # A queued lead picked up again gets its own policy afresh; otherwise the ladder carries on.
        sla=None if current.outcome == "queued" else carried,
    )


async def _notify_manager(
    rt: RoutingContext,
    session: AsyncSession,
    lead: LeadRow,
    current: AssignmentRow,
    sla: ResolvedSla,
    now: datetime,
    *,
    note: Mapping[str, Any] | None = None,
) -> AssignmentRow:
    """A notify_manager step: the breach event named the step and the manager; the rep keeps the lead and a
    new clock (the step's minutes) runs on the same assignment until the next step."""
    roster = await rt.roster(session)
    manager = manager_for(current.rep_id, roster.reps, roster.teams, now=now) if current.rep_id else None
    lead.reassignments += 1  # one rung climbed, though nobody was reassigned
    hours, tz = clock_of(roster.rep(current.rep_id), roster.team(current.team_id))
    policy = sla.policy
    due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
    current.sla_due_at, current.sla_minutes = due, policy.minutes
    schedule_clock(rt, session, lead.lead_id, current.id, policy, now, due, hours, tz)
    detail = {
        "assignment_id": current.id,
        "step": "notify_manager",
        "manager_id": manager,
        "rep_id": current.rep_id,
        "team_id": current.team_id,
        "sla_due_at": due.isoformat(),
        **(note or {}),
    }
    session.add(TimelineRow(lead_id=lead.lead_id, at=now, kind="escalated", detail=detail))
    return current


async def tighten_clock(
    rt: RoutingContext,
    session: AsyncSession,
    lead: LeadRow,
    current: AssignmentRow,
    grade: str | None,
    now: datetime,
) -> datetime | None:
    """Tighten a running first-contact clock to `grade`'s SLA started now, if that would end sooner; the
    timers (warnings and the breach) move with it. Returns the new due time, or None when the clock stays.

    One place for the rule so SLA policies can change how the new clock is computed without touching callers.
    A cooler grade never tightens, even where its own SLA is shorter (D's hour beside C's business day).
    """
    running = current.sla_due_at
    if running is None or lead.first_touch_at is not None or current.outcome != "assigned":
        return None  # no clock runs (nurture, held, touched); a queue's clock is the team's, not the grade's
    if is_hotter(lead.grade, grade):
        return None
    roster = await rt.roster(session)
    # The hotter grade's clock under the policy this assignment runs on: its rule's block, its team's, defaults.
    rule, team = (await rt.rules(session)).rule(current.rule_id), roster.team(current.team_id)
    policy = resolve_sla(
        grade,
        rule_block=rule.sla if rule else None,
        team_block=team.sla if team else None,
        defaults=rt.sla_policies,
        ladder=rt.ladder,
        rule_id=current.rule_id,
        team_id=current.team_id,
    ).policy
    rep = roster.rep(current.rep_id)
    hours, tz = clock_of(rep, roster.team(current.team_id))
    due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
    if due >= running:
        return None
    for timer in await RoutingRepository(session).pending_timers(current.id):
        if timer.kind in ("warning", "breach"):
            timer.fired_at, timer.cancelled = now, True
    current.sla_due_at = due
    current.sla_policy, current.sla_minutes = policy.grade, policy.minutes
    current.sla_business_hours = policy.business_hours
    schedule_clock(rt, session, lead.lead_id, current.id, policy, now, due, hours, tz)
    return due


def _observe_all(histogram: Any, values: Sequence[float]) -> None:
    for value in values:
        histogram.observe(value)
