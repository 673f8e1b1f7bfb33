"""A flood of leads on a real ingest process: every answer is 202, 429 or 503, none hangs, memory stays flat.

One ingest process (uvicorn, real SQLite, the real broker) with a small in-flight limit and a small writer queue,
so saturation is cheap to reach on a shared machine. No latency is asserted (that belongs to bench/overload.py):
only that overload is refused in a form a client can act on (503 with Retry-After) and that the process's memory
after the flood is within a generous bound of before.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.stack import ADMIN, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

FLOOD = 1200
CONCURRENCY = 96
CLIENT_TIMEOUT_S = 20.0  # far above any answer the limits allow: hitting it means a hang


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _flood(url: str, key: str, count: int, run: str) -> collections.Counter[str]:
    answers: collections.Counter[str] = collections.Counter()
    todo = iter(range(count))
    # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout: reusing one the server is closing
    # at that instant is a client-side race (a ReadError on a POST httpx will not retry), not an answer.
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY, keepalive_expiry=1.0)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S, limits=limits) as client:

        async def worker() -> None:
            for i in todo:
                try:
                    response = await client.post(
                        "/v1/leads",
                        json={"email": f"flood-{run}-{i}@example.org", "first_name": "Flood"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                except httpx.HTTPError as exc:
                    answers[f"client error {type(exc).__name__}"] += 1
                    continue
                answers[str(response.status_code)] += 1
                if response.status_code == 503:
                    assert response.headers.get("retry-after"), response.text

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return answers


def test_a_flood_gets_only_202_429_or_503_and_memory_stays_flat(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(
        env={
            "HANDOFF_MAX_INFLIGHT_LEADS": "24",
            "HANDOFF_WRITER_MAX_BATCH": "2",
            "HANDOFF_WRITER_MAX_PENDING": "4",
            "HANDOFF_WRITER_ENQUEUE_TIMEOUT_S": "0.05",
            "HANDOFF_LOG_LEVEL": "WARNING",
        }
    )
    ingest = stack["ingest"]
    ingest.start()
    assert ingest.process is not None
    created = httpx.post(f"{ingest.url}/v1/sources", json={"kind": "web", "name": "flood"}, headers=ADMIN, timeout=10)
    key = created.json()["api_key"]
    run = uuid.uuid4().hex[:8]

    warm = asyncio.run(_flood(ingest.url, key, 200, run + "w"))  # imports, caches, pools: grown before measuring
    before = _rss_mb(ingest.process.pid)
    answers = asyncio.run(_flood(ingest.url, key, FLOOD, run))
    after = _rss_mb(ingest.process.pid)

    print(f"flood answers {dict(answers)} (warm-up {dict(warm)}); RSS {before:.0f} -> {after:.0f} MB")
    assert set(answers) <= {"202", "429", "503"}, answers
    assert sum(answers.values()) == FLOOD
    assert after <= before + 100, (before, after)
    # Still serving afterwards, and nothing it refused was an unexpected error.
    bearer = {"Authorization": f"Bearer {key}"}
    again = httpx.post(f"{ingest.url}/v1/leads", json={"email": f"a-{run}@example.org"}, headers=bearer, timeout=20)
    assert again.status_code == 202
    assert "Traceback" not in ingest.logs() and "unhandled_error" not in ingest.logs()
