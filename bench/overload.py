"""Overload: a real ingest process driven at three times its measured saturation answers only 202, 429 or 503.

One ingest process (uvicorn, real SQLite, a web source's API key), its saturation measured first with wrk's closed
loop, then an open-loop generator offers 3x that rate for a bounded time. Reported: every status and client error
counted, latency from the intended send time (p50/p99/max, so client-side queueing counts too), how many leads were
acknowledged per second while overloaded, and the server's RSS at start, middle and end of the overload.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from tests.support.stack import ADMIN, Stack

from bench.load import RawHttp, run_wrk
from bench.util import UVICORN_ARGS, log, percentile, rss_mb

ALLOWED = {202, 429, 503}
CLIENT_TIMEOUT_S = 10.0  # a request not answered by then counts as a hang
MAX_CONNECTIONS = 512


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
    rss: dict[str, float] = {"start": rss_mb(pid)}
    samples = [rss["start"]]
    total = int(rate * seconds)
    start = time.monotonic() + 0.1

    async def one(i: int, due: float) -> None:
        body = orjson.dumps({"email": f"x{run}-{i}@example.org", "first_name": "Over", "last_name": f"Load {i}"})
        try:
            status, _ = await asyncio.wait_for(client.post("/v1/leads", body), CLIENT_TIMEOUT_S)
        except TimeoutError:
            statuses["timeout"] += 1
            return
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            statuses[f"error:{type(exc).__name__}"] += 1
            return
        statuses[str(status)] += 1
        latencies.append((time.monotonic() - due) * 1000)

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
        "rss_mb": rss,
    }


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
        key = _source_key(ingest.url)
        run_wrk(f"{ingest.url}/v1/leads", token=key, seconds=2, connections=32)  # warm up
        saturation = run_wrk(f"{ingest.url}/v1/leads", token=key, seconds=5, connections=64)
        log(f"overload: saturation {saturation.accepted_per_s:.0f} leads/s (p99 {saturation.p99_ms:.0f} ms)")
        rate = 3 * saturation.accepted_per_s
        result: dict[str, Any] = {}

        def drive() -> None:
            # Its own thread and loop: the bench's callers are synchronous.
            result.update(asyncio.run(_overload(ingest.port, key, rate=rate, seconds=seconds, pid=pid)))

        thread = threading.Thread(target=drive, name="overload")
        thread.start()
        thread.join()
        served_after = httpx.get(f"{ingest.url}/readyz", timeout=10).status_code
    finally:
        stack.stop()
    overload = {
        "saturation": saturation.as_dict(),
        "overload": result,
        "ready_after": served_after == 200,
        "client_timeout_s": CLIENT_TIMEOUT_S,
        "max_connections": MAX_CONNECTIONS,
    }
    log(
        f"overload: offered {result['offered_per_s']:.0f}/s for {seconds:.0f} s: {result['statuses']}, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, RSS {result['rss_mb']}"
    )
    return overload
