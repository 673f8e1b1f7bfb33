"""What routing's use cases share: the per-transaction cache and the routing lock, rep loads and rotation,
account look-ups, the SLA clock's timers, and events written to the outbox with their webhook deliveries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from routing.store import RepLoadRow, RotationRow, RoutingRepository, SlaTimer, outbox
from routing.usecases.context import RoutingContext
from routing.webhooks import enqueue_deliveries

EVENT_SOURCE = "/handoff/routing"
_TX = "routing_tx"  # session.info key: what this transaction has read once and keeps current in memory


@dataclass
class _TxState:
    """Rows a transaction reads once and then keeps current itself: within a transaction that holds the routing
    lock nobody else writes them, so re-reading them for every lead of a consumer batch would only cost time."""

    transaction: Any
    locked: bool = False
    loads: dict[str, RepLoadRow] | None = None
    rotation: list[RotationRow] | None = None
    accounts: dict[str, tuple[Account, ...]] = field(default_factory=dict)
    routed: set[str] = field(default_factory=set)  # leads routed in this transaction, not yet flushed


def tx(session: AsyncSession) -> _TxState:
    """This transaction's cache; a rolled-back or new transaction starts from an empty one."""
    current = session.sync_session.get_transaction()
    state: _TxState | None = session.info.get(_TX)
    if state is None or state.transaction is not current:
        state = _TxState(current)
        session.info[_TX] = state
    return state


async def lock(session: AsyncSession) -> None:
    """Take the routing lock once per transaction (it is held until the commit)."""
    state = tx(session)
    if not state.locked:
        await RoutingRepository(session).lock_routing()
        state.locked = True


async def loads(session: AsyncSession) -> dict[str, RepLoadRow]:
    state = tx(session)
    if state.loads is None:
        state.loads = await RoutingRepository(session).loads()
    return state.loads


async def rotation_rows(session: AsyncSession) -> list[RotationRow]:
    state = tx(session)
    if state.rotation is None:
        state.rotation = await RoutingRepository(session).rotation_rows()
    return state.rotation


def rotation_state(rows: Sequence[RotationRow]) -> dict[str, dict[str, int]]:
    state: dict[str, dict[str, int]] = {}
    for row in rows:
        state.setdefault(row.team_id, {})[row.rep_id] = row.current
    return state


async def account_book(session: AsyncSession, view: Mapping[str, Any]) -> AccountBook:
    """The accounts this lead could match (its domains, their parents, its company name), cached per transaction."""
    domains, names = lead_match_keys(view)
    keys = domains + [f"name:{n}" for n in names]
    cache = tx(session).accounts
    missing = [k for k in keys if k not in cache]
    if missing:
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
    return AccountBook.of(a for k in keys for a in cache[k])


def load_of(row: RepLoadRow | None, today: str) -> RepLoad:
    if row is None:
        return RepLoad()
    return RepLoad(open_leads=row.open_leads, assigned_today=row.assigned_today if row.day == today else 0)


async def adjust_load(session: AsyncSession, rep_id: str, *, open_delta: int, day: str | None) -> None:
    """A rep's open leads move by `open_delta`; with `day`, one more lead assigned on that local day."""
    cached = await loads(session)
    row = cached.get(rep_id)
    if row is None:
        row = RepLoadRow(rep_id=rep_id, open_leads=0, day="", assigned_today=0)
        session.add(row)
        cached[rep_id] = row  # unflushed rows are not in the identity map: the cache is how the next lead finds it
    row.open_leads = max(0, row.open_leads + open_delta)
    if day is not None:
        if row.day != day:
            row.day, row.assigned_today = day, 0
        row.assigned_today += 1


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
    for fraction, at in zip(
        policy.warn_at,
        warning_times(start, due, policy.warn_at, business_hours=policy.business_hours, hours=hours, tz=tz),
        strict=False,
    ):
        session.add(
            SlaTimer(lead_id=lead_id, assignment_id=assignment_id, kind="warning", fraction=fraction, due_at=at)
        )
    session.add(SlaTimer(lead_id=lead_id, assignment_id=assignment_id, kind="breach", due_at=due))
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
