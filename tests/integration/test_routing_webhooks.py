"""Webhooks to sales tools against real receivers on loopback, on SQLite and PostgreSQL.

Every captured delivery is checked with `standardwebhooks` (the reference implementation), never with the code
under test. The schedule is driven by an injected clock and the sender's one-step method; only the receiver's
own answers (500, a hang, 429, 410, redirects) are real time.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.fernet import Fernet
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import Column, Connection, Index, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import CreateIndex
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.crypto import SecretBox
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.egress import UnsafeUrl
from common.envelope import Event
from common.web import install_common
from routing.app import MIGRATIONS, create_app
from routing.handlers import Router
from routing.settings import RoutingSettings
from routing.store import AssignmentRow, Base, TimelineRow, WebhookAttempt, WebhookDelivery, WebhookEndpoint, outbox
from routing.usecases.shared import publish
from routing.webhooks import api as webhooks_api
from routing.webhooks.sender import WebhookSender
from routing.webhooks.service import (
    WebhookConflict,
    Webhooks,
    enqueue_deliveries,
    purge_settled_deliveries,
    reencrypt_secrets,
)
from routing.webhooks.signing import new_secret, webhook_body
from routing.webhooks.store import stop_handoffs, take_handoffs
from tests.support.stack import ADMIN, ADMIN_TOKEN, ROOT, wait_until_async

pytestmark = pytest.mark.integration

SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2


# -- a receiver on a real socket ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    hang_s: float = 0.0  # answer only after this long (the sender has given up by then)
    gate: threading.Event | None = None  # answer only once the test opens the gate (at most 30 s)


@dataclass(frozen=True)
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes

    def verify(self, secret: str) -> Any:
        return Webhook(secret).verify(self.body, self.headers)


# A receiver's own check of a body: None when it accepts it, else (status, answer), as the real service answers.
BodyCheck = Callable[[bytes], tuple[int, bytes] | None]


class Receiver:
    """Captures every request and answers from a script (then 200, or what its body check says)."""

    def __init__(self, check: BodyCheck | None = None) -> None:
        self.check = check
        self.captured: list[Captured] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/crm"

    def answer(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def requests(self) -> list[Captured]:
        with self._lock:
            return list(self.captured)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.captured.append(Captured(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    reply = receiver._script.pop(0) if receiver._script else Reply()
                refusal = receiver.check(body) if receiver.check and reply.status == 200 else None
                if refusal is not None:
                    reply = Reply(refusal[0], body=refusal[1])
                if reply.hang_s:
                    time.sleep(reply.hang_s)
                if reply.gate is not None:
                    reply.gate.wait(30)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the sender hung up (timed out) first

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler


class Clock:
    """The injected clock: time moves only when the test says so."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


# -- fixtures and helpers ----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    database = Database(database_url)
    yield database
    await database.dispose()


def _settings(**overrides: Any) -> RoutingSettings:
    values: dict[str, Any] = {
        "env": "test",
        "webhook_allow_loopback": True,
        "webhook_timeout_s": 1.0,
        "webhook_lease_s": 5,
        "webhook_retry_jitter": JITTER,
        "webhook_response_max_kib": 1,
    }
    values.update(overrides)
    return RoutingSettings(**values)


@pytest.fixture
async def senders() -> AsyncIterator[list[WebhookSender]]:
    made: list[WebhookSender] = []
    yield made
    for sender in made:
        await sender.close()


def _sender(
    made: list[WebhookSender], db: Database, settings: RoutingSettings, clock: Clock, **kw: Any
) -> WebhookSender:
    sender = WebhookSender(db, settings, clock=clock, rand=random.Random(7).random, **kw)
    made.append(sender)
    return sender


async def _register(db: Database, service: Webhooks, url: str, event_types: list[str] | None = None) -> tuple[str, str]:
    destination = await service.vet_url(url)
    async with db.transaction() as session:
        endpoint, secret = await service.create_endpoint(
            session, url=destination, event_types=event_types or ["*"], description="CRM"
        )
    return endpoint.id, secret


def _event(event_type: str = "lead.assigned", **data: Any) -> Event:
    lead_id = str(uuid.uuid4())
    return Event(
        type=event_type,
        source="/handoff/routing",
        subject=lead_id,
        data={"lead_id": lead_id, "rep": {"id": "ana", "name": "Ana Souza"}, **data},
    )


async def _enqueue(db: Database, clock: Clock, *events: Event) -> None:
    async with db.transaction() as session:
        await enqueue_deliveries(session, events, clock())


async def _delivery(db: Database) -> WebhookDelivery:
    """The oldest delivery."""
    async with db.read() as session:
        query = select(WebhookDelivery).order_by(WebhookDelivery.created_at).limit(1)
        delivery = (await session.execute(query)).scalars().first()
    assert delivery is not None
    return delivery


async def _endpoint(db: Database, endpoint_id: str) -> WebhookEndpoint:
    async with db.read() as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
    assert endpoint is not None
    return endpoint


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- the tests ---------------------------------------------------------------------------------------------


def _expression_indexes() -> dict[str, Index]:
    """The models' indexes on an expression: Alembic cannot compare them (SQLite's are not reflected at all)."""
    tables = Base.metadata.sorted_tables
    return {
        str(index.name): index
        for table in tables
        for index in table.indexes
        if any(not isinstance(part, Column) for part in index.expressions)
    }


def _index_definition(c: Connection, name: str) -> str:
    """An index's definition as the store keeps it (SQLite: its CREATE statement; PostgreSQL: pg_indexes')."""
    if c.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    return str(c.execute(text(query), {"name": name}).scalar_one())


def _expression_index_diff(c: Connection) -> list[tuple[str, str, str]]:
    """Each expression index compared by the store's own definition: the model's built under a probe name in a
    transaction that is rolled back, both definitions read back as the store normalizes them."""
    diff = []
    for name, index in _expression_indexes().items():
        probe = f"probe_{name}"
        created = str(CreateIndex(index).compile(dialect=c.dialect)).replace(name, probe, 1)
        c.exec_driver_sql(created)
        wanted = _index_definition(c, probe).replace(probe, name, 1)
        found = _index_definition(c, name)
        if found != wanted:
            diff.append((name, found, wanted))
    c.rollback()
    return diff


def _compare(c: Connection) -> list[Any]:
    skipped = set(_expression_indexes())

    def include(item: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
        return not (kind == "index" and name in skipped)

    with warnings.catch_warnings():
        # SQLite's reflection and Alembic skip an expression index with a warning: _expression_index_diff compares it.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
        context = MigrationContext.configure(c, opts={"compare_type": True, "include_object": include})
        return [*compare_metadata(context, Base.metadata), *_expression_index_diff(c)]


async def test_migrations_build_exactly_the_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(_compare)
    assert diff == []


async def test_the_store_refuses_a_second_current_assignment_for_a_lead(db: Database) -> None:
    """uq_assignments_lead (0019) keys a current assignment (lead, 0) and an ended one (lead, its id): any number of
    ended assignments, one current, and a lead's current assignment can end and another begin."""
    now = datetime.now(UTC)
    lead_id = str(uuid.uuid4())

    def row(**values: Any) -> AssignmentRow:
        base: dict[str, Any] = {"lead_id": lead_id, "outcome": "assigned", "ruleset_version": "v1", "reason": "t"}
        return AssignmentRow(**base, decision={}, assigned_at=now, **values)

    async with db.transaction() as session:
        session.add_all([row(ended_at=now, end_reason="breach"), row(ended_at=now, end_reason="breach"), row()])
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            session.add(row())
    async with db.transaction() as session:
        await session.execute(
            update(AssignmentRow)
            .where(AssignmentRow.lead_id == lead_id, AssignmentRow.ended_at.is_(None))
            .values(ended_at=now, end_reason="reassigned")
        )
        session.add(row())
    async with db.read() as session:
        kept = (await session.execute(select(AssignmentRow.ended_at).where(AssignmentRow.lead_id == lead_id))).all()
    assert sorted(ended is None for (ended,) in kept) == [False, False, False, True]


async def test_every_delivery_verifies_with_the_reference_implementation(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings()
    service = Webhooks(settings, clock=clock)
    _, secret = await _register(db, service, receiver.url)
    await _register(db, service, receiver.url.replace("/crm", "/slack"), ["lead.sla_breached"])
    events = [
        _event("lead.assigned", note="Zoë Ñúñez, 東京"),
        _event("lead.sla_breached", late_ms=1200),
        _event("lead.touched"),
    ]
    await _enqueue(db, clock, *events)

    assert await _sender(senders, db, settings, clock).run_once() == 4  # three for CRM, one for Slack
    captured = receiver.requests()
    assert sorted(c.path for c in captured) == ["/hooks/crm"] * 3 + ["/hooks/slack"]
    by_id = {e.id: e for e in events}
    for request in (c for c in captured if c.path == "/hooks/crm"):
        payload = request.verify(secret)
        event = by_id[request.headers["webhook-id"]]  # the event id is the stable message id
        assert payload == {
            "type": event.type,
            "timestamp": event.time.isoformat().replace("+00:00", "Z"),
            "data": dict(event.data),
        }
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("Handoff-Webhooks/")
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(request.body.replace(b'"data":{', b'"data":{"x":1,'), request.headers)
        with pytest.raises(WebhookVerificationError):
            request.verify(f"whsec_{'A' * 43}=")  # wrong secret
    slack = next(c for c in captured if c.path == "/hooks/slack")
    assert slack.headers["webhook-id"] == events[1].id
    with pytest.raises(WebhookVerificationError):
        slack.verify(secret)  # each endpoint has its own secret

    # A sender whose clock is 10 minutes behind produces deliveries receivers reject as stale.
    await _enqueue(db, clock, _event())
    late = _sender(senders, db, settings, clock, wall_clock=lambda: datetime.now(UTC) - timedelta(minutes=10))
    assert await late.run_once() == 1
    with pytest.raises(WebhookVerificationError, match="too old"):
        receiver.requests()[-1].verify(secret)


async def test_500_timeout_429_then_200_lands_on_schedule_with_one_success(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings()
    endpoint_id, secret = await _register(db, Webhooks(settings, clock=clock), receiver.url)
    receiver.answer(
        Reply(500, body=b"boom"),
        Reply(200, hang_s=2.5),  # answers after the 1 s timeout: a failure
        Reply(429, headers={"Retry-After": "7200"}),  # later than the 30 min step: it wins
        Reply(200, body=b"thanks"),
    )
    event = _event()
    await _enqueue(db, clock, event)
    sender = _sender(senders, db, settings, clock)
    successes_before = _metric("handoff_webhook_attempts_total", result="success")
    timeouts_before = _metric("handoff_webhook_attempts_total", result="timeout")

    # (scheduled delay, status code) after each failed attempt
    expected = [(5, 500), (300, None), (7200, 429)]
    for step, (base, status) in enumerate(expected, start=1):
        attempted_at = clock()
        assert await sender.run_once() == 1
        delivery = await _delivery(db)
        assert delivery.status == "pending" and delivery.attempt_count == step
        assert delivery.last_status_code == status
        due = _aware(delivery.next_attempt_at)
        assert due is not None
        if step == 3:
            assert due == attempted_at + timedelta(seconds=7200)  # Retry-After, exactly
        else:
            assert attempted_at + timedelta(seconds=base * (1 - JITTER)) <= due
            assert due <= attempted_at + timedelta(seconds=base * (1 + JITTER))
        # Nothing goes out a second early, and the attempt goes out once due.
        clock.now = due - timedelta(seconds=1)
        assert await sender.run_once() == 0
        assert len(receiver.requests()) == step
        clock.now = due
    assert await sender.run_once() == 1

    delivery = await _delivery(db)
    assert delivery.status == "succeeded" and delivery.next_attempt_at is None
    async with db.read() as session:
        logs = await Webhooks(settings).deliveries(session, endpoint_id)
    attempts = logs[0].attempts
    assert [(a.attempt_no, a.result, a.status_code) for a in attempts] == [
        (1, "http_error", 500),
        (2, "timeout", None),
        (3, "http_error", 429),
        (4, "success", 200),
    ]
    assert [a.response_body for a in attempts] == ["boom", None, "ok", "thanks"]
    assert sum(a.result == "success" for a in attempts) == 1
    assert attempts[1].latency_ms >= 950
    requests = receiver.requests()
    assert len(requests) == 4
    assert {r.headers["webhook-id"] for r in requests} == {event.id}
    for request in requests:
        request.verify(secret)
    assert _metric("handoff_webhook_attempts_total", result="success") == successes_before + 1
    assert _metric("handoff_webhook_attempts_total", result="timeout") == timeouts_before + 1


async def test_spent_retries_leave_a_visible_failed_delivery(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings()
    service = Webhooks(settings, clock=clock)
    endpoint_id, _ = await _register(db, service, receiver.url)
    receiver.answer(*[Reply(503)] * 8)
    await _enqueue(db, clock, _event())
    sender = _sender(senders, db, settings, clock)
    failures_before = _metric("handoff_webhook_failures_total")
    for _ in range(8):
        assert await sender.run_once() == 1
        due = _aware((await _delivery(db)).next_attempt_at)
        if due is not None:
            clock.now = due
    delivery = await _delivery(db)
    assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == ("failed", 8, None)
    clock.advance(days=3)
    assert await sender.run_once() == 0
    assert len(receiver.requests()) == 8
    assert _metric("handoff_webhook_failures_total") == failures_before + 1
    async with db.read() as session:
        failed = await service.deliveries(session, endpoint_id, status="failed")
        pending = await service.deliveries(session, endpoint_id, status="pending")
    assert [len(entry.attempts) for entry in failed] == [8] and pending == []
    # ~27.6 h of schedule, spread by the jitter
    first, last = _aware(failed[0].attempts[0].started_at), _aware(failed[0].attempts[-1].started_at)
    assert first is not None and last is not None
    assert timedelta(seconds=sum(SCHEDULE) * 0.8) <= last - first <= timedelta(seconds=sum(SCHEDULE) * 1.2)


async def test_redirects_are_failures_and_response_bodies_are_capped(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings()
    endpoint_id, _ = await _register(db, Webhooks(settings, clock=clock), receiver.url)
    receiver.answer(
        Reply(302, headers={"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}),
        Reply(200, body=b"x" * 200_000),
    )
    await _enqueue(db, clock, _event())
    sender = _sender(senders, db, settings, clock)
    assert await sender.run_once() == 1
    assert [r.path for r in receiver.requests()] == ["/hooks/crm"]  # the redirect was not followed
    clock.now = _aware((await _delivery(db)).next_attempt_at)  # type: ignore[assignment]
    assert await sender.run_once() == 1
    async with db.read() as session:
        [entry] = await Webhooks(settings).deliveries(session, endpoint_id)
    assert [(a.result, a.status_code) for a in entry.attempts] == [("http_error", 302), ("success", 200)]
    assert entry.attempts[1].response_body == "x" * 1024
    assert entry.delivery.status == "succeeded"


async def test_410_gone_disables_the_endpoint_until_it_is_enabled_again(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings(webhook_concurrency=1)
    service = Webhooks(settings, clock=clock)
    endpoint_id, _ = await _register(db, service, receiver.url)
    receiver.answer(Reply(410))
    first, second = _event(), _event()
    await _enqueue(db, clock, first)
    clock.advance(seconds=1)
    await _enqueue(db, clock, second)
    sender = _sender(senders, db, settings, clock)
    assert await sender.run_once(limit=1) == 1

    endpoint = await _endpoint(db, endpoint_id)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "gone")
    async with db.read() as session:
        logs = await service.deliveries(session, endpoint_id)
    assert {entry.delivery.message_id: entry.delivery.status for entry in logs} == {
        first.id: "failed",
        second.id: "failed",  # never sent: the endpoint said it is gone
    }
    await _enqueue(db, clock, _event())  # new events skip a disabled endpoint
    clock.advance(hours=1)
    assert await sender.run_once() == 0
    assert len(receiver.requests()) == 1
    async with db.transaction() as session:
        with pytest.raises(WebhookConflict):
            await service.replay(session, endpoint_id, logs[0].delivery.id)

    async with db.transaction() as session:
        await service.update_endpoint(session, endpoint_id, enabled=True)
    async with db.transaction() as session:
        assert await service.replay_failed_since(session, endpoint_id, clock.now - timedelta(days=1)) == 2
    assert await sender.run_once() == 2
    assert sorted(r.headers["webhook-id"] for r in receiver.requests()[1:]) == sorted([first.id, second.id])
    assert (await _endpoint(db, endpoint_id)).enabled


async def test_an_endpoint_failing_for_five_days_straight_is_disabled(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings(webhook_retry_schedule_s=(60,))
    start = clock()
    endpoint_id, _ = await _register(db, Webhooks(settings, clock=clock), receiver.url)
    sender = _sender(senders, db, settings, clock)

    async def a_day_of_traffic(status: int) -> None:
        receiver.answer(Reply(status))
        await _enqueue(db, clock, _event())
        assert await sender.run_once() == 1
        if status >= 300:
            receiver.answer(Reply(status))
            clock.advance(seconds=60 * (1 + JITTER))
            assert await sender.run_once() == 1

    # Failing for three days, one success, then failing again: the clock restarts at the first new failure.
    for day in range(3):
        clock.now = start + timedelta(days=day)
        await a_day_of_traffic(500)
    clock.now = start + timedelta(days=3)
    await a_day_of_traffic(200)
    assert (await _endpoint(db, endpoint_id)).failing_since is None
    for day in range(4, 9):
        clock.now = start + timedelta(days=day, hours=1)
        await a_day_of_traffic(500)
        assert (await _endpoint(db, endpoint_id)).enabled, f"disabled too early, on day {day}"
    clock.now = start + timedelta(days=9, hours=2)
    receiver.answer(Reply(500))
    await _enqueue(db, clock, _event())
    assert await sender.run_once() == 1
    endpoint = await _endpoint(db, endpoint_id)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "failing")
    assert _aware(endpoint.failing_since) == start + timedelta(days=4, hours=1)
    assert (await _delivery(db)).status == "failed"  # nothing stays pending for a disabled endpoint
    clock.advance(days=1)
    assert await sender.run_once() == 0


async def test_sigkilled_sender_loses_no_delivery(
    db: Database, database_url: str, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    settings = _settings(webhook_timeout_s=30, webhook_lease_s=31)
    clock = Clock()
    _, secret = await _register(db, Webhooks(settings, clock=clock), receiver.url)
    receiver.answer(Reply(200, hang_s=20))  # the first attempt is in flight when the process dies
    event = _event()
    await _enqueue(db, clock, event)
    script = (
        "import asyncio\n"
        "from common.db import Database\n"
        "from routing.settings import RoutingSettings\n"
        "from routing.webhooks.sender import WebhookSender\n"
        "async def main():\n"
        f"    db = Database({database_url!r})\n"
        "    settings = RoutingSettings(env='test', webhook_allow_loopback=True, webhook_timeout_s=30,"
        " webhook_lease_s=31, log_format='console')\n"
        "    await WebhookSender(db, settings).run()\n"
        "asyncio.run(main())\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "services")}
    )
    try:
        await wait_until_async(lambda: receiver.requests(), timeout=30, what="the doomed attempt")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL

    delivery = await _delivery(db)
    assert delivery.status == "pending" and delivery.lease_token is not None and delivery.attempt_count == 0
    rescuer = _sender(senders, db, settings, Clock(datetime.now(UTC)))
    assert await rescuer.run_once() == 0  # still leased to the dead sender
    rescuer = _sender(senders, db, settings, Clock(datetime.now(UTC) + timedelta(seconds=32)))
    assert await rescuer.run_once() == 1
    requests = receiver.requests()
    assert [r.headers["webhook-id"] for r in requests] == [event.id, event.id]
    requests[1].verify(secret)
    delivery = await _delivery(db)
    assert delivery.status == "succeeded" and delivery.attempt_count == 1  # the killed attempt left no record


async def test_a_running_sender_takes_new_deliveries_in_memory_and_nobody_else_claims_them(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    # A long poll interval: only the hand-off after the commit can deliver this quickly.
    settings = _settings(webhook_poll_interval_s=3600)
    _, secret = await _register(db, Webhooks(settings), receiver.url)
    running = _sender(senders, db, settings, Clock(datetime.now(UTC)))
    task = asyncio.create_task(running.run())
    try:
        await asyncio.sleep(0)  # the task starts: from here on it takes what this database's commits hand off
        event = _event()
        await _enqueue(db, Clock(datetime.now(UTC)), event)
        # Written leased to the running sender: another sender's claim query does not take it.
        assert await _sender(senders, db, settings, Clock(datetime.now(UTC))).run_once() == 0

        async def settled() -> bool:
            return (await _delivery(db)).status == "succeeded"

        await wait_until_async(settled, timeout=10, what="the handed-off delivery")
    finally:
        await running.stop()
        await task
    [request] = receiver.requests()
    assert request.headers["webhook-id"] == event.id
    request.verify(secret)
    delivery = await _delivery(db)
    assert (delivery.attempt_count, delivery.lease_token) == (1, None)


async def test_deliveries_handed_to_a_sender_that_died_are_claimed_once_their_lease_ends(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings()
    await _register(db, Webhooks(settings, clock=clock), receiver.url)
    take_handoffs(db.engine.sync_engine, 30)  # a sender ran here and died before taking what it was handed
    try:
        event = _event()
        await _enqueue(db, clock, event)
    finally:
        stop_handoffs(db.engine.sync_engine)
    delivery = await _delivery(db)
    assert delivery.lease_token is not None and _aware(delivery.lease_until) == clock.now + timedelta(seconds=30)
    rescuer = _sender(senders, db, settings, clock)
    assert await rescuer.run_once() == 0  # still leased
    clock.advance(seconds=31)
    assert await rescuer.run_once() == 1
    assert [r.headers["webhook-id"] for r in receiver.requests()] == [event.id]
    assert (await _delivery(db)).status == "succeeded"


async def test_a_slow_endpoint_holds_its_own_slots_and_never_every_slot(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    slow_receiver = Receiver()
    gate = threading.Event()
    try:
        settings = _settings(
            webhook_concurrency=4,
            webhook_endpoint_concurrency=2,
            webhook_timeout_s=20,
            webhook_lease_s=60,
            webhook_poll_interval_s=0.05,
        )
        service = Webhooks(settings)
        await _register(db, service, slow_receiver.url, ["lead.assigned"])
        await _register(db, service, receiver.url, ["lead.touched"])
        slow_receiver.answer(*(Reply(gate=gate) for _ in range(4)))
        clock = Clock(datetime.now(UTC))
        await _enqueue(db, clock, *(_event("lead.assigned") for _ in range(4)))  # first in line, all four
        clock.advance(seconds=1)
        touched = _event("lead.touched")
        await _enqueue(db, clock, touched)
        sender = _sender(senders, db, settings, clock)
        task = asyncio.create_task(sender.run())
        try:
            # The slow receiver answers nothing until the gate opens; the other endpoint is served meanwhile.
            await wait_until_async(lambda: receiver.requests(), timeout=10, what="the fast endpoint's delivery")
            assert [r.headers["webhook-id"] for r in receiver.requests()] == [touched.id]
            assert len(slow_receiver.requests()) == 2  # its two slots, no more
            gate.set()
            await wait_until_async(lambda: len(slow_receiver.requests()) == 4, timeout=10, what="the slow four")
        finally:
            gate.set()
            await sender.stop()
            await task
    finally:
        slow_receiver.stop()


async def test_unsafe_destinations_are_refused_at_registration_and_at_send_time(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock = Clock()
    strict = _settings(webhook_allow_loopback=False)
    answers = {"crm.example.com": ["93.184.216.34"], "rebind.example.com": ["93.184.216.34"]}

    async def resolve(host: str, _port: int) -> list[str]:
        if host not in answers:
            raise OSError("unknown host")
        return answers[host]

    service = Webhooks(strict, clock=clock, resolver=resolve)
    for url in (
        receiver.url,
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.8/hook",
        "ftp://crm.example.com/hook",
    ):
        with pytest.raises(UnsafeUrl):
            await Webhooks(strict, clock=clock).vet_url(url)
    assert (await service.vet_url("https://crm.example.com/hook")).host == "crm.example.com"

    # Registered while the name pointed at a public address; by send time it points at this machine.
    endpoint_id, secret = await _register(db, service, f"http://rebind.example.com:{receiver.port}/hook")
    answers["rebind.example.com"] = ["127.0.0.1"]
    await _enqueue(db, clock, _event())
    assert await _sender(senders, db, strict, clock, resolver=resolve).run_once() == 1
    async with db.read() as session:
        [entry] = await service.deliveries(session, endpoint_id)
    assert entry.attempts[0].result == "refused"
    assert "loopback" in (entry.attempts[0].error or "")
    assert receiver.requests() == []

    # The same sender with loopback allowed reaches it, through the address it vetted (the name is not in DNS).
    clock.now = _aware(entry.delivery.next_attempt_at)  # type: ignore[assignment]
    assert await _sender(senders, db, _settings(), clock, resolver=resolve).run_once() == 1
    [request] = receiver.requests()
    assert request.headers["host"] == f"rebind.example.com:{receiver.port}"
    request.verify(secret)


async def test_rotation_sends_both_signatures_during_the_overlap_only(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings(webhook_secret_overlap_hours=24)
    service = Webhooks(settings, clock=clock)
    endpoint_id, old = await _register(db, service, receiver.url)
    async with db.transaction() as session:
        _, new = await service.rotate_secret(session, endpoint_id)
    assert new != old and new.startswith("whsec_")
    sender = _sender(senders, db, settings, clock)

    await _enqueue(db, clock, _event())
    await sender.run_once()
    request = receiver.requests()[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    request.verify(new)
    request.verify(old)

    clock.advance(hours=24, seconds=1)
    await _enqueue(db, clock, _event())
    await sender.run_once()
    request = receiver.requests()[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    request.verify(new)
    with pytest.raises(WebhookVerificationError):
        request.verify(old)


async def test_signing_secrets_are_encrypted_at_rest_and_sign_after_a_key_rotation(
    db: Database, receiver: Receiver, senders: list[WebhookSender], database_url: str
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    clock = Clock()
    service = Webhooks(_settings(secret_key=old_key, webhook_secret_overlap_hours=24), clock=clock)
    endpoint_id, first = await _register(db, service, receiver.url, ["lead.assigned"])
    async with db.transaction() as session:
        _, current = await service.rotate_secret(session, endpoint_id)
    # An endpoint an older version stored, its secret in clear: still signs, and is encrypted by the rotation.
    legacy_id, _ = await _register(db, service, receiver.url + "/legacy", ["lead.assigned"])
    legacy_secret = new_secret()
    async with db.transaction() as session:
        legacy_row = update(WebhookEndpoint).where(WebhookEndpoint.id == legacy_id)
        await session.execute(legacy_row.values(secret=legacy_secret))

    stored = await _endpoint(db, endpoint_id)
    assert stored.secret.startswith("enc:v1:") and (stored.previous_secret or "").startswith("enc:v1:")
    assert current not in stored.secret and first not in (stored.previous_secret or "")
    if database_url.startswith("sqlite"):
        path = Path(make_url(database_url).database or "")
        raw = b"".join(f.read_bytes() for f in path.parent.glob(path.name + "*"))
        assert current.encode() not in raw and first.encode() not in raw

    # HANDOFF_SECRET_KEY="new,old", then rotate-secrets: everything is under the new key, clear rows included.
    async with db.transaction() as session:
        assert await reencrypt_secrets(session, _settings(secret_key=f"{new_key},{old_key}").secret_box()) == 3
    new_only = SecretBox([new_key])
    rotated, legacy = await _endpoint(db, endpoint_id), await _endpoint(db, legacy_id)
    assert new_only.reveal(rotated.secret) == current and new_only.reveal(rotated.previous_secret or "") == first
    assert legacy.secret.startswith("enc:v1:") and new_only.reveal(legacy.secret) == legacy_secret

    # With the old key dropped, deliveries are still signed with the right secrets.
    sender = _sender(senders, db, _settings(secret_key=new_key), clock)
    await _enqueue(db, clock, _event())
    await sender.run_once()
    by_path = {r.path: r for r in receiver.requests()}
    by_path["/hooks/crm"].verify(current)
    by_path["/hooks/crm"].verify(first)
    by_path["/hooks/crm/legacy"].verify(legacy_secret)


async def test_replays_keep_the_webhook_id(db: Database, receiver: Receiver, senders: list[WebhookSender]) -> None:
    clock, settings = Clock(), _settings(webhook_retry_schedule_s=())
    service = Webhooks(settings, clock=clock)
    endpoint_id, secret = await _register(db, service, receiver.url)
    sender = _sender(senders, db, settings, clock)
    events = []
    for _ in range(3):  # three deliveries an hour apart, each failing its only attempt
        receiver.answer(Reply(500))
        events.append(_event())
        await _enqueue(db, clock, events[-1])
        assert await sender.run_once() == 1
        clock.advance(hours=1)
    async with db.read() as session:
        failed = {e.delivery.message_id: e.delivery.id for e in await service.deliveries(session, endpoint_id)}
    assert len(failed) == 3

    async with db.transaction() as session:
        await service.replay(session, endpoint_id, failed[events[0].id])
    assert await sender.run_once() == 1
    assert receiver.requests()[-1].headers["webhook-id"] == events[0].id
    receiver.requests()[-1].verify(secret)

    async with db.transaction() as session:
        replayed = await service.replay_failed_since(session, endpoint_id, clock.now - timedelta(hours=2, minutes=1))
    assert replayed == 2
    assert await sender.run_once() == 2
    assert sorted(r.headers["webhook-id"] for r in receiver.requests()[-2:]) == sorted([events[1].id, events[2].id])
    async with db.read() as session:
        logs = await service.deliveries(session, endpoint_id)
    assert {e.delivery.status for e in logs} == {"succeeded"}
    assert all(e.delivery.replays == 1 and len(e.attempts) == 2 for e in logs)


async def test_an_erased_lead_leaves_no_personal_data_in_stored_or_later_sent_bodies(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings(webhook_retry_schedule_s=())
    service = Webhooks(settings, clock=clock)
    _endpoint_id, secret = await _register(db, service, receiver.url)
    sender = _sender(senders, db, settings, clock)
    person = {"email": "erin.private@example.org", "first_name": "Erin", "phone": "+4915112345670"}
    delivered, pending, other = _event(lead=person), _event(lead=person), _event(lead={"email": "keep@example.org"})
    await _enqueue(db, clock, delivered)
    assert await sender.run_once() == 1
    receiver.answer(Reply(503))  # this one fails: it will go out again after the erasure, as a replay
    await _enqueue(db, clock, pending)
    assert await sender.run_once() == 1
    await _enqueue(db, clock, other)
    assert await sender.run_once() == 1

    router = Router(settings, clock=clock)
    for lead_id in (delivered.subject, pending.subject):
        erased = Event(type="lead.erased", source="/tests", subject=lead_id, data={"lead_id": lead_id})
        async with db.transaction() as session:
            await router.on_erased(session, erased)

    async with db.read() as session:
        bodies = dict((await session.execute(select(WebhookDelivery.message_id, WebhookDelivery.payload))).all())
    for event in (delivered, pending):
        assert not any(value in bodies[event.id] for value in person.values())
        assert orjson.loads(bodies[event.id])["data"]["lead_id"] == event.subject  # the decision stays
    assert "keep@example.org" in bodies[other.id]  # another lead's body is left alone

    async with db.transaction() as session:  # a replay of the erased lead's delivery sends the redacted body
        await service.replay(session, _endpoint_id, await _delivery_id(db, pending.id))
    assert await sender.run_once() == 1
    last = receiver.requests()[-1]
    assert last.headers["webhook-id"] == pending.id
    assert last.verify(secret)["data"]["lead"] == {}


async def test_erasure_clears_echoed_response_bodies_and_the_reps_reasons(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings(webhook_retry_schedule_s=())
    service = Webhooks(settings, clock=clock)
    await _register(db, service, receiver.url)
    sender = _sender(senders, db, settings, clock)
    person = {"email": "erin.private@example.org", "first_name": "Erin"}
    words = "Erin says her brother handles purchasing"
    assigned = _event(lead=person, reason="Rule west: the team west, round robin")
    rejected = _event("lead.rejected", action="reject", rep_id="r1", reason=words)
    rejected = Event(type=rejected.type, source="/tests", subject=assigned.subject, data=rejected.data)
    other = _event("lead.disqualified", action="disqualify", reason="another lead's reason")
    for event in (assigned, rejected, other):
        await _enqueue(db, clock, event)
        receiver.answer(Reply(200, body=event.value()))  # a receiver that echoes what it was sent
        assert await sender.run_once() == 1
    async with db.transaction() as session:
        session.add(TimelineRow(lead_id=assigned.subject, at=clock.now, kind="rejected", detail=dict(rejected.data)))

    erased = Event(type="lead.erased", source="/tests", subject=assigned.subject, data={"lead_id": assigned.subject})
    async with db.transaction() as session:
        await Router(settings, clock=clock).on_erased(session, erased)

    async with db.read() as session:
        attempts = dict(
            (
                await session.execute(
                    select(WebhookDelivery.message_id, WebhookAttempt.response_body).join(
                        WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id
                    )
                )
            ).all()
        )
        bodies = dict((await session.execute(select(WebhookDelivery.message_id, WebhookDelivery.payload))).all())
        timeline = (await session.execute(select(TimelineRow).where(TimelineRow.kind == "rejected"))).scalar_one()
    assert attempts[assigned.id] is None and attempts[rejected.id] is None
    assert "another lead's reason" in (attempts[other.id] or "")  # another lead's log is left alone
    assert orjson.loads(bodies[rejected.id])["data"]["reason"] is None
    assert orjson.loads(bodies[assigned.id])["data"]["reason"].startswith("Rule west")  # the decision stays
    assert "another lead's reason" in bodies[other.id]
    assert timeline.detail["reason"] is None and timeline.detail["action"] == "reject"
    assert not any(words in text for text in (*bodies.values(), *(a or "" for a in attempts.values())))


async def _delivery_id(db: Database, message_id: str) -> str:
    async with db.read() as session:
        query = select(WebhookDelivery.id).where(WebhookDelivery.message_id == message_id)
        return (await session.execute(query)).scalar_one()


async def test_settled_deliveries_past_retention_are_purged_with_their_attempts_and_pending_ones_kept(
    db: Database, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    clock = Clock()
    settings = _settings(webhook_retry_schedule_s=(), webhook_retention_days=30)
    await _register(db, Webhooks(settings, clock=clock), receiver.url)
    once = _sender(senders, db, settings, clock)  # no retries: a failure is final
    patient = _sender(senders, db, _settings(webhook_retry_schedule_s=(40 * 86400,)), clock)
    succeeded, failed, pending, recent = _event(), _event(), _event(), _event()
    await _enqueue(db, clock, succeeded)
    assert await once.run_once() == 1
    receiver.answer(Reply(500))
    await _enqueue(db, clock, failed)
    assert await once.run_once() == 1
    receiver.answer(Reply(500))
    await _enqueue(db, clock, pending)
    assert await patient.run_once() == 1  # its retry is 40 days away: pending all along
    clock.advance(days=29)
    await _enqueue(db, clock, recent)
    assert await once.run_once() == 1
    clock.advance(days=2)  # the first three are 31 days old, the recent one 2

    async with db.transaction() as session:
        assert await purge_settled_deliveries(session, settings, clock()) == 2
    async with db.read() as session:
        left = dict((await session.execute(select(WebhookDelivery.message_id, WebhookDelivery.status))).all())
        attempts = (await session.execute(select(func.count()).select_from(WebhookAttempt))).scalar_one()
    assert left == {pending.id: "pending", recent.id: "succeeded"}
    assert attempts == 2  # the pending delivery's attempt and the recent success; the others went with theirs


async def test_deliveries_commit_with_their_event_or_not_at_all(db: Database, receiver: Receiver) -> None:
    clock, settings = Clock(), _settings()
    await _register(db, Webhooks(settings, clock=clock), receiver.url, ["lead.touched"])
    router = Router(settings, clock=clock)
    touched, assigned, lost = _event("lead.touched"), _event("lead.assigned"), _event("lead.touched")
    async with db.transaction() as session:
        await publish(router, session, [touched, assigned])
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await publish(router, session, [lost])
            raise RuntimeError("the state change failed")
    async with db.read() as session:
        deliveries = (await session.execute(select(WebhookDelivery.message_id))).scalars().all()
        published = (await session.execute(select(outbox.c.event_id))).scalars().all()
    assert deliveries == [touched.id]  # subscribed to lead.touched only
    assert sorted(published) == sorted([touched.id, assigned.id])


async def _replay_recorded(api: httpx.AsyncClient, endpoint_id: str, delivery_id: str) -> bool:
    items = (await api.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")).json()["items"]
    return any(d["id"] == delivery_id and d["status"] == "succeeded" and len(d["attempts"]) == 2 for d in items)


# -- through the routing app: API, the live sender loop, and the Router hook ---------------------------------


@pytest.mark.kafka
async def test_the_api_and_the_live_sender(
    database_url: str, kafka_bootstrap: str, namespace: str, receiver: Receiver, tmp_path: Path
) -> None:
    settings = RoutingSettings.model_validate(
        {
            "env": "test",
            "admin_token": ADMIN_TOKEN,
            "ROUTING_DATABASE_URL": database_url,  # the field reads only this alias
            "data_dir": tmp_path,
            "kafka_bootstrap": kafka_bootstrap,
            "topic_namespace": namespace,
            "seed_file": ROOT / "services/routing/demo_reps.yaml",
            "webhook_allow_loopback": True,
            "webhook_timeout_s": 2,
            "webhook_poll_interval_s": 0.05,
            "log_format": "console",
        }
    )
    assert settings.resolved_database_url() == database_url
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routing", headers=ADMIN) as api:
            assert (await api.get("/v1/webhook-endpoints", headers={"Authorization": "Bearer nope"})).status_code == 401
            refused = await api.post(
                "/v1/webhook-endpoints", json={"url": "http://169.254.169.254/x", "event_types": ["*"]}
            )
            assert refused.status_code == 422 and "metadata" in refused.text
            unknown = await api.post(
                "/v1/webhook-endpoints", json={"url": receiver.url, "event_types": ["lead.exploded"]}
            )
            assert unknown.status_code == 422 and "lead.exploded" in unknown.text

            created = await api.post(
                "/v1/webhook-endpoints",
                json={"url": receiver.url, "event_types": ["lead.assigned"], "description": "HubSpot"},
            )
            assert created.status_code == 201, created.text
            endpoint = created.json()
            secret = endpoint["secret"]
            assert secret.startswith("whsec_") and endpoint["enabled"] is True
            listed = (await api.get("/v1/webhook-endpoints")).json()["items"]
            assert [e["id"] for e in listed] == [endpoint["id"]]
            one = await api.get(f"/v1/webhook-endpoints/{endpoint['id']}")
            assert "secret" not in listed[0] and secret not in one.text  # shown once, at creation

            # A test ping goes out through the running sender loop.
            ping = await api.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
            assert ping.status_code == 202
            await wait_until_async(lambda: receiver.requests(), timeout=10, what="the test ping")
            assert receiver.requests()[0].verify(secret)["type"] == "webhook.test"

            # Routing a lead emits lead.assigned; its delivery is written in the same transaction (the hook).
            lead_id = str(uuid.uuid4())
            scored = Event(
                type="lead.scored",
                source="/handoff/scoring",
                subject=lead_id,
                data={
                    "lead": {"country": "US", "language": "en", "email": "pat@acme.io"},
                    "score": {"grade": "A", "fit": 80, "intent": 70, "qualified": True},
                    "source": {"id": "src-1", "kind": "webhook", "name": "Website"},
                },
            )
            async with app.state.runtime.db.transaction() as session:
                await app.state.router.on_scored(session, scored)
                event_id = (
                    await session.execute(select(outbox.c.event_id).order_by(outbox.c.seq.desc()).limit(1))
                ).scalar_one()
            await wait_until_async(lambda: len(receiver.requests()) >= 2, timeout=10, what="lead.assigned")
            delivered = receiver.requests()[1]
            payload = delivered.verify(secret)
            assert delivered.headers["webhook-id"] == event_id
            assert payload["type"] == "lead.assigned" and payload["data"]["lead_id"] == lead_id

            async def succeeded() -> list[dict[str, Any]]:
                url = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries?status=succeeded"
                items: list[dict[str, Any]] = (await api.get(url)).json()["items"]
                return items if len(items) == 2 else []

            # The receiver answers before the sender records the attempt: poll the delivery log.
            log = {"items": await wait_until_async(succeeded, timeout=10, what="two recorded successes")}
            assert {d["event_type"] for d in log["items"]} == {"webhook.test", "lead.assigned"}
            assert all(d["attempts"][0]["status_code"] == 200 for d in log["items"])

            rotated = (await api.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")).json()
            assert rotated["secret"] != secret and rotated["previous_secret_valid_until"]
            patched = await api.patch(
                f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": False, "description": "old CRM"}
            )
            assert patched.json()["enabled"] is False and patched.json()["disabled_reason"] == "manual"
            assert (await api.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")).status_code == 409
            await api.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True})

            assignment = next(d for d in log["items"] if d["event_type"] == "lead.assigned")
            replay = await api.post(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{assignment['id']}/replay")
            assert replay.status_code == 202
            await wait_until_async(lambda: len(receiver.requests()) >= 3, timeout=10, what="the replay")
            await wait_until_async(
                lambda: _replay_recorded(api, endpoint["id"], assignment["id"]), timeout=10, what="the replay's record"
            )
            again = receiver.requests()[2]
            assert again.headers["webhook-id"] == event_id
            again.verify(rotated["secret"])
            again.verify(secret)  # still inside the overlap
            since = await api.post(
                f"/v1/webhook-endpoints/{endpoint['id']}/replay", json={"since": "2020-01-01T00:00:00Z"}
            )
            assert since.json()["replayed"] == 0  # nothing failed
            assert (await api.get("/v1/webhook-endpoints/nope")).status_code == 404
    check = Database(database_url)
    try:
        async with check.read() as session:
            attempts = (await session.execute(select(func.count()).select_from(WebhookAttempt))).scalar_one()
    finally:
        await check.dispose()
    assert attempts == 3  # the ping, lead.assigned and its replay: all stored in the test's own database


# -- formats: what Slack and Teams incoming webhooks accept ---------------------------------------------------

SLACK_TEXT_TYPES = {"plain_text", "mrkdwn"}


def _slack_text(obj: Any, limit: int, *, plain: bool = False) -> bool:
    """A composition text object: https://docs.slack.dev/reference/block-kit/composition-objects/text-object."""
    if not isinstance(obj, dict) or obj.get("type") not in ({"plain_text"} if plain else SLACK_TEXT_TYPES):
        return False
    allowed = {"type", "text", "emoji" if obj["type"] == "plain_text" else "verbatim"}
    text = obj.get("text")
    return set(obj) <= allowed and isinstance(text, str) and 0 < len(text) <= limit


def _slack_block(block: Any, action_ids: set[str]) -> bool:
    """The documented fields and limits of the block types a message may carry."""
    if not isinstance(block, dict):
        return False
    kind, fields = block.get("type"), set(block) - {"type", "block_id"}
    if kind == "header":
        return fields == {"text"} and _slack_text(block["text"], 150, plain=True)
    if kind == "section":
        text, items = block.get("text"), block.get("fields")
        if not fields <= {"text", "fields", "accessory"} or (text is None and items is None):
            return False
        if text is not None and not _slack_text(text, 3000):
            return False
        return items is None or (
            isinstance(items, list) and 0 < len(items) <= 10 and all(_slack_text(i, 2000) for i in items)
        )
    if kind == "context":
        elements = block.get("elements")
        return (
            fields == {"elements"}
            and isinstance(elements, list)
            and 0 < len(elements) <= 10
            and all(_slack_text(e, 3000) for e in elements)
        )
    if kind == "actions":
        elements = block.get("elements")
        if fields != {"elements"} or not isinstance(elements, list) or not 0 < len(elements) <= 25:
            return False
        for button in elements:
            if not isinstance(button, dict) or button.get("type") != "button":
                return False
            if not set(button) <= {"type", "text", "url", "action_id", "value", "style"}:
                return False
            action_id, url = button.get("action_id", ""), button.get("url", "")
            if not _slack_text(button.get("text"), 75, plain=True) or action_id in action_ids:
                return False
            if not (isinstance(url, str) and len(url) <= 3000 and (not url or url.startswith(("http://", "https://")))):
                return False
            action_ids.add(action_id)
        return True
    return kind == "divider" and not fields


def slack_incoming_webhook(body: bytes) -> tuple[int, bytes] | None:
    """Slack's incoming-webhook answers: 400 invalid_payload, no_text (neither `text` nor `blocks`), invalid_blocks."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400, b"invalid_payload"
    if not isinstance(message, dict):
        return 400, b"invalid_payload"
    text, blocks = message.get("text"), message.get("blocks")
    if not (isinstance(text, str) and text.strip()) and not (isinstance(blocks, list) and blocks):
        return 400, b"no_text"
    if blocks is not None:
        action_ids: set[str] = set()
        if not isinstance(blocks, list) or len(blocks) > 50 or not all(_slack_block(b, action_ids) for b in blocks):
            return 400, b"invalid_blocks"
    return None


TEAMS_ELEMENTS = {"TextBlock", "FactSet", "Container", "ColumnSet", "Image", "ActionSet", "RichTextBlock"}


def teams_incoming_webhook(body: bytes) -> tuple[int, bytes] | None:
    """A Teams incoming webhook takes `{"type": "message", "attachments": [{contentType: adaptive card, content}]}`
    with an Adaptive Card (version up to 1.5) whose elements and actions are well formed."""
    bad = (400, b"Bad payload received by generic incoming webhook.")
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return bad
    attachments = message.get("attachments") if isinstance(message, dict) else None
    if message.get("type") != "message" or not isinstance(attachments, list) or not attachments:
        return bad
    for attachment in attachments:
        card = attachment.get("content") if isinstance(attachment, dict) else None
        if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive" or not isinstance(card, dict):
            return bad
        version = str(card.get("version", ""))
        if card.get("type") != "AdaptiveCard" or version not in {"1.0", "1.1", "1.2", "1.3", "1.4", "1.5"}:
            return bad
        for element in card.get("body") or []:
            kind = element.get("type") if isinstance(element, dict) else None
            if kind not in TEAMS_ELEMENTS:
                return bad
            if kind == "TextBlock" and not (isinstance(element.get("text"), str) and element["text"]):
                return bad
            if kind == "FactSet" and not all(
                isinstance(f, dict) and isinstance(f.get("title"), str) and isinstance(f.get("value"), str)
                for f in element.get("facts") or [None]
            ):
                return bad
        for action in card.get("actions") or []:
            if action.get("type") != "Action.OpenUrl" or not str(action.get("url", "")).startswith("http"):
                return bad
    return None


def _assigned_event() -> Event:
    lead_id = str(uuid.uuid4())
    due = datetime(2026, 12, 3, 14, 5, tzinfo=UTC)
    return Event(
        type="lead.assigned",
        source="/handoff/routing",
        subject=lead_id,
        data={
            "lead_id": lead_id,
            "assignment_id": 7,
            "outcome": "assigned",
            "rep": {"id": "ana", "name": "Ana Souza", "email": "ana@handoff.example"},
            "team_id": "west",
            "rule_id": "hot-west",
            "method": "round_robin",
            "reason": "Rule hot-west: the team west, round robin <next up>",
            "sla": {"policy": "A", "minutes": 5, "business_hours": False, "due_at": due.isoformat()},
            "lead": {
                "full_name": "Pat <@U123> Doe",
                "email": "pat.doe@acme.io",
                "phone": "+14155550100",
                "company": "Acme & Sons",
                "job_title": "VP Sales",
            },
            "score": {
                "grade": "A",
                "fit": 80,
                "intent": 70,
                "qualified": True,
                "ruleset_version": "v3",
                "fired": [
                    {"id": "vp", "score": "fit", "points": 30, "reason": "A VP title"},
                    {"id": "demo", "score": "intent", "points": 40, "reason": "Asked for a demo"},
                ],
            },
        },
    )


@pytest.fixture
def slack() -> Iterator[Receiver]:
    r = Receiver(check=slack_incoming_webhook)
    yield r
    r.stop()


@pytest.fixture
def teams() -> Iterator[Receiver]:
    r = Receiver(check=teams_incoming_webhook)
    yield r
    r.stop()


async def _register_as(db: Database, service: Webhooks, url: str, fmt: str) -> tuple[str, str]:
    destination = await service.vet_url(url)
    async with db.transaction() as session:
        endpoint, secret = await service.create_endpoint(
            session, url=destination, event_types=["lead.assigned"], format=fmt
        )
    return endpoint.id, secret


async def test_slack_and_teams_endpoints_get_messages_their_incoming_webhooks_accept(
    db: Database, receiver: Receiver, slack: Receiver, teams: Receiver, senders: list[WebhookSender]
) -> None:
    clock = Clock()
    settings = _settings(webhook_links_base_url="https://handoff.example.com/")
    service = Webhooks(settings, clock=clock)
    _, standard_secret = await _register_as(db, service, receiver.url, "standard")
    slack_id, _ = await _register_as(db, service, slack.url, "slack")
    teams_id, _ = await _register_as(db, service, teams.url, "teams")
    event = _assigned_event()
    await _enqueue(db, clock, event)

    assert await _sender(senders, db, settings, clock).run_once() == 3
    async with db.read() as session:
        for endpoint_id in (slack_id, teams_id):
            [entry] = await service.deliveries(session, endpoint_id)
            assert (entry.delivery.status, entry.attempts[0].status_code) == ("succeeded", 200), entry.attempts

    # The standard endpoint is unchanged: the Standard Webhooks body, signed.
    [plain] = receiver.requests()
    assert plain.verify(standard_secret) == orjson.loads(webhook_body(event.type, event.time, event.data))

    [posted] = slack.requests()
    message = orjson.loads(posted.body)
    assert posted.headers["webhook-id"] == event.id  # still a Standard Webhooks request on the wire
    assert "Pat" in message["text"] and "Ana Souza" in message["text"] and "2026-12-03 14:05 UTC" in message["text"]
    shown = orjson.dumps(message).decode()
    assert "Pat &lt;@U123&gt; Doe" in shown and "<@U123>" not in shown  # a name cannot mention anyone
    assert "Acme &amp; Sons" in shown and "+30 fit: A VP title" in shown and "+40 intent: Asked for a demo" in shown
    assert f"<!date^{int(datetime(2026, 12, 3, 14, 5, tzinfo=UTC).timestamp())}^" in shown
    assert f"https://handoff.example.com/v1/leads/{event.subject}" in shown
    assert "pat.doe@acme.io" not in posted.body.decode() and "+14155550100" not in posted.body.decode()

    [card_post] = teams.requests()
    card = orjson.loads(card_post.body)["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts == {"Rep": "Ana Souza", "Score": "A (fit 80, intent 70)", "SLA due": "2026-12-03 14:05 UTC"}
    assert any(b.get("text") == "Pat <@U123> Doe" for b in card["body"])
    assert card["actions"][0]["url"] == f"https://handoff.example.com/v1/leads/{event.subject}"


async def test_a_failed_slack_delivery_is_retried_and_replayed_as_a_slack_message(
    db: Database, slack: Receiver, senders: list[WebhookSender]
) -> None:
    clock, settings = Clock(), _settings(webhook_retry_schedule_s=(5,))
    service = Webhooks(settings, clock=clock)
    endpoint_id, _ = await _register_as(db, service, slack.url, "slack")
    slack.answer(Reply(500), Reply(503))  # Slack down: the first attempt and its one retry fail
    event = _assigned_event()
    await _enqueue(db, clock, event)
    sender = _sender(senders, db, settings, clock)
    assert await sender.run_once() == 1
    clock.advance(seconds=10)
    assert await sender.run_once() == 1
    delivery = await _delivery(db)
    assert (delivery.status, delivery.attempt_count) == ("failed", 2)

    async with db.transaction() as session:
        await service.replay(session, endpoint_id, delivery.id)
    assert await sender.run_once() == 1
    requests = slack.requests()
    assert [r.headers["webhook-id"] for r in requests] == [event.id] * 3
    assert slack_incoming_webhook(requests[-1].body) is None
    async with db.read() as session:
        [entry] = await service.deliveries(session, endpoint_id)
    assert entry.delivery.status == "succeeded" and entry.delivery.replays == 1
    assert [a.status_code for a in entry.attempts] == [500, 503, 200]


async def test_the_format_is_chosen_validated_and_shown_through_the_api(db: Database, slack: Receiver) -> None:
    settings = _settings(admin_token=ADMIN_TOKEN)
    app = FastAPI()
    app.state.settings = settings
    app.state.runtime = SimpleNamespace(db=db)
    install_common(app)
    app.include_router(webhooks_api.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://routing", headers=ADMIN) as api:
        plain = await api.post("/v1/webhook-endpoints", json={"url": slack.url, "event_types": ["*"]})
        assert plain.status_code == 201 and plain.json()["format"] == "standard"
        wrong = await api.post(
            "/v1/webhook-endpoints", json={"url": slack.url, "event_types": ["*"], "format": "discord"}
        )
        assert wrong.status_code == 422
        assert [e["field"] for e in wrong.json()["detail"]] == ["format"]
        created = await api.post(
            "/v1/webhook-endpoints", json={"url": slack.url, "event_types": ["lead.assigned"], "format": "slack"}
        )
        assert created.status_code == 201 and created.json()["format"] == "slack"
        endpoint_id = created.json()["id"]
        assert (await api.get(f"/v1/webhook-endpoints/{endpoint_id}")).json()["format"] == "slack"

        patched = await api.patch(f"/v1/webhook-endpoints/{endpoint_id}", json={"format": "teams"})
        assert patched.status_code == 200 and patched.json()["format"] == "teams"
        refused = await api.patch(f"/v1/webhook-endpoints/{endpoint_id}", json={"format": "SLACK"})
        assert refused.status_code == 422 and [e["field"] for e in refused.json()["detail"]] == ["format"]
        listed = (await api.get("/v1/webhook-endpoints")).json()["items"]
        assert {e["id"]: e["format"] for e in listed} == {plain.json()["id"]: "standard", endpoint_id: "teams"}
