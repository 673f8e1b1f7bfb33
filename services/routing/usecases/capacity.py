"""Capacity: what fills a rep's max_open. By default only their open leads nobody has touched yet, so leads a rep
is working stop keeping new ones away (`capacity_counts: untouched`); `open` counts every open lead. The setting
is the environment's (HANDOFF_CAPACITY_COUNTS), a team's `capacity_counts` wins for its reps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from routing.domain import Action, RepLoad, RoutingRules
from routing.store.desk import DeskRepository
from routing.usecases.context import Roster, RoutingContext

_WORKED = "routing_worked_open"  # session.info key: (transaction, worked open leads per rep)


def counts_untouched(rt: RoutingContext, roster: Roster, rep_id: str) -> bool:
    """Whether this rep's max_open counts only untouched leads (their team's option, else the setting)."""
    rep = roster.rep(rep_id)
    team = roster.team(rep.team) if rep else None
    mode = (team.capacity_counts if team else None) or rt.settings.capacity_counts
    return mode == "untouched"


async def capacity_loads(
    rt: RoutingContext, session: AsyncSession, roster: Roster, loads: Mapping[str, RepLoad]
) -> dict[str, RepLoad]:
    """The loads the engine checks max_open against: each rep's open leads less those already worked, where the
    rep's capacity counts untouched leads. Worked leads are read once per transaction (touches never happen in
    the middle of a routing batch)."""
    worked = await worked_open(session)
    out = dict(loads)
    for rep_id in worked:
        load = out.get(rep_id)
        if load is not None:
            out[rep_id] = capacity_load(rt, roster, worked, rep_id, load)
    return out


def capacity_load(rt: RoutingContext, roster: Roster, worked: Mapping[str, int], rep_id: str, load: RepLoad) -> RepLoad:
    """One rep's load as capacity_loads gives it, from the transaction's worked leads (`worked_open`): for a batch
    that moves one rep's load a decision."""
    count = worked.get(rep_id)
    if count and counts_untouched(rt, roster, rep_id):
        return replace(load, open_leads=max(0, load.open_leads - count))
    return load


# The last (roster, rules) asked about and the answer: both objects live as long as their version.
_NEEDS: tuple[Roster, RoutingRules, bool] | None = None


def needs_worked(roster: Roster, rules: RoutingRules) -> bool:
    """Whether any decision on this roster and these rules reads a rep's open leads: a rep's max_open, or a
    least_loaded pick (a team's method, a rule's or the fallback's). When none does, the worked open leads (a
    count over every touched open lead, per poll: ~1.4 ms at 6,700 of them) change no decision."""
    global _NEEDS
    if _NEEDS is not None and _NEEDS[0] is roster and _NEEDS[1] is rules:
        return _NEEDS[2]
    needed = (
        any(rep.max_open is not None for rep in roster.reps)
        or any(team.method == "least_loaded" for team in roster.teams)
        or rules.fallback_method == "least_loaded"
        or any(_least_loaded(rule.action) for rule in rules.rules)
    )
    _NEEDS = (roster, rules, needed)
    return needed


def _least_loaded(action: Action | None) -> bool:
    while action is not None:
        if action.method == "least_loaded":
            return True
        action = action.fallback
    return False


def remember_worked(session: AsyncSession, worked: dict[str, int]) -> None:
    """The worked open leads per rep, read by the caller for this transaction (a routing batch reads them with
    the loads and rotation in one call)."""
    session.info[_WORKED] = (session.sync_session.get_transaction(), worked)


async def worked_open(session: AsyncSession) -> Mapping[str, int]:
    """The transaction's worked open leads per rep, read-only: the same dict every call (a batch asks once a
    decision, for the rep the decision moved)."""
    current = session.sync_session.get_transaction()
    cached = session.info.get(_WORKED)
    if cached is not None and cached[0] is current:
        return cast("Mapping[str, int]", cached[1])
    worked = await DeskRepository(session).worked_open_leads()
    session.info[_WORKED] = (current, worked)
    return worked
