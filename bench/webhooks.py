"""Webhooks: routing's sender draining deliveries to a local receiver, against a bare client of the same transport
(aiohttp) posting the same bodies at the same concurrency, A B A B in one run.

Each run is its own process (`python -m bench.webhooks worker MODE N DB URL`) on uvloop, as routing runs, with a
fresh SQLite database, and measures its own CPU (getrusage: every thread, the COMMIT thread too) from the first
delivery queued or claimed to the last attempt recorded. Two sender paths:
- `table`: N deliveries queued before the sender starts (a restart, a backlog, another process's writes): claims.
- `handoff`: the sender runs, then N deliveries are written in this process in transactions of 100 events (as the
  consumer writes them) and handed to the sender in memory after each commit; the CPU includes those writes.
- `consumer`: the hand-off path as routing's consumer drives it (end to end): batches of B deliveries (10-50 at e2e
  rates), each transaction followed by the consumer's hold of the loop for its next apply (0.7 ms a lead, a sleep:
  no CPU) after its yield and `common.poll.hand_off`; `behind` is how many of the deliveries written so far were
  not yet answered when the next batch's apply began (the sender's lag behind the consumer).
The bare client (`bare`) posts the same bodies with as many requests in flight, unsigned, recording nothing.
The floor (`floor`) is the bare client plus only the durable bookkeeping the guarantees need, on the same schema:
each batch of HANDOFF_BATCH rows inserted in one transaction (the routing transaction's write) and handed over in
memory at its commit, and each batch of answered POSTs settled by one guarded executemany UPDATE in one
transaction (no signing, no scheduler, no attempt rows): how close the sender is to what is possible.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from sqlalchemy.orm import Session
from tests.support.stack import ROOT, Service, free_port

from bench.scoring import received_events
from bench.util import UVICORN_ARGS, log, median, ratio
from common.envelope import Event

CONCURRENCY = 32  # routing's default webhook_concurrency: the bare client gets the same number in flight
HANDOFF_BATCH = 100  # events per transaction on the hand-off path
CONSUMER_BATCHES = (1, 10, 40)  # the `consumer` mode's batch sizes in `run`: routing's polls, from a quiet hour to e2e
APPLY_S_PER_LEAD = 0.0007  # how long routing's apply holds the loop per lead (~30 ms a batch of 40 at 585/s)
MODES = ("table", "handoff", "bare", "floor", "consumer")


def assigned_events(n: int) -> list[Event]:
    """lead.assigned events shaped like routing's (a decision with candidates, the SLA and the lead view)."""
    now = datetime.now(UTC)
    events = []
    for received in received_events(n):
        lead_id = received.subject
        data = {
            "lead_id": lead_id,
            "assignment_id": 1,
            "attempt": 1,
            "outcome": "assigned",
            "rep": {"id": "r1", "name": "Rep One", "email": "r1@example.com"},
            "team_id": "t",
            "rule_id": "everyone",
            "ruleset_version": "bench",
            "method": "round_robin",
            "reason": "round robin over team t; r1 is next in the rotation",
            "candidates": [
                {"rep_id": f"r{k}", "eligible": True, "reasons": ["in team t", "working now"]} for k in range(1, 5)
            ],
            "hold_until": None,
            "assigned_at": now.isoformat(),
            "sla": {"policy": "B", "minutes": 60, "business_hours": True, "due_at": now.isoformat()},
            "previous_rep_id": None,
            "reassign_reason": None,
            "source": received.data["source"],
            "is_test": False,
            "duplicate_of": None,
            "received_at": now.isoformat(),
            "lead": received.data["lead"],
            "score": {"grade": "B", "fit": 55, "intent": 40, "total": 50, "reasons": ["job title: head of sales"]},
        }
        events.append(Event(type="lead.assigned", source="/handoff/routing", subject=lead_id, time=now, data=data))
    return events


# -- one run, in its own process ------------------------------------------------------------------------------


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bodies(events: list[Event]) -> list[tuple[str, bytes]]:
    from routing.webhooks import webhook_body

    return [(e.id, webhook_body(e.type, e.time, e.data).encode()) for e in events]


async def _bare(bodies: list[tuple[str, bytes]], url: str) -> int:
    """The same bodies through a bare aiohttp session (the sender's transport), CONCURRENCY posts in flight."""
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as client:
        todo = iter(bodies)

        async def worker() -> None:
            for message_id, body in todo:
                headers = {"content-type": "application/json", "webhook-id": message_id}
                async with client.post(url, data=body, headers=headers) as response:
                    response.raise_for_status()
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(bodies)


_FLOOR_INSERT = (
    "INSERT INTO webhook_deliveries (id, endpoint_id, message_id, event_type, lead_id, payload, status,"
    " next_attempt_at, schedule_step, attempt_count, replays, created_at, lease_token, lease_until)"
    " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, 0, 0, 0, ?, ?, ?)"
)
_FLOOR_SETTLE = (
    "UPDATE webhook_deliveries SET status = 'succeeded', delivered_at = ?, next_attempt_at = NULL,"
    " lease_token = NULL, lease_until = NULL, attempt_count = attempt_count + 1, last_status_code = ?"
    " WHERE id = ? AND lease_token = ?"
)


def _executemany(sql: str, rows: list[tuple[Any, ...]]) -> Callable[[Session], None]:
    def run(sync: Session) -> None:
        sync.connection().exec_driver_sql(sql, rows)

    return run


async def _floor_setup(db_url: str, url: str) -> tuple[Any, str]:
    """The floor's database (routing's schema, one endpoint), made before the clock starts; (Database, endpoint)."""
    import uuid

    from sqlalchemy import text

    from common.db import Database
    from common.db_schema import upgrade_schema_async
    from routing.app import MIGRATIONS
    from routing.store import Base

    await upgrade_schema_async(db_url, MIGRATIONS, Base.metadata)
    db = Database(db_url)
    endpoint_id = str(uuid.uuid4())
    async with db.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO webhook_endpoints (id, url, secret, event_types, description, enabled, format,"
                " created_at, updated_at) VALUES (:id, :url, 'x', '[\"*\"]', 'floor', 1, 'standard', :now, :now)"
            ),
            {"id": endpoint_id, "url": url, "now": datetime.now(UTC).isoformat(" ")},
        )
    return db, endpoint_id


async def _floor(
    events: list[Event], bodies: list[tuple[str, bytes]], db: Any, endpoint_id: str, url: str, batch: int
) -> int:
    """The bare client plus one insert per delivery (a transaction per `batch`) and one guarded executemany
    UPDATE per batch of answers (a transaction each), on routing's schema and database layer; returns the settled."""
    import uuid

    queue: asyncio.Queue[tuple[str, str, str, bytes] | None] = asyncio.Queue()
    answered: list[tuple[str, int, str, str]] = []
    settled = 0
    wake = asyncio.Event()

    async def write() -> None:
        token = str(uuid.uuid4())
        for i in range(0, len(events), batch):
            now = datetime.now(UTC).isoformat(" ")
            rows = [
                (str(uuid.uuid4()), endpoint_id, e.id, e.type, e.subject, body.decode(), now, now, token, now)
                for e, (_, body) in zip(events[i : i + batch], bodies[i : i + batch], strict=True)
            ]
            async with db.transaction() as session:
                await session.run_sync(_executemany(_FLOOR_INSERT, rows))
            for row in rows:  # handed over at the commit, in memory
                queue.put_nowait((row[0], row[2], token, row[5].encode()))
        for _ in range(CONCURRENCY):
            queue.put_nowait(None)

    async def record() -> None:
        nonlocal settled
        while settled < len(events):
            await wake.wait()
            wake.clear()
            batch, answered[:] = list(answered), []
            now = datetime.now(UTC).isoformat(" ")
            params = [(now, status, delivery_id, token) for delivery_id, status, token, _ in batch]
            async with db.transaction() as session:
                await session.run_sync(_executemany(_FLOOR_SETTLE, params))
            settled += len(batch)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as client:

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                delivery_id, message_id, token, body = item
                headers = {"content-type": "application/json", "webhook-id": message_id}
                async with client.post(url, data=body, headers=headers) as response:
                    response.raise_for_status()
                    await response.read()
                answered.append((delivery_id, response.status, token, message_id))
                wake.set()

        recorder = asyncio.create_task(record())
        await asyncio.gather(write(), *(worker() for _ in range(CONCURRENCY)))
        await recorder
    return settled


async def _sender_run(
    mode: str, events: list[Event], db_url: str, url: str, batch: int, behind: list[int], writes: dict[str, int]
) -> tuple[int, float, float, float | None]:
    """Routing's sender draining `events` to `url`; returns (delivered, wall seconds, CPU seconds, and the CPU
    seconds writing the backlog took on the table path). The `consumer` mode notes in `behind`, before each batch
    after the first, how many written deliveries were not yet answered; `writes` counts the write transactions by
    the function that opened them (the sender's records and claims beside the enqueues)."""
    from sqlalchemy import func, select

    from common import consumer
    from common.db import Database
    from common.db_schema import upgrade_schema_async
    from common.poll import hand_off
    from routing.app import MIGRATIONS
    from routing.settings import RoutingSettings
    from routing.store import Base, WebhookDelivery
    from routing.webhooks import WebhookSender, enqueue_deliveries
    from routing.webhooks.sender import ATTEMPTS, DELIVERY_SECONDS
    from routing.webhooks.service import Webhooks

    settings = RoutingSettings(
        env="test",
        database_url=db_url,
        webhook_allow_loopback=True,
        webhook_concurrency=CONCURRENCY,
        webhook_endpoint_concurrency=CONCURRENCY,  # one endpoint: as many in flight as the bare client
    )
    await upgrade_schema_async(db_url, MIGRATIONS, Base.metadata)
    db = Database(db_url)
    transaction = db.transaction

    def counted() -> Any:
        opener = sys._getframe(1).f_code.co_name
        writes[opener] = writes.get(opener, 0) + 1
        return transaction()

    db.transaction = counted  # type: ignore[method-assign]
    service = Webhooks(settings)
    destination = await service.vet_url(url)
    async with db.transaction() as session:
        await service.create_endpoint(session, url=destination, event_types=["lead.assigned"], description="bench")

    async def enqueue(batch: int) -> None:
        for i in range(0, len(events), batch):
            async with db.transaction() as session:
                await enqueue_deliveries(session, events[i : i + batch], datetime.now(UTC))

    async def as_the_consumer(batch: int) -> None:
        """Each batch committed as the consumer loop does: its yield, its hand-off, then the next apply's hold."""
        for i in range(0, len(events), batch):
            if i:
                behind.append(i - round(answered() - answered_base))
                time.sleep(APPLY_S_PER_LEAD * batch)  # the apply's statements hold the loop (no CPU: a sleep)
            async with db.transaction() as session:
                await enqueue_deliveries(session, events[i : i + batch], datetime.now(UTC))
            await asyncio.sleep(consumer._HAND_OFF_S)
            await hand_off(db.engine, consumer._RELAY_SHARE_S)

    # Read from the metrics' values, not `collect()` (which builds every sample: ~0.4 ms a call, inside the
    # measured CPU once per batch and every 20 ms).
    buckets, successes = DELIVERY_SECONDS._buckets, ATTEMPTS.labels(result="success")._value

    def answered() -> float:
        """Attempts answered so far (observed by the worker at the answer, before its record commits)."""
        return sum(bucket.get() for bucket in buckets)

    def succeeded() -> float:
        """Successful attempts so far, from the sender's own counter."""
        return float(successes.get())

    base, answered_base = succeeded(), answered()
    sender = WebhookSender(db, settings)
    enqueue_cpu = None
    if mode == "table":  # the backlog, written as the hand-off path writes it: the CPU that path adds for it
        enqueue_cpu = _cpu_s()
        await enqueue(HANDOFF_BATCH)
        enqueue_cpu = _cpu_s() - enqueue_cpu
    started, cpu = time.perf_counter(), _cpu_s()
    running = asyncio.create_task(sender.run())
    if mode in ("handoff", "consumer"):
        await asyncio.sleep(0)  # the sender takes hand-offs from its first step on
        await (enqueue(batch) if mode == "handoff" else as_the_consumer(batch))
    while succeeded() - base < len(events) and not running.done():
        await asyncio.sleep(0.02)
    await sender.stop()
    await running  # the attempts in flight finish and are recorded
    wall, cpu = time.perf_counter() - started, _cpu_s() - cpu
    async with db.read() as session:
        query = select(func.count()).where(WebhookDelivery.status == "succeeded")
        delivered = int((await session.execute(query)).scalar_one())
    await db.dispose()
    return delivered, wall, cpu, enqueue_cpu


async def _worker(mode: str, n: int, db_url: str, url: str, batch: int = HANDOFF_BATCH) -> dict[str, Any]:
    events = assigned_events(n)
    enqueue_cpu = None
    behind: list[int] = []
    writes: dict[str, int] = {}
    if mode in ("bare", "floor"):
        bodies = _bodies(events)  # built before the clock starts: the sender's are built when enqueued
        floor = await _floor_setup(db_url, url) if mode == "floor" else None
        started, cpu = time.perf_counter(), _cpu_s()
        delivered = await (_bare(bodies, url) if floor is None else _floor(events, bodies, *floor, url, batch))
        wall, cpu = time.perf_counter() - started, _cpu_s() - cpu
        if floor is not None:
            await floor[0].dispose()
    else:
        delivered, wall, cpu, enqueue_cpu = await _sender_run(mode, events, db_url, url, batch, behind, writes)
    return {
        "mode": mode,
        "n": n,
        "batch": batch,
        "behind_median": median(behind) if behind else None,
        "behind_max": max(behind) if behind else None,
        "write_transactions": writes,
        "delivered": delivered,
        "wall_s": round(wall, 3),
        "per_s": round(delivered / wall, 1) if wall > 0 else None,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_delivery": round(cpu * 1000 / delivered, 3) if delivered else None,
        # Table path only: writing the backlog in transactions of HANDOFF_BATCH (outside its cpu_s); the hand-off
        # path's cpu_s includes that work.
        "enqueue_cpu_ms_per_delivery": round(enqueue_cpu * 1000 / n, 3) if enqueue_cpu is not None else None,
    }


# -- the driver ---------------------------------------------------------------------------------------------------


def _receiver_stats(receiver: Service) -> dict[str, Any]:
    return httpx.get(f"{receiver.url}/_stats", timeout=30).json()


def _one(
    mode: str, n: int, tmp: Path, i: int, receiver: Service, env: dict[str, str], batch: int = HANDOFF_BATCH
) -> dict[str, Any]:
    httpx.post(f"{receiver.url}/_reset", timeout=10)
    db_url = f"sqlite+aiosqlite:///{(tmp / f'{mode}-{batch}-{i}.db').resolve()}"
    command = [sys.executable, "-m", "bench.webhooks", "worker", mode, str(n), db_url, f"{receiver.url}/hook"]
    command.append(str(batch))
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"webhooks worker {mode} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    stats = _receiver_stats(receiver)
    span = stats["last"] - stats["first"]
    result["received"] = stats["count"]
    result["received_per_s"] = round((stats["count"] - 1) / span, 1) if span > 0 else None
    log(
        f"webhooks {mode} (batch {batch}): {result['per_s']}/s ({result['delivered']}/{n},"
        f" receiver {result['received_per_s']}/s), {result['cpu_ms_per_delivery']} ms CPU per delivery"
    )
    return result


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(tmp: Path, bootstrap: str, *, quick: bool) -> dict[str, Any]:
    """Table path (A), bare aiohttp (B), hand-off path (A'), floor, the consumer-driven hand-off at e2e batch sizes,
    repeated: table bare handoff floor consumer... table bare ..."""
    del bootstrap  # no broker: the sender and its database only
    n = 2000 if quick else 10_000
    repeats = 2 if quick else 3
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HANDOFF_WEBHOOK_ALLOW_LOOPBACK="true")
    receiver = Service("bench.receiver", free_port(), env, tmp / "receiver.log", extra_args=list(UVICORN_ARGS))
    kinds = [mode for mode in MODES if mode != "consumer"] + [f"consumer_b{batch}" for batch in CONSUMER_BATCHES]
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    load_before = _load()
    try:
        receiver.start()
        for i in range(repeats):
            for mode in ("table", "bare", "handoff", "floor"):
                runs[mode].append(_one(mode, n, tmp, i, receiver, env))
            for batch in CONSUMER_BATCHES:
                runs[f"consumer_b{batch}"].append(_one("consumer", n, tmp, i, receiver, env, batch))
    finally:
        receiver.stop()
    result: dict[str, Any] = {"n": n, "concurrency": CONCURRENCY, "transport": "aiohttp"}
    result["load"] = [load_before, _load()]
    for kind in kinds:
        result[f"{kind}_runs"] = runs[kind]
        result[f"{kind}_per_s"] = median([r["per_s"] for r in runs[kind]])
        result[f"{kind}_cpu_ms_per_delivery"] = median([r["cpu_ms_per_delivery"] for r in runs[kind]])
        if kind.startswith("consumer"):  # deliveries not yet answered when the next batch's apply began
            result[f"{kind}_behind_median"] = median([r["behind_median"] for r in runs[kind]])
    result["table_ratio"] = ratio(result["table_per_s"], result["bare_per_s"])
    result["handoff_ratio"] = ratio(result["handoff_per_s"], result["bare_per_s"])
    result["floor_ratio"] = ratio(result["floor_per_s"], result["bare_per_s"])
    result["handoff_of_floor"] = ratio(result["handoff_per_s"], result["floor_per_s"])
    result["ratio"] = result["handoff_ratio"]  # the figure bench.report shows beside handoff_per_s and bare_per_s
    return result


if __name__ == "__main__":
    if len(sys.argv) in (6, 7) and sys.argv[1] == "worker" and sys.argv[2] in MODES:
        mode, count, database, target = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        size = int(sys.argv[6]) if len(sys.argv) == 7 else HANDOFF_BATCH
        print(json.dumps(uvloop.run(_worker(mode, count, database, target, size))))
    else:
        sys.exit("usage: python -m bench.webhooks worker table|handoff|bare|floor|consumer N DB_URL RECEIVER_URL [B]")
