"""Decide: the one way a routing decision is made (the stored roster, loads, rotation and accounts through the
pure engine), and the SLA policy a decision starts; shared by assign and preview, so a simulation is the real thing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from routing.domain import Decision, RepLoad, RoutingRules, SlaPolicy, queue_policy, route, sla_policy_for
from routing.domain.sla import ResolvedSla, resolve_sla
from routing.store import RoutingRepository
from routing.usecases.capacity import capacity_loads
from routing.usecases.context import Roster, RoutingContext
from routing.usecases.shared import LoadState, account_book, load_of, loads, local_day, rotation


def resolve_decision_sla(
    rt: RoutingContext,
    decision: Decision,
    roster: Roster,
    grade: str | None,
    *,
    rules: RoutingRules | None = None,
    carried: ResolvedSla | None = None,
) -> ResolvedSla | None:
    """The SLA policy of a decision: the matched rule's block, the team's, the defaults (field by field); a
    queued lead runs on its team's queue clock. None when no clock runs (nurture, held)."""
    if decision.outcome not in ("assigned", "queued"):
        return None
    team = roster.team(decision.team_id)
    queue = None
    if decision.outcome == "queued":
        queue = queue_policy(team) if team else sla_policy_for(None, queued=True, policies=rt.sla_policies)
    if carried is not None:
        if queue is None:
            return carried
        return ResolvedSla(queue, carried.escalation, carried.follow_up, "team_queue")
    rule = rules.rule(decision.rule_id) if rules is not None else None
    return resolve_sla(
        grade,
        rule_block=rule.sla if rule else None,
        team_block=team.sla if team else None,
        defaults=rt.sla_policies,
        ladder=rt.ladder,
        rule_id=decision.rule_id,
        team_id=decision.team_id,
        queue=queue,
    )


def policy_for(rt: RoutingContext, decision: Decision, roster: Roster, grade: str | None) -> SlaPolicy | None:
    """The clock a decision starts under the environment's defaults (no rules' or teams' blocks)."""
    resolved = resolve_decision_sla(rt, decision, roster, grade)
    return resolved.policy if resolved else None


async def decide(
    rt: RoutingContext,
    session: AsyncSession,
    view: Mapping[str, Any],
    rules: RoutingRules,
    *,
    now: datetime,
    exclude: frozenset[str] = frozenset(),
    load_rows: Mapping[str, LoadState] | None = None,
    rotation_state: Mapping[str, Mapping[str, int]] | None = None,
) -> Decision:
    """The one way a decision is made, shared by assign and preview so a simulation is the real thing."""
    roster = await rt.roster(session)
    if load_rows is None:
        load_rows = await loads(session)
    if rotation_state is None:
        rotation_state = await rotation(session)
    previous_rep = None
    if view.get("duplicate_of"):
        original = await RoutingRepository(session).lead(str(view["duplicate_of"]))
        previous_rep = original.current_rep_id if original else None
    return route(
        view,
        rules=rules,
        teams=roster.teams,
        reps=roster.reps,
        loads=await capacity_loads(rt, session, roster, rep_loads(roster, load_rows, now)),
        rotation=rotation_state,
        accounts=await account_book(session, view),
        previous_rep=previous_rep,
        exclude=exclude,
        now=now,
    )


def rep_loads(roster: Roster, load_rows: Mapping[str, LoadState], now: datetime) -> dict[str, RepLoad]:
    """Every rep's load as the engine reads it: today's count on the rep's own local day."""
    days = local_days(now, {rep.timezone for rep in roster.reps})
    return {rep.id: load_of(load_rows.get(rep.id), days[rep.timezone]) for rep in roster.reps}


_DAYS: dict[tuple[datetime, str], str] = {}


def local_days(now: datetime, zones: set[str]) -> dict[str, str]:
    """Each zone's local date, worked out once per minute (a date changes on a minute boundary in every zone)."""
    minute = now.replace(second=0, microsecond=0)
    if len(_DAYS) > 4096:
        _DAYS.clear()
    found = {}
    for tz in zones:
        day = _DAYS.get((minute, tz))
        if day is None:
            day = _DAYS[(minute, tz)] = local_day(minute, tz)
        found[tz] = day
    return found
