"""What routing's use cases share: the per-transaction cache and the routing locks, rep loads and rotation,
account look-ups, the SLA clock's timers, and events written to the outbox with their webhook deliveries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from common.outbox import add_events
from common.topics import EVENT_TOPICS
from routing.domain import Rep, RepLoad, SlaPolicy, Team, WorkingHours, warning_times
from routing.domain.accounts import Account, AccountBook, lead_match_keys
from routing.domain.hours import zone
from routing.store import RoutingRepository, SlaTimer, outbox
from routing.usecases.context import AccountIndex, RoutingContext
from routing.webhooks import enqueue_deliveries

EVENT_SOURCE = "/handoff/routing"
_TX = "routing_tx"  # session.info key: what this transaction has read once and keeps current in memory
EVERYTHING = "*"  # the exclusive routing lock: every team and thread at once


@dataclass
class LoadState:
    """A rep's load as this transaction knows it (the row's values plus this transaction's own changes)."""

    open_leads: int = 0
    day: str = ""
    assigned_today: int = 0


@dataclass
class TxState:
    """What a transaction reads once and then keeps current itself: the rotation and loads of the teams whose
    locks it holds (nobody else writes those until it commits), the accounts, and the leads it has routed."""

    transaction: Any
    locked: set[str] = field(default_factory=set)  # keys held: teams, "thread:<id>", or EVERYTHING
    shared: bool = False  # the shared routing lock (taken before any key)
    loads: dict[str, LoadState] | None = None
    rotation: dict[str, dict[str, int]] | None = None
    accounts: dict[str, tuple[Account, ...]] = field(default_factory=dict)
    routed: set[str] = field(default_factory=set)  # leads routed in this transaction, not yet flushed


def tx(session: AsyncSession) -> TxState:
    """This transaction's cache; a rolled-back or new transaction starts from an empty one."""
    current = session.sync_session.get_transaction()
    state: TxState | None = session.info.get(_TX)
    if state is None or state.transaction is not current:
        state = TxState(current)
        session.info[_TX] = state
    return state


async def lock(session: AsyncSession) -> None:
    """The exclusive routing lock, once per transaction (held until the commit): every team's decisions wait.
    For roster and rules changes and the paths that have not named their teams."""
    state = tx(session)
    if EVERYTHING not in state.locked:
        await RoutingRepository(session).lock_routing()
        state.locked.add(EVERYTHING)
        _forget_state(session, state)


def holds(session: AsyncSession, keys: Iterable[str | None]) -> bool:
    """Whether this transaction holds the locks of all these keys (teams, threads)."""
    locked = tx(session).locked
    return EVERYTHING in locked or all(k in locked for k in keys if k)


async def lock_teams(session: AsyncSession, team_ids: Iterable[str | None], *, threads: Iterable[str] = ()) -> bool:
    """Lock these teams (and persons' threads) for this transaction, sorted, in one round trip: rotation and
    load are per team, so decisions about different teams run side by side in different processes. The
    rotation and loads read before are forgotten (another process may have changed them): returns True when
    a lock was taken, so a decision made before it is made again."""
    state = tx(session)
    keys = {k for k in team_ids if k} | {f"thread:{t}" for t in threads}
    if EVERYTHING in state.locked or keys <= state.locked:
        return False
    if not _on_postgres(session):
        state.locked.add(EVERYTHING)  # SQLite has one writer at a time: every decision is serialized already
        return False
    repo = RoutingRepository(session)
    if not state.shared:
        await repo.lock_routing(shared=True)
        state.shared = True
    await repo.lock_keys(sorted(keys - state.locked))
    state.locked |= keys
    _forget_state(session, state)
    return True


def one_writer(session: AsyncSession) -> bool:
    """On SQLite (one writer at a time, every decision serialized already) this transaction holds every lock, as
    lock_teams would note it, and no team need be named: True. False on PostgreSQL (the teams' locks to take)."""
    state = tx(session)
    if EVERYTHING in state.locked:
        return True
    if _on_postgres(session):
        return False
    state.locked.add(EVERYTHING)
    return True


def _on_postgres(session: AsyncSession) -> bool:
    bind = session.bind
    return bind is not None and bind.dialect.name == "postgresql"


def _forget_state(session: AsyncSession, state: TxState) -> None:
    # SQLite has one writer: what this transaction read is what is there. PostgreSQL: read again under the lock.
    if _on_postgres(session):
        state.loads, state.rotation = None, None


async def loads(session: AsyncSession) -> dict[str, LoadState]:
    state = tx(session)
    if state.loads is None:
        stored = await RoutingRepository(session).load_states()
        state.loads = {rep_id: LoadState(*values) for rep_id, values in stored.items()}
    return state.loads


async def rotation(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Every team's rotation positions (team -> rep -> position), kept current by this transaction's decisions."""
    state = tx(session)
    if state.rotation is None:
        state.rotation = await RoutingRepository(session).rotation()
    return state.rotation


async def save_rotation(session: AsyncSession, changed: Mapping[str, Mapping[str, int]]) -> None:
    """Teams' new rotation states, in the cache and the store (each team's whole state replaces its rows)."""
    if not changed:
        return
    (await rotation(session)).update({team: dict(state) for team, state in changed.items()})
    await RoutingRepository(session).replace_rotation(changed)


async def account_book(session: AsyncSession, view: Mapping[str, Any]) -> AccountBook:
    """The accounts this lead could match (its domains, their parents, its company name), cached per transaction."""
    keys = _account_keys(view)
    await load_accounts(session, keys)
    cache = tx(session).accounts
    return AccountBook.of(a for k in keys for a in cache[k])


def _account_keys(view: Mapping[str, Any]) -> list[str]:
    domains, names = lead_match_keys(view)
    return domains + [f"name:{n}" for n in names]


async def load_accounts(session: AsyncSession, keys: Iterable[str], index: AccountIndex | None = None) -> None:
    """Read the accounts of these match keys that the transaction has not read yet, in one query; from `index`
    (every account, RoutingContext.account_index) when given, with none."""
    cache = tx(session).accounts
    missing = sorted({k for k in keys if k not in cache})
    if not missing:
        return
    if index is not None:
        cache.update({k: index.get(k, ()) for k in missing})
        return
    found: dict[str, list[Account]] = {k: [] for k in missing}
    rows = await RoutingRepository(session).account_candidates(
        [k for k in missing if not k.startswith("name:")],
        [k.removeprefix("name:") for k in missing if k.startswith("name:")],
    )
    for row in rows:
        for key in (row.domain, f"name:{row.name_key}"):
            if key in found:
                found[key].append(row.to_account())
    cache.update({k: tuple(v) for k, v in found.items()})


async def account_books(
    session: AsyncSession, views: Sequence[Mapping[str, Any]], index: AccountIndex | None = None
) -> list[AccountBook]:
    """Each lead's account book, for a batch read in one query (none with `index`: every account, in memory)."""
    if index is not None and not index:
        return [AccountBook() for _ in views]  # no accounts at all: nothing to match a lead's domains against
    keys = [_account_keys(view) for view in views]
    await load_accounts(session, (k for each in keys for k in each), index)
    cache = tx(session).accounts
    return [AccountBook.of(a for k in each for a in cache[k]) for each in keys]


def load_of(row: LoadState | None, today: str) -> RepLoad:
    if row is None:
        return RepLoad()
    return RepLoad(open_leads=row.open_leads, assigned_today=row.assigned_today if row.day == today else 0)


def move_load(cached: dict[str, LoadState], rep_id: str, *, open_delta: int, day: str | None) -> None:
    """The cache's side of a load change (adjust_load writes it; a batch writes its sum once)."""
    row = cached.setdefault(rep_id, LoadState())
    row.open_leads = max(0, row.open_leads + open_delta)
    if day is not None:
        if row.day != day:
            row.day, row.assigned_today = day, 0
        row.assigned_today += 1


async def adjust_load(session: AsyncSession, rep_id: str, *, open_delta: int, day: str | None) -> None:
    """A rep's open leads move by `open_delta`; with `day`, one more lead assigned on that local day."""
    move_load(await loads(session), rep_id, open_delta=open_delta, day=day)
    await RoutingRepository(session).add_loads({rep_id: (open_delta, day, 1 if day else 0)})


def clock_of(rep: Rep | None, team: Team | None) -> tuple[WorkingHours, str]:
    """Whose working week and zone a clock runs on: the rep's, else the team's, else always-UTC."""
    if rep is not None:
        return rep.hours, rep.timezone
    if team is not None:
        return team.hours, team.timezone
    return WorkingHours(), "UTC"


def local_day(now: datetime, tz: str) -> str:
    return now.astimezone(zone(tz)).date().isoformat()


def parse_time(value: Any) -> datetime | None:
    """An ISO time from an event (taken as UTC when it carries no zone), or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return aware(parsed)


def clock_rows(
    lead_id: str,
    assignment_id: int,
    policy: SlaPolicy,
    start: datetime,
    due: datetime,
    hours: WorkingHours,
    tz: str,
) -> list[dict[str, Any]]:
    """The clock's timers as rows: a warning at each of the policy's points between start and due, the breach."""
    rows: list[dict[str, Any]] = [
        {"lead_id": lead_id, "assignment_id": assignment_id, "kind": "warning", "fraction": fraction, "due_at": at}
        for fraction, at in zip(
            policy.warn_at,
            warning_times(start, due, policy.warn_at, business_hours=policy.business_hours, hours=hours, tz=tz),
            strict=False,
        )
    ]
    rows.append({"lead_id": lead_id, "assignment_id": assignment_id, "kind": "breach", "fraction": None, "due_at": due})
    return rows


def schedule_clock(
    rt: RoutingContext,
    session: AsyncSession,
    lead_id: str,
    assignment_id: int,
    policy: SlaPolicy,
    start: datetime,
    due: datetime,
    hours: WorkingHours,
    tz: str,
) -> None:
    """The clock's timers: a warning at each of the policy's points between start and due, the breach at due."""
    for row in clock_rows(lead_id, assignment_id, policy, start, due, hours, tz):
        session.add(SlaTimer(**row))
    rt.on_timer_written(start if policy.warn_at else due)


def event(kind: str, lead_id: str, data: dict[str, Any], now: datetime, correlation_id: str | None = None) -> Event:
    return Event(type=kind, source=EVENT_SOURCE, subject=lead_id, time=now, correlation_id=correlation_id, data=data)


async def publish(rt: RoutingContext, session: AsyncSession, events: Sequence[Event]) -> None:
    """Write events to the outbox and queue their webhook deliveries, both in the caller's transaction."""
    await add_events(session, outbox, rt.settings, events, lambda e: EVENT_TOPICS[e.type])
    await enqueue_deliveries(session, events, rt.clock())


def aware(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive values)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
