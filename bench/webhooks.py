"""Webhooks: routing's deliveries/s to a local receiver, against a bare client of the same transport (aiohttp)
posting the same bodies at the same concurrency; a bare httpx client is measured too, for reference."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from tests.support.stack import ADMIN, ROOT, Service, Stack, free_port

from bench.e2e import webhooks_available
from bench.scoring import received_events
from bench.util import UVICORN_ARGS, interleave, log, median, ratio
from common.db import Database
from common.envelope import Event

CONCURRENCY = 32  # routing's default webhook_concurrency: the bare client gets the same number in flight


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


def _receiver_stats(receiver: Service) -> dict[str, Any]:
    return httpx.get(f"{receiver.url}/_stats", timeout=30).json()


def _wait_received(receiver: Service, n: int, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    stats = _receiver_stats(receiver)
    while stats["count"] < n and time.monotonic() < deadline:
        time.sleep(0.25)
        stats = _receiver_stats(receiver)
    count = stats["count"]
    span = stats["last"] - stats["first"]
    return {"n": n, "received": count, "complete": count >= n, "per_s": (count - 1) / span if span > 0 else None}


def _handoff(routing: Service, receiver: Service, db_url: str, events: list[Event], wait_s: float) -> dict[str, Any]:
    from routing.webhooks import enqueue_deliveries

    httpx.post(f"{receiver.url}/_reset", timeout=10)

    async def enqueue() -> int:
        db = Database(db_url)
        try:
            async with db.transaction() as session:
                return await enqueue_deliveries(session, events, datetime.now(UTC))
        finally:
            await db.dispose()

    queued = asyncio.run(enqueue())
    result = _wait_received(receiver, queued, wait_s)
    log(f"webhooks: {result['per_s'] or 0:.0f} deliveries/s ({result['received']}/{queued})")
    return result


def _bare(receiver: Service, events: list[Event], wait_s: float) -> dict[str, Any]:
    """The same bodies through a bare aiohttp session (the sender's transport), CONCURRENCY posts in flight."""
    from routing.webhooks import webhook_body

    httpx.post(f"{receiver.url}/_reset", timeout=10)
    bodies = [(e.id, webhook_body(e.type, e.time, e.data).encode()) for e in events]

    async def post_all() -> None:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as client:
            todo = iter(bodies)

            async def worker() -> None:
                for message_id, body in todo:
                    headers = {"content-type": "application/json", "webhook-id": message_id}
                    async with client.post(f"{receiver.url}/hook", data=body, headers=headers) as response:
                        response.raise_for_status()
                        await response.read()

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    uvloop.run(post_all())
    result = _wait_received(receiver, len(bodies), wait_s)
    log(f"webhooks bare aiohttp: {result['per_s'] or 0:.0f} posts/s")
    return result


def _bare_httpx(receiver: Service, events: list[Event], wait_s: float) -> dict[str, Any]:
    """The same bodies through a bare httpx client (the transport the sender used before), for reference."""
    from routing.webhooks import webhook_body

    httpx.post(f"{receiver.url}/_reset", timeout=10)
    bodies = [(e.id, webhook_body(e.type, e.time, e.data).encode()) for e in events]

    async def post_all() -> None:
        limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(limits=limits, timeout=15) as client:
            todo = iter(bodies)

            async def worker() -> None:
                for message_id, body in todo:
                    headers = {"content-type": "application/json", "webhook-id": message_id}
                    (await client.post(f"{receiver.url}/hook", content=body, headers=headers)).raise_for_status()

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    uvloop.run(post_all())
    result = _wait_received(receiver, len(bodies), wait_s)
    log(f"webhooks bare httpx: {result['per_s'] or 0:.0f} posts/s")
    return result


def run(tmp: Path, bootstrap: str, *, quick: bool) -> dict[str, Any]:
    """Drain N queued deliveries through routing's real sender (A), then N bare aiohttp posts (B); A B A B; then
    bare httpx posts once per repeat (C)."""
    n = 1000 if quick else 10_000
    repeats = 2 if quick else 3
    wait_s = 120.0 if quick else 600.0
    stack = Stack(tmp, bootstrap, env={"HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true"})
    routing = stack["routing"]
    routing.extra_args = list(UVICORN_ARGS)
    env = dict(stack.env, PYTHONPATH=str(ROOT))
    receiver = Service("bench.receiver", free_port(), env, tmp / "receiver.log", extra_args=list(UVICORN_ARGS))
    try:
        routing.start()
        if not webhooks_available(routing):
            return {"skipped": "routing has no POST /v1/webhook-endpoints yet"}
        receiver.start()
        response = httpx.post(
            f"{routing.url}/v1/webhook-endpoints",
            json={"url": f"{receiver.url}/hook", "event_types": ["lead.assigned"], "description": "bench"},
            headers=ADMIN,
            timeout=10,
        )
        response.raise_for_status()
        db_url = f"sqlite+aiosqlite:///{(tmp / 'data' / 'routing.db').resolve()}"
        body_bytes = len(assigned_events(1)[0].value())
        handoff, bare = interleave(
            repeats,
            lambda _i: _handoff(routing, receiver, db_url, assigned_events(n), wait_s),
            lambda _i: _bare(receiver, assigned_events(n), wait_s),
        )
        bare_httpx = [_bare_httpx(receiver, assigned_events(n), wait_s) for _ in range(repeats)]
    finally:
        receiver.stop()
        stack.stop()
    result: dict[str, Any] = {
        "n": n,
        "concurrency": CONCURRENCY,
        "body_bytes": body_bytes,
        "handoff_runs": handoff,
        "bare_runs": bare,
        "bare_httpx_runs": bare_httpx,
        "transport": "aiohttp",
        "handoff_per_s": median([r["per_s"] for r in handoff]),
        "bare_per_s": median([r["per_s"] for r in bare]),
        "bare_httpx_per_s": median([r["per_s"] for r in bare_httpx]),
    }
    result["ratio"] = ratio(result["handoff_per_s"], result["bare_per_s"])
    return result
