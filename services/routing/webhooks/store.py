"""The webhook tables' repository: every query the webhook feature makes, on the caller's session.

It never commits: the entrypoint (a route's transaction, the sender's own short transactions, the consumer loop)
owns the transaction. Three facts live on the session for the length of one transaction: the enabled endpoints,
read once (a consumer batch writes many events), whether a delivery was queued (the sender wakes after the
commit instead of waiting for its next poll), and which deliveries were handed off: written already leased to the
running sender of this database, which takes them in memory after the commit (no claim, no poll).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import as_utc, json_column_loads, sqlite_time
from common.sqlprep import Many, Statement
from common.sqlprep_session import session_driver
from routing.store import WebhookAttempt, WebhookDelivery, WebhookEndpoint

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
DELIVERY_STATUSES = (PENDING, SUCCEEDED, FAILED)
_ENQUEUED_FLAG = "handoff_webhooks_enqueued"
_ENDPOINTS = "handoff_webhook_endpoints"  # session.info key: (transaction, enabled endpoints) read once
_HANDED_OFF = "handoff_webhooks_handed_off"  # session.info key: [HandedOff] written leased to this process's sender
_REVOKED = "handoff_webhooks_revoked"  # session.info key: (delivery ids, endpoint ids) whose hand-offs no longer hold
_ENDPOINTS_CHANGED = "handoff_webhook_endpoints_changed"  # session.info key: an endpoint was changed or added
# Databases (by engine) whose sender runs in this process and takes new deliveries in memory: the lease it wants.
_TAKERS: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


class Rider(Protocol):
    async def record_into(self, session: AsyncSession) -> None: ...


# Databases (by engine) whose sender's answered attempts ride in the next transaction that queues deliveries.
_RIDERS: weakref.WeakKeyDictionary[Engine, Rider] = weakref.WeakKeyDictionary()


_D = cast(Table, WebhookDelivery.__table__)
# A new delivery's row: what the caller gives (`NewDelivery`), then what every new delivery starts with.
_NEW_DELIVERY = ("id", "endpoint_id", "message_id", "event_type", "lead_id", "payload")
_DELIVERY_ROW = (
    *_NEW_DELIVERY,
    *("status", "next_attempt_at", "schedule_step", "attempt_count", "replays", "created_at"),
    *("lease_token", "lease_until"),
)
_INSERT_DELIVERIES = Many(
    [f"d_{name}" for name in _DELIVERY_ROW],
    insert(_D).values({name: bindparam(f"d_{name}", type_=_D.c[name].type) for name in _DELIVERY_ROW}),
)
_E = cast(Table, WebhookEndpoint.__table__)
# With what a hand-off's claim needs of each (address, format, secrets): the sender then reads nothing per batch.
_SUBSCRIBED = select(
    _E.c.id, _E.c.event_types, _E.c.url, _E.c.format, _E.c.secret, _E.c.previous_secret, _E.c.previous_secret_until
).where(_E.c.enabled.is_(True))
_SUBSCRIBED_AT_DRIVER = Statement(_SUBSCRIBED)
NewDelivery = tuple[str, str, str, str, str | None, str]  # id, endpoint id, message id, event type, lead id, body


async def inline_connection(session: AsyncSession) -> Connection | None:
    """The transaction's connection on the inline SQLite dialect (None elsewhere): its driver-level statements run
    synchronously, with no greenlet switch (`common.sqlprep_session`); a poll of one lead paid two for the webhooks."""
    connection, _dialect, raw = await session_driver(session)
    return None if raw is None else connection.sync_connection


class EndpointRow(NamedTuple):
    """What a claim needs of an enabled endpoint: read once per hand-off batch, or in the writing transaction."""

    endpoint_id: str
    url: str
    format: str
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None


def enqueued_in(session: AsyncSession) -> bool:
    """Whether the transaction just committed on this session queued a delivery (the sender's wake-up call)."""
    return bool(session.info.get(_ENQUEUED_FLAG))


class HandedOff(NamedTuple):
    """A delivery as its transaction wrote it, leased to the sender of this process, which sends this body from
    memory after the commit (no read back); a later change to it reaches the sender as a revocation (`revoked_in`)."""

    id: str
    endpoint_id: str
    message_id: str
    payload: str
    lease_token: str
    lease_until: datetime
    # The endpoint as the writing transaction read it (None: not read there, or changed later in it) and when
    # (time.monotonic()): on SQLite that read held the write lock, so no change committed between it and the commit.
    endpoint: EndpointRow | None = None
    read_at: float = 0.0


def handed_off_in(session: AsyncSession) -> list[HandedOff]:
    """The deliveries the transaction just committed on this session handed off."""
    return list(session.info.get(_HANDED_OFF, ()))


def revoked_in(session: AsyncSession) -> tuple[set[str], set[str]] | None:
    """(delivery ids, endpoint ids) the transaction just committed on this session changed under their hand-off
    (an erasure's redaction, a replay, a disabled endpoint): a sender drops those it still holds in memory."""
    return cast("tuple[set[str], set[str]] | None", session.info.get(_REVOKED))


def endpoints_changed_in(session: AsyncSession) -> bool:
    """Whether the transaction just committed on this session added or changed an endpoint (what a hand-off read in
    an earlier transaction knows of the endpoints no longer holds)."""
    return bool(session.info.get(_ENDPOINTS_CHANGED))


def take_handoffs(engine: Engine, lease_s: float, rider: Rider | None = None) -> None:
    """A sender runs on this database: new deliveries are written leased for `lease_s` and handed to it; with a
    `rider` (its recorder), a transaction that queues deliveries records the sender's answered attempts too."""
    _TAKERS[engine] = lease_s
    if rider is not None:
        _RIDERS[engine] = rider


def stop_handoffs(engine: Engine) -> None:
    _TAKERS.pop(engine, None)
    _RIDERS.pop(engine, None)


class WebhookStore:
    """Questions and changes about endpoints, deliveries and attempts, in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def mark_enqueued(self) -> None:
        self.session.info[_ENQUEUED_FLAG] = True

    def revoke(self, delivery_ids: Sequence[str] = (), endpoint_id: str | None = None) -> None:
        """These deliveries (or the endpoint's) changed: a body handed off in memory is not sent after this commit;
        the deliveries, their leases cleared, are claimable: the sender wakes to claim them."""
        deliveries, endpoints = self.session.info.setdefault(_REVOKED, (set(), set()))
        if delivery_ids:
            deliveries.update(delivery_ids)
            self.mark_enqueued()
        if endpoint_id is not None:
            endpoints.add(endpoint_id)

    def forget_endpoints(self) -> None:
        """Endpoints changed in this transaction: its own later events read them again, and what its earlier
        hand-offs (and those of earlier transactions still held by the sender) know of them is not used."""
        info = self.session.info
        info.pop(_ENDPOINTS, None)
        info[_ENDPOINTS_CHANGED] = True
        handed = info.get(_HANDED_OFF)
        if handed:
            info[_HANDED_OFF] = [row._replace(endpoint=None) for row in handed]

    async def flush(self) -> None:
        await self.session.flush()

    def add(self, row: WebhookEndpoint | WebhookDelivery | WebhookAttempt) -> None:
        self.session.add(row)

    # -- endpoints ----------------------------------------------------------------------------------------------

    async def endpoint(self, endpoint_id: str, *, for_update: bool = False) -> WebhookEndpoint | None:
        return await self.session.get(WebhookEndpoint, endpoint_id, with_for_update=for_update or None)

    async def endpoints(self) -> list[WebhookEndpoint]:
        query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        return list((await self.session.execute(query)).scalars())

    async def subscribed_endpoints(self) -> list[tuple[str, list[str]]]:
        """Enabled endpoints and their event types, read once per transaction; a rolled-back or new transaction
        reads them again."""
        session = self.session
        current = session.sync_session.get_transaction()
        cached = session.info.get(_ENDPOINTS)
        if cached is not None and current is not None and cached[0] is current:
            return list(cached[1])
        inline = await inline_connection(session)
        rows: Sequence[Sequence[Any]]
        if inline is not None:  # SQLite's text as the columns would read it: JSON event types, an aware time
            raw = _SUBSCRIBED_AT_DRIVER.fetch(inline)
            rows = [(*row[:6], sqlite_time(row[6]) if row[6] else None) for row in raw]
            endpoints = [(row[0], list(json_column_loads(row[1]) if row[1] else [])) for row in rows]
        else:  # Core on the connection (one greenlet hop, no ORM execution plumbing)
            rows = await session.run_sync(lambda sync: sync.connection().execute(_SUBSCRIBED).all())
            endpoints = [(row[0], list(row[1] or [])) for row in rows]
        # Taken after the read: a transaction begins at its first statement (autobegin), which this may be.
        current = session.sync_session.get_transaction()
        sendable = {row[0]: EndpointRow(row[0], *row[2:]) for row in rows}
        session.info[_ENDPOINTS] = (current, endpoints, sendable, time.monotonic())
        return endpoints

    def _read_endpoints(self) -> tuple[dict[str, EndpointRow], float]:
        """The enabled endpoints this transaction read (`subscribed_endpoints`) and when; empty if it read none."""
        cached = self.session.info.get(_ENDPOINTS)
        if cached is None or cached[0] is None or cached[0] is not self.session.sync_session.get_transaction():
            return {}, 0.0
        return cached[2], cached[3]

    async def fail_pending(self, endpoint_id: str, reason: str) -> int:
        """Fail the endpoint's pending deliveries (it was disabled); returns how many."""
        result = await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == PENDING)
            .values(
                status=FAILED,
                next_attempt_at=None,
                lease_token=None,
                lease_until=None,
                last_error=f"endpoint disabled ({reason})",
            )
            .execution_options(synchronize_session="fetch")
        )
        self.revoke(endpoint_id=endpoint_id)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- deliveries ---------------------------------------------------------------------------------------------

    async def insert_deliveries(self, rows: Sequence[NewDelivery], now: datetime, token: str) -> None:
        """Insert new deliveries, due `now`; when a sender of this database runs here, leased to it under `token`
        until the lease ends (a crash then leaves them claimable: at least once) and remembered for the hand-off."""
        bind = self.session.get_bind()
        lease_s = _TAKERS.get(bind) if isinstance(bind, Engine) else None
        lease: tuple[str | None, datetime | None] = (None, None)
        if lease_s is not None:
            until = as_utc(now) + timedelta(seconds=lease_s)  # the sender compares it with its aware clock
            lease = (token, until)
            endpoints, read_at = self._read_endpoints()
            self.session.info.setdefault(_HANDED_OFF, []).extend(
                HandedOff(row[0], row[1], row[2], row[5], token, until, endpoints.get(row[1]), read_at) for row in rows
            )
        # The table, not the ORM entity: one executemany of plain tuples at the driver (`sqlprep.Many`).
        full = [(*row, PENDING, now, 0, 0, 0, now, *lease) for row in rows]
        inline = await inline_connection(self.session)
        if inline is not None:
            _INSERT_DELIVERIES.run(inline, full)
        else:
            await self.session.run_sync(lambda sync: _INSERT_DELIVERIES.run(sync.connection(), full))

    async def record_answered(self) -> None:
        """The answered attempts this database's sender holds ride in this transaction (`recorder`), if it runs here."""
        bind = self.session.sync_session.bind  # a plain attribute (AsyncSession.get_bind() is a call per use)
        rider = _RIDERS.get(bind) if isinstance(bind, Engine) else None
        if rider is not None:
            await rider.record_into(self.session)

    async def delivery(self, delivery_id: str, *, for_update: bool = False) -> WebhookDelivery | None:
        return await self.session.get(WebhookDelivery, delivery_id, with_for_update=for_update or None)

    async def deliveries(self, endpoint_id: str, *, status: str | None, limit: int) -> list[WebhookDelivery]:
        """The endpoint's deliveries, newest first."""
        query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def attempts_of(self, delivery_ids: Sequence[str]) -> dict[str, list[WebhookAttempt]]:
        """Each delivery's attempts, in order."""
        attempts: dict[str, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
        if attempts:
            query = (
                select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts))).order_by(WebhookAttempt.id)
            )
            for attempt in (await self.session.execute(query)).scalars():
                attempts[attempt.delivery_id].append(attempt)
        return attempts

    async def payloads_of_lead(self, lead_id: str, *, event_type: str | None = None) -> list[tuple[str, str]]:
        """(delivery id, stored body) of every delivery about the lead, of one event type if given."""
        query = select(WebhookDelivery.id, WebhookDelivery.payload).where(WebhookDelivery.lead_id == lead_id)
        if event_type is not None:
            query = query.where(WebhookDelivery.event_type == event_type)
        return [(delivery_id, payload) for delivery_id, payload in (await self.session.execute(query)).all()]

    async def set_payload(self, delivery_id: str, payload: str) -> None:
        """A new body (redacted): its lease is cleared, so an attempt still holding the old body cannot settle it
        (the success record checks the token) and a claim sends the new one; a sender of this process holding the
        old body in memory drops it at the commit."""
        await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(payload=payload, lease_token=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )
        self.revoke([delivery_id])

    async def clear_response_bodies(self, delivery_ids: Sequence[str]) -> None:
        """Drop what receivers answered to these deliveries (some echo the body they were sent)."""
        if not delivery_ids:
            return
        await self.session.execute(
            update(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(delivery_ids)), WebhookAttempt.response_body.is_not(None))
            .values(response_body=None)
            .execution_options(synchronize_session=False)
        )

    async def restart_failed_since(self, endpoint_id: str, since: datetime, now: datetime) -> int:
        """Make the endpoint's failed deliveries created at or after `since` due now, in a new round; how many."""
        result = await self.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.status == FAILED,
                WebhookDelivery.created_at >= since,
            )
            .values(
                status=PENDING,
                next_attempt_at=now,
                schedule_step=0,
                replays=WebhookDelivery.replays + 1,
                lease_token=None,
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def purge_settled(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` settled deliveries created before `cutoff` (attempts go by cascade); how many."""
        oldest = (
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status != PENDING, WebhookDelivery.created_at < cutoff)
            .order_by(WebhookDelivery.created_at)
            .limit(limit)
        )
        result = await self.session.execute(
            delete(WebhookDelivery)
            .where(WebhookDelivery.id.in_(oldest.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def for_recording(
        self, delivery_ids: Sequence[str], endpoint_ids: Sequence[str]
    ) -> tuple[dict[str, WebhookDelivery], dict[str, WebhookEndpoint]]:
        """The deliveries and endpoints a batch of attempts changes, by id, locked for update (PostgreSQL)."""
        deliveries = select(WebhookDelivery).where(WebhookDelivery.id.in_(sorted(set(delivery_ids))))
        endpoints = select(WebhookEndpoint).where(WebhookEndpoint.id.in_(sorted(set(endpoint_ids))))
        # Locked in one order (endpoints by id, then deliveries by id) so two recorders never deadlock.
        found_endpoints = await self.session.execute(endpoints.order_by(WebhookEndpoint.id).with_for_update())
        found_deliveries = await self.session.execute(deliveries.order_by(WebhookDelivery.id).with_for_update())
        return (
            {row.id: row for row in found_deliveries.scalars()},
            {row.id: row for row in found_endpoints.scalars()},
        )
