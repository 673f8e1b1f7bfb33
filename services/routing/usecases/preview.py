"""Preview: what the router would decide for a lead now (simulate), and what candidate rules would have done
to a past window of leads (backtest). Both write nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from routing import backtest as bt
from routing.domain import RoutingRules, RulesError, load_rules, sla_deadline
from routing.usecases.context import RoutingContext
from routing.usecases.decide import decide, resolve_decision_sla
from routing.usecases.roster import roster_problems
from routing.usecases.shared import aware, clock_of

WindowTooLarge = bt.WindowTooLarge


async def simulate(
    rt: RoutingContext, session: AsyncSession, view: dict[str, Any], rules_text: str | None, at: datetime | None
) -> dict[str, Any]:
    """The decision for a lead as of `at` (default now) under the active or candidate rules, and the SLA policy
    it would start: minutes, warnings, ladder and, for a given `at`, the due time (without one the answer stays
    the same from one call to the next). Raises RulesError for invalid candidate rules."""
    rules = rt.parse_rules(rules_text) if rules_text else await rt.rules(session)
    now = aware(at) or datetime.now(UTC)
    decision = await decide(rt, session, view, rules, now=now)
    roster = await rt.roster(session)
    resolved = resolve_decision_sla(rt, decision, roster, (view.get("score") or {}).get("grade"), rules=rules)
    sla = None
    if resolved is not None:
        policy = resolved.policy
        hours, tz = clock_of(roster.rep(decision.rep_id), roster.team(decision.team_id))
        due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
        sla = {**resolved.to_dict(), "due_at": due.isoformat() if at is not None else None}
    return {**decision.to_dict(), "sla": sla}


async def backtest(
    rt: RoutingContext,
    session: AsyncSession,
    candidate_rules: str | dict[str, Any],
    *,
    since: datetime,
    until: datetime,
    changed_limit: int,
) -> dict[str, Any]:
    """Replay the window through the candidate rules beside the active ones. Raises RulesError (invalid rules,
    or teams and reps the roster lacks) and WindowTooLarge."""
    if isinstance(candidate_rules, str):
        candidate: RoutingRules = rt.parse_rules(candidate_rules)
    else:
        candidate = load_rules(candidate_rules)
    roster = await rt.roster(session)
    problems = roster_problems(candidate, roster)
    if problems:
        raise RulesError(problems)
    return await bt.backtest(
        session,
        current=await rt.rules(session),
        candidate=candidate,
        teams=roster.teams,
        reps=roster.reps,
        since=since,
        until=until,
        max_leads=rt.settings.backtest_max_leads,
        changed_limit=changed_limit,
        sla_defaults=rt.sla_policies,
    )
