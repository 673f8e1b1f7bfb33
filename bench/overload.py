"""Overload: a real ingest process driven at three times its measured saturation answers only 202, 429 or 503.

One ingest process (uvicorn, real SQLite, a web source's API key), its saturation measured first with wrk's closed
loop, then an open-loop generator offers 3x that rate for a bounded time. Reported: every status and client error
counted, latency from the intended send time (p50/p99/max, so client-side queueing counts too), how many leads were
acknowledged per second while overloaded, and the server's RSS at start, middle and end of the overload.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from tests.support.stack import ADMIN, Stack

from bench.load import RawHttp, run_wrk
from bench.util import UVICORN_ARGS, log, percentile, pin, rss_mb

ALLOWED = {202, 429, 503}
CLIENT_TIMEOUT_S = 10.0  # a request not answered by then counts as a hang
MAX_CONNECTIONS = 512
RAMP_S = 2  # the generator opens its connections in the first seconds: reported apart as well as in the total


def _source_key(url: str) -> str:
    source = {"kind": "web", "name": "overload bench"}
    response = httpx.post(f"{url}/v1/sources", json=source, headers=ADMIN, timeout=10)
    response.raise_for_status()
    key: str = response.json()["api_key"]
    return key


async def _overload(port: int, key: str, *, rate: float, seconds: float, pid: int) -> dict[str, Any]:
    client = RawHttp(
        "127.0.0.1",
        port,
        max_connections=MAX_CONNECTIONS,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    run = uuid.uuid4().hex[:8]
    statuses: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    # Per second of the intended send: answers by status and their latencies, to show whether anything drifts.
    per_second: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    per_second_ms: dict[int, list[float]] = collections.defaultdict(list)
    steady_ms: list[float] = []  # after the first RAMP_S seconds, when every connection is open
    rss: dict[str, float] = {"start": rss_mb(pid)}
    samples = [rss["start"]]
    total = int(rate * seconds)
    start = time.monotonic() + 0.1

    async def one(i: int, due: float) -> None:
        body = orjson.dumps({"email": f"x{run}-{i}@example.org", "first_name": "Over", "last_name": f"Load {i}"})
        second = int(due - start)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for wraps each request in a task of its own (more turns
            # of the loop for each), which a generator offering 15,000-20,000/s from one core cannot spare.
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                status, _ = await client.post("/v1/leads", body)
        except TimeoutError:
            outcome = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome = f"error:{type(exc).__name__}"
        else:
            outcome = str(status)
            latency = (time.monotonic() - due) * 1000
            latencies.append(latency)
            per_second_ms[second].append(latency)
            if second >= RAMP_S:
                steady_ms.append(latency)
        statuses[outcome] += 1
        per_second[second][outcome] += 1

    async def sample_rss() -> None:
        while True:
            await asyncio.sleep(1.0)
            samples.append(rss_mb(pid))
            if "middle" not in rss and time.monotonic() >= start + seconds / 2:
                rss["middle"] = samples[-1]

    sampler = asyncio.create_task(sample_rss())
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    sampler.cancel()
    rss["end"] = rss_mb(pid)
    rss["max"] = max([*samples, rss["end"]])
    await client.close()
    elapsed = time.monotonic() - start
    steady: collections.Counter[str] = collections.Counter()
    for second, counts in per_second.items():
        if second >= RAMP_S:
            steady.update(counts)
    return {
        "offered_per_s": round(rate, 1),
        "sent": total,
        "seconds": round(elapsed, 1),
        "statuses": dict(statuses),
        "only_allowed": set(statuses) <= {str(s) for s in ALLOWED},
        "accepted_per_s": round(statuses["202"] / elapsed, 1),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "steady": {
            "after_s": RAMP_S,
            "statuses": dict(steady),
            "only_allowed": set(steady) <= {str(s) for s in ALLOWED},
            "p50_ms": percentile(steady_ms, 50),
            "p99_ms": percentile(steady_ms, 99),
        },
        "rss_mb": rss,
        "rss_samples_mb": samples,
        "per_second": [
            {"second": t, **per_second[t], "p99_ms": percentile(per_second_ms[t], 99)} for t in sorted(per_second)
        ],
    }


def _wait_outbox_drained(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
            if line.startswith("handoff_outbox_backlog ") and float(line.split()[1]) == 0:
                return
        time.sleep(0.5)
    log("overload: the outbox still had a backlog; starting anyway")


def _server_latency(url: str) -> dict[str, int]:
    """Admitted lead posts by the server's own latency bucket (from accept to answer, not counting kernel queues)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    buckets: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("handoff_http_request_seconds_bucket{") and 'route="/v1/leads"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[f"<= {le}"] = int(float(line.rsplit(" ", 1)[1]))
    return buckets


def run(tmp: Path, bootstrap: str, *, quick: bool) -> dict[str, Any]:
    """Saturation by wrk (closed loop), then 3x that rate open loop for 20 s (10 s quick) on one ingest process."""
    stack = Stack(tmp, bootstrap)
    ingest = stack["ingest"]
    ingest.extra_args = list(UVICORN_ARGS)
    seconds = 10.0 if quick else 20.0
    try:
        ingest.start()
        assert ingest.process is not None
        pid = ingest.process.pid
        # Server on core 0, load generators on core 1 (as bench/ingest.py pins wrk), when there are two cores.
        pinned = (os.cpu_count() or 1) > 1
        if pinned:
            pin(pid, "0")
        gen_cpus = "1" if pinned else None
        key = _source_key(ingest.url)
        run_wrk(f"{ingest.url}/v1/leads", token=key, seconds=2, connections=32, cpus=gen_cpus)  # warm up
        saturation = run_wrk(f"{ingest.url}/v1/leads", token=key, seconds=5, connections=64, cpus=gen_cpus)
        _wait_outbox_drained(ingest.url)  # the relay publishing wrk's leads is not part of the overload run
        log(f"overload: saturation {saturation.accepted_per_s:.0f} leads/s (p99 {saturation.p99_ms:.0f} ms)")
        rate = 3 * saturation.accepted_per_s
        result: dict[str, Any] = {}

        def drive() -> None:
            # Its own thread and loop: the bench's callers are synchronous.
            if pinned:
                os.sched_setaffinity(0, {1})  # this thread only
            # uvloop, as the other benches' generators: asyncio's own loop could not offer 3x a ~6,500/s saturation
            # from one core (91 s to send 10 s of it, its own queue counted as the server's latency).
            result.update(uvloop.run(_overload(ingest.port, key, rate=rate, seconds=seconds, pid=pid)))

        thread = threading.Thread(target=drive, name="overload")
        thread.start()
        thread.join()
        served_after = httpx.get(f"{ingest.url}/readyz", timeout=10).status_code
        server_side = _server_latency(ingest.url)
    finally:
        stack.stop()
    overload = {
        "saturation": saturation.as_dict(),
        "overload": result,
        "ready_after": served_after == 200,
        "client_timeout_s": CLIENT_TIMEOUT_S,
        "max_connections": MAX_CONNECTIONS,
        "pinned": pinned,
        "server_side_seconds": server_side,
    }
    log(
        f"overload: offered {result['offered_per_s']:.0f}/s for {seconds:.0f} s: {result['statuses']}, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, RSS {result['rss_mb']}"
    )
    return overload
