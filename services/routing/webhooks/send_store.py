"""The sender's hot queries: claim, lease, a hand-off batch's endpoints, the success record; Core on the connection.

Statements are built once with bound parameters (SQLAlchemy's compiled cache then serves them), run on the
transaction's connection (no ORM session plumbing, no ORM rows) and cover a whole batch each: the bookkeeping a
delivery costs is a share of a few statements per batch, never a statement of its own. The rare failure path,
which reads and changes more (the retry schedule, the endpoint's health), stays on the ORM (`store`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    case,
    insert,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import Database
from common.sqlprep import Many
from routing.store import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from routing.webhooks.store import PENDING, SUCCEEDED, EndpointRow, inline_connection

_D = cast(Table, WebhookDelivery.__table__)
_E = cast(Table, WebhookEndpoint.__table__)
_A = cast(Table, WebhookAttempt.__table__)
_T = TypeVar("_T")

__all__ = ["SUCCESS_ROW", "ClaimRow", "EndpointRow", "SendStore"]


class ClaimRow(NamedTuple):
    """A delivery and what its endpoint gives a claim (address, format, secrets), read in one query."""

    id: str
    endpoint_id: str
    message_id: str
    payload: str
    lease_token: str | None
    lease_until: datetime | None
    url: str
    format: str
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None


_CLAIM_COLUMNS = (
    _D.c.id,
    _D.c.endpoint_id,
    _D.c.message_id,
    _D.c.payload,
    _D.c.lease_token,
    _D.c.lease_until,
    _E.c.url,
    _E.c.format,
    _E.c.secret,
    _E.c.previous_secret,
    _E.c.previous_secret_until,
)
_JOINED = _D.join(_E, _E.c.id == _D.c.endpoint_id)

# Due, unleased (or lease run out) deliveries of enabled endpoints, oldest due first, but the endpoints at their
# limit; the partial index on next_attempt_at (pending rows) serves the order.
_DUE = (
    select(*_CLAIM_COLUMNS)
    .select_from(_JOINED)
    .where(
        _D.c.status == PENDING,
        _D.c.next_attempt_at <= bindparam("now"),
        or_(_D.c.lease_until.is_(None), _D.c.lease_until <= bindparam("now")),
        _E.c.enabled.is_(True),
        _D.c.endpoint_id.not_in(bindparam("skip", expanding=True)),
    )
    .order_by(_D.c.next_attempt_at)
    .limit(bindparam("limit"))
)
_DUE_SKIP_LOCKED = _DUE.with_for_update(skip_locked=True, of=_D)  # PostgreSQL: other senders skip these rows


# The enabled endpoints of a hand-off batch (a disabled one is missing: its deliveries are not sent).
_ENABLED_ENDPOINTS = select(
    _E.c.id, _E.c.url, _E.c.format, _E.c.secret, _E.c.previous_secret, _E.c.previous_secret_until
).where(_E.c.id.in_(bindparam("ids", expanding=True)), _E.c.enabled.is_(True))

# One row per claimed delivery (an executemany at the driver: no expanding IN of up to a batch of ids to render).
_LEASE = Many(
    ("l_token", "l_until", "l_id"),
    update(_D)
    .where(_D.c.id == bindparam("l_id"))
    .values(lease_token=bindparam("l_token"), lease_until=bindparam("l_until", type_=_D.c.lease_until.type)),
)

# One row per attempt (executemany, at the driver: `sqlprep.Many`, so every parameter is a row's value and the
# constants are SQL): the delivery counts the attempt and, while it still holds the attempt's lease token, settles.
# A row changed under the attempt (an erasure's redaction or a replay clears the lease, a claim after the lease ran
# out takes another) keeps its state: the attempt is counted and recorded, and the row goes out again.
_OURS = _D.c.lease_token == bindparam("b_token")


def _if_ours(value: Any, column: Any) -> Any:
    return case((_OURS, value), else_=column)


_SETTLE = (
    update(_D)
    .where(_D.c.id == bindparam("b_id"))
    .values(
        status=_if_ours(literal_column(f"'{SUCCEEDED}'"), _D.c.status),
        delivered_at=_if_ours(bindparam("b_now", type_=_D.c.delivered_at.type), _D.c.delivered_at),
        next_attempt_at=_if_ours(null(), _D.c.next_attempt_at),
        lease_token=_if_ours(null(), _D.c.lease_token),
        lease_until=_if_ours(null(), _D.c.lease_until),
        attempt_count=_D.c.attempt_count + literal_column("1"),
        last_attempt_at=bindparam("b_started", type_=_D.c.last_attempt_at.type),
        last_status_code=bindparam("b_status", type_=_D.c.last_status_code.type),
        last_error=null(),
    )
)
# ...and the attempt is written under the number just counted, read from the row in the same statement (a
# delivery gone meanwhile, its endpoint deleted, writes no attempt instead of failing the batch).
_ATTEMPT_COLUMNS = ("signed_at", "result", "latency_ms", "error", "response_body")
_RECORD_ATTEMPT = insert(_A).from_select(
    ["delivery_id", "attempt_no", "started_at", "status_code", *_ATTEMPT_COLUMNS, "next_attempt_at"],
    select(
        _D.c.id,
        _D.c.attempt_count,
        bindparam("b_started", type_=_A.c.started_at.type),
        bindparam("b_status", type_=_A.c.status_code.type),
        *(bindparam(f"a_{name}", type_=_A.c[name].type) for name in _ATTEMPT_COLUMNS),
        null(),  # a success schedules nothing
    ).where(_D.c.id == bindparam("b_id")),
)
# A success's row: (delivery id, lease token, recorded at, started at, status code, signed at, result, latency ms,
# error, body).
SUCCESS_ROW = ("b_id", "b_token", "b_now", "b_started", "b_status", *(f"a_{name}" for name in _ATTEMPT_COLUMNS))
_RECORD_SUCCESSES = Many(SUCCESS_ROW, _SETTLE, _RECORD_ATTEMPT)
# One row per endpoint (an executemany at the driver, no expanding IN to render per batch).
_HEALTHY = Many(
    ("h_now", "h_id"),
    update(_E)
    .where(_E.c.id == bindparam("h_id"))
    .values(failing_since=null(), last_success_at=bindparam("h_now", type_=_E.c.last_success_at.type)),
)


async def any_due(db: Database, now: datetime, skip_endpoints: Sequence[str]) -> bool:
    """Whether a claim would find a due delivery, asked in a read: on SQLite's WAL it takes no turn of the writer, so
    the sender's periodic look (every poll interval, nearly always empty while hand-offs carry the traffic) costs
    routing's polls no wait; only a look that finds one claims in a write transaction, which asks again."""
    async with db.read() as session:
        return bool(await SendStore(session).due(now, 1, skip_locked=False, skip_endpoints=skip_endpoints))


class SendStore:
    """The sender's queries, on the connection of the caller's transaction (one greenlet hop per method: the
    statements run synchronously on the connection, as every driver here lets them)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _run(self, work: Callable[[Connection], _T]) -> _T:
        return await self.session.run_sync(lambda sync: work(sync.connection()))

    async def due(
        self, now: datetime, limit: int, *, skip_locked: bool, skip_endpoints: Sequence[str] = ()
    ) -> list[ClaimRow]:
        """Up to `limit` due deliveries nobody holds, of enabled endpoints but `skip_endpoints`, oldest first."""
        query = _DUE_SKIP_LOCKED if skip_locked else _DUE
        params = {"now": now, "limit": limit, "skip": list(skip_endpoints)}
        return await self._run(lambda conn: [ClaimRow(*row) for row in conn.execute(query, params).all()])

    async def enabled_endpoints(self, endpoint_ids: Iterable[str]) -> dict[str, EndpointRow]:
        """Those of `endpoint_ids` that are enabled, by id: what a hand-off batch's claims need of them."""
        ids = list(endpoint_ids)
        if not ids:
            return {}

        def read(conn: Connection) -> dict[str, EndpointRow]:
            return {row[0]: EndpointRow(*row) for row in conn.execute(_ENABLED_ENDPOINTS, {"ids": ids}).all()}

        return await self._run(read)

    async def lease(self, delivery_ids: Sequence[str], token: str, lease_until: datetime) -> None:
        """Lease the claimed deliveries under one token, in one statement."""
        if delivery_ids:
            rows = [(token, lease_until, delivery_id) for delivery_id in delivery_ids]
            await self._run(lambda conn: _LEASE.run(conn, rows))

    async def record_successes(
        self, rows: Sequence[tuple[Any, ...]], endpoint_ids: Iterable[str], now: datetime
    ) -> None:
        """Settle delivered deliveries, write their attempts and give their endpoints a clean bill of health: three
        statements for the batch. Each row is a success in `SUCCESS_ROW` order (its recorded-at is `now`); a
        delivery appears at most once in a batch (its attempt number is counted in the statement)."""
        if not rows:
            return
        ordered = sorted(rows)  # by delivery id: one lock order for every recorder
        healthy = [(now, endpoint_id) for endpoint_id in sorted(set(endpoint_ids))]

        def record(conn: Connection) -> None:
            _RECORD_SUCCESSES.run(conn, ordered)
            _HEALTHY.run(conn, healthy)

        inline = await inline_connection(self.session)
        if inline is not None:
            record(inline)
        else:
            await self._run(record)
