"""Batch: a consumer poll of lead.scored routed at once. The "already routed?" question is asked once, the roster,
rotation and loads are read once and kept in memory, the decisions are made in memory one after the other (each
sees the rotation and loads the ones before it left), and the batch's rows (routing.usecases.batch_rows) are
written with a handful of executemany statements: leads, assignments, timers, timeline, rotation, loads, outbox,
webhook deliveries.

Locks: the teams the batch will route to and the leads' threads, sorted, in one statement, before the state is
read; a decision that lands on a team not yet locked (a team full, so the fallback) writes what is decided so
far, locks that team, reads its state again and decides once more. A repeat (a lead naming its original) takes
the one-lead path, in its place in the batch, because it may join the open lead of its person instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from common.ids import new_ids
from routing.domain import Action, Decision, RepLoad, RoutingRules, route
from routing.domain.accounts import AccountBook
from routing.domain.engine import FirstMatch
from routing.store import RoutingRepository
from routing.store.leads import BatchState
from routing.usecases import assign
from routing.usecases.batch_rows import Pending, moved, record
from routing.usecases.capacity import capacity_load, capacity_loads, needs_worked, remember_worked, worked_open
from routing.usecases.context import Roster, RoutingContext
from routing.usecases.decide import local_days, rep_loads
from routing.usecases.decisions import scored_view
from routing.usecases.shared import (
    EVERYTHING,
    LoadState,
    TxState,
    account_books,
    load_of,
    loads,
    lock_teams,
    one_writer,
    rotation,
    tx,
)


async def on_scored_batch(rt: RoutingContext, session: AsyncSession, events: Sequence[Event]) -> None:
    """lead.scored, a poll at a time: runs of new leads routed together, each repeat on its own in its place."""
    run: list[Event] = []
    for scored in events:
        if scored.data.get("duplicate_of"):
            await route_leads(rt, session, run)
            run = []
            await assign.on_scored(rt, session, scored)
        else:
            run.append(scored)
    await route_leads(rt, session, run)


async def route_leads(rt: RoutingContext, session: AsyncSession, events: Sequence[Event]) -> None:
    """Route new leads (none of them a repeat) as one batch in the caller's transaction."""
    state = tx(session)
    batch: dict[str, Event] = {}
    for scored in events:
        if scored.subject not in state.routed:
            batch.setdefault(scored.subject, scored)  # a score re-published within the poll: the first one routes
    if not batch:
        return
    # SQLite (one writer: nothing to lock, so no team to guess): the roster, rules and accounts held from the last
    # version read, that version read with the batch's state and confirmed; else (or on PostgreSQL) read first.
    serial = one_writer(session)
    held = rt.held(session) if serial else None
    if held is not None:
        roster, rules, index = held
    else:
        roster, rules, index = await rt.roster(session), await rt.rules(session), await rt.account_index(session)
    now = rt.clock()
    views = {lead_id: scored_view(scored.data, erased=False) for lead_id, scored in batch.items()}
    books = dict(zip(views, await account_books(session, list(views.values()), index), strict=True))
    # Each lead's first matching rule, evaluated once: for the lock to take, then for the decision.
    firsts = {lead_id: FirstMatch(rules.first_match(view)) for lead_id, view in views.items()}
    if not serial:
        guesses = {_team_guessed(roster, rules, views[i], books[i], firsts[i]) for i in views}
        await lock_teams(session, guesses, threads=batch)
    found = await _read_state(session, batch, needs_worked(roster, rules), version=held is not None)
    if held is not None and (found.version is None or not rt.confirm(session, found.version)):
        # Another version: the accounts looked up on the held ones are forgotten, the roster read (and noted for
        # the transaction), then the batch decided again.
        state.accounts.clear()
        await rt.roster(session)
        await route_leads(rt, session, events)
        return
    routed, erased = found.routed, found.erased
    for lead_id in routed:
        del batch[lead_id]
    for lead_id in erased:
        views[lead_id] = scored_view(batch[lead_id].data, erased=True)
        firsts[lead_id] = FirstMatch(rules.first_match(views[lead_id]))  # the rules see the view without the person
        (books[lead_id],) = await account_books(session, [views[lead_id]], index)
    if not batch:
        return
    state.routed.update(batch)
    ids = iter(found.ids)
    pending = Pending(event_ids=new_ids(len(batch)))
    current = _Current(local_days(now, {rep.timezone for rep in roster.reps}))
    for lead_id, scored in batch.items():
        book = books[lead_id]
        decision, load_rows, state_now = await _decide(
            rt, session, state, pending, current, roster, rules, views[lead_id], book, firsts[lead_id], now
        )
        record(rt, pending, roster, rules, scored, views[lead_id], decision, next(ids), now, lead_id in erased)
        moved(pending, state_now, load_rows, roster, decision, current.days)
        current.moved(rt, roster, load_rows, decision.rep_id)
    await pending.write(rt, session)


async def _read_state(
    session: AsyncSession, batch: Mapping[str, Event], worked: bool, *, version: bool = False
) -> BatchState:
    """After the locks, in one call to the store: which leads are routed or erased already, the others' assignment
    ids, and (unless this transaction holds them already) the loads, rotation and worked leads the decisions read
    (`worked`: whether they read them at all, capacity.needs_worked; else none are counted), and (`version`) the
    stored roster version."""
    state = tx(session)
    needed = state.loads is None or state.rotation is None
    found = await RoutingRepository(session).batch_state(batch, state=needed, worked=worked, version=version)
    if found.loads is not None and found.rotation is not None and found.worked is not None:
        state.loads = {rep_id: LoadState(*values) for rep_id, values in found.loads.items()}
        state.rotation = found.rotation
        remember_worked(session, found.worked)
    return found


class _Current:
    """The reps' loads as the engine reads them (today's counts, less worked leads), worked out once per batch from
    the transaction's load rows and kept current one rep at a time as decisions move them; worked out again when
    the rows are read again (a lock taken mid-batch on PostgreSQL forgets them)."""

    def __init__(self, days: dict[str, str]) -> None:
        self.days = days  # each roster zone's local date at the batch's moment
        self.rows: dict[str, LoadState] | None = None
        self.loads: dict[str, RepLoad] = {}
        self.worked: Mapping[str, int] = {}  # the transaction's worked open leads per rep, with the rows

    async def of(
        self, rt: RoutingContext, session: AsyncSession, roster: Roster, rows: dict[str, LoadState], now: datetime
    ) -> dict[str, RepLoad]:
        if self.rows is not rows:
            self.loads = await capacity_loads(rt, session, roster, rep_loads(roster, rows, now))
            self.worked = await worked_open(session)
            self.rows = rows
        return self.loads

    def moved(self, rt: RoutingContext, roster: Roster, rows: dict[str, LoadState], rep_id: str | None) -> None:
        rep = roster.rep(rep_id)
        if rep is None or self.rows is not rows:
            return  # no rep's load moved, or the rows are read again before the next decision anyway
        load = load_of(rows.get(rep.id), self.days[rep.timezone])
        self.loads[rep.id] = capacity_load(rt, roster, self.worked, rep.id, load)


def _team_guessed(
    roster: Roster, rules: RoutingRules, view: Mapping[str, Any], book: AccountBook, first: FirstMatch
) -> str | None:
    """The team a lead will most likely go to, from its first matching rule (no state needed): the lock to take
    before the state is read. A guess that misses (a full team's overflow, an account owner who is away) costs
    one more lock in _decide."""
    match = first.match
    while match is not None:
        guess = _action_team(roster, match[1].action, view, book)
        if guess is not _NEXT_RULE:
            return cast("str | None", guess)
        match = rules.first_match(view, start=match[0] + 1)  # no owner and no fallback: the next rule decides
    return rules.fallback_team


_NEXT_RULE = object()


def _action_team(roster: Roster, action: Action, view: Mapping[str, Any], book: AccountBook) -> object:
    if action.kind == "team":
        return action.team
    if action.kind == "rep":
        rep = roster.rep(action.rep)
        return rep.team if rep else None
    if action.kind == "nurture":
        return None
    account = book.match(view)  # an account's owner, if the roster has them; else the fallback or the next rule
    owner = roster.rep(account.owner) if account else None
    if owner is not None:
        return owner.team
    return _action_team(roster, action.fallback, view, book) if action.fallback is not None else _NEXT_RULE


def _route(
    view: Mapping[str, Any],
    roster: Roster,
    rules: RoutingRules,
    current: Mapping[str, RepLoad],
    state: Mapping[str, Mapping[str, int]],
    book: AccountBook,
    first: FirstMatch,
    now: datetime,
) -> Decision:
    return route(
        view,
        rules=rules,
        teams=roster.teams,
        reps=roster.reps,
        loads=current,
        rotation=state,
        accounts=book,
        previous_rep=None,
        now=now,
        first=first,
        index=roster.index,
    )


async def _decide(
    rt: RoutingContext,
    session: AsyncSession,
    state: TxState,
    pending: Pending,
    loads_now: _Current,
    roster: Roster,
    rules: RoutingRules,
    view: Mapping[str, Any],
    book: AccountBook,
    first: FirstMatch,
    now: datetime,
) -> tuple[Decision, dict[str, LoadState], dict[str, dict[str, int]]]:
    """One decision on the batch's state in memory, under its team's lock (taken now if the guess missed it); with
    the transaction's load rows and rotation it was made on, which the decision then moves. `state`: the
    transaction's cache (tx), looked up once per batch: its loads and rotation are read again only after a lock
    taken here forgot them."""
    while True:
        load_rows = state.loads if state.loads is not None else await loads(session)
        positions = state.rotation if state.rotation is not None else await rotation(session)
        current = await loads_now.of(rt, session, roster, load_rows, now)
        decision = _route(view, roster, rules, current, positions, book, first, now)
        if EVERYTHING in state.locked or not decision.team_id or decision.team_id in state.locked:
            return decision, load_rows, positions
        await pending.write(rt, session)  # what the state in memory holds is stored before it is read again
        await lock_teams(session, [decision.team_id])
