"""Two routing processes on one PostgreSQL store and one consumer group; one is SIGKILLed mid-stream while
leads arrive and their short SLAs expire. Afterwards every lead has exactly one current assignment and every
missed SLA produced exactly one breach."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from common.envelope import Event
from tests.support.stack import Service, Stack, free_port, post_lead, read_topic, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

LEADS = 160  # enough for a kill mid-stream with breaches under way; more only queues on 2 cores
SLA_S = 3.0
POST_INTERVAL_S = 0.02
ENV = {
    "HANDOFF_SLA_MINUTES": json.dumps(dict.fromkeys("ABCD", SLA_S / 60)),
    "HANDOFF_SLA_BUSINESS_HOURS": "false",
    # Three misses (two reassignments, then the ladder's end): the team queue, whose SLA is an hour.
    "HANDOFF_ESCALATION_THEN": "queue",
}


def _query(url: str, sql: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql))).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_two_routing_processes_one_killed_mid_stream_assign_once_and_breach_once(
    make_stack: Callable[..., Stack], pg_database: str
) -> None:
    stack = make_stack(database_urls={"routing": pg_database}, env=ENV).start()
    first = stack["routing"]
    # The second process starts after the first has migrated the store (migrations are not run concurrently).
    second = Service("routing", free_port(), dict(first.env), stack.tmp / "routing-2.log")
    second.start()
    killed = threading.Event()
    try:
        lead_ids: list[str] = []
        errors: list[str] = []

        def post_all() -> None:
            with httpx.Client(timeout=30) as client:
                for i in range(LEADS):
                    if i == LEADS * 2 // 3:
                        # The last third waits for the kill, so the kill always lands mid-stream however fast
                        # the pipeline routes the rest (a fast one used to route every lead before any breach).
                        killed.wait(timeout=600)
                    time.sleep(POST_INTERVAL_S)
                    response = post_lead(client, stack["ingest"], sample_lead(i))
                    if response.status_code == 202:
                        lead_ids.append(response.json()["lead_id"])
                    else:
                        errors.append(response.text)

        poster = threading.Thread(target=post_all)
        poster.start()

        def routed_count() -> int:
            return int(_query(pg_database, "SELECT count(*) FROM leads")[0][0])

        def breaches_so_far() -> int:
            return int(_query(pg_database, "SELECT count(*) FROM timeline WHERE kind = 'sla_breached'")[0][0])

        # Mid-stream: leads still arriving, and SLAs already breaching and escalating.
        wait_until(
            lambda: routed_count() >= LEADS // 3 and breaches_so_far() >= 20,
            timeout=480,
            interval=0.5,
            what="a third of the leads routed and breaches under way",
        )
        at_kill = routed_count(), breaches_so_far()
        first.kill(signal.SIGKILL)
        killed.set()
        poster.join()
        assert not errors and len(lead_ids) == LEADS
        assert at_kill[0] < LEADS, "the kill came after the stream had ended"

        def settled() -> bool:  # every lead at the end of its ladder: three misses, then the team queue
            rows = _query(pg_database, "SELECT count(*) FROM assignments WHERE ended_at IS NULL AND outcome = 'queued'")
            return int(rows[0][0]) == LEADS

        started = time.monotonic()
        wait_until(settled, timeout=600, interval=1.0, what="every lead through its escalation ladder")
        settle_s = time.monotonic() - started
        wait_until(
            lambda: httpx.get(f"{second.url}/readyz").json()["checks"].get("outbox_backlog") == 0,
            timeout=120,
            interval=0.5,
            what="the outbox drained",
        )

        # Exactly one current assignment per lead (the partial unique index allows at most one; none missing).
        current = dict(
            _query(pg_database, "SELECT lead_id, count(*) FROM assignments WHERE ended_at IS NULL GROUP BY lead_id")
        )
        assert set(current) == set(lead_ids) and set(current.values()) == {1}

        missed = {
            (lead, aid)
            for lead, aid in _query(pg_database, "SELECT lead_id, id FROM assignments WHERE end_reason = 'sla_breach'")
        }
        assert len(missed) == 3 * LEADS
        fired = Counter(
            _query(
                pg_database,
                "SELECT assignment_id FROM sla_timers WHERE kind = 'breach' AND fired_at IS NOT NULL AND NOT cancelled",
            )
        )
        assert sum(fired.values()) == len(missed) and set(fired.values()) == {1}

        records = asyncio.run(read_topic(stack.bootstrap, stack.topic("leads.sla.v1"), timeout=30))
        events = [Event.from_record(r.key, r.value, r.headers) for r in records]
        breach_ids: dict[tuple[str, int], set[str]] = {}
        for event in events:
            if event.type == "lead.sla_breached":
                breach_ids.setdefault((event.subject, event.data["assignment_id"]), set()).add(event.id)
        assert set(breach_ids) == missed, "a breach for every missed SLA and for nothing else"
        assert all(len(ids) == 1 for ids in breach_ids.values()), "one breach (one event id) per missed SLA"
        redelivered = sum(1 for e in events if e.type == "lead.sla_breached") - len(breach_ids)

        # No lost rotation updates between the two processes: the reps' shares stay even.
        shares = dict(
            _query(pg_database, "SELECT rep_id, count(*) FROM assignments WHERE rep_id IS NOT NULL GROUP BY rep_id")
        )
        assert set(shares) == {"r1", "r2", "r3", "r4"} and max(shares.values()) - min(shares.values()) <= LEADS // 20

        late = sorted(
            int(row[0])
            for row in _query(pg_database, "SELECT (detail->>'late_ms')::int FROM timeline WHERE kind = 'sla_breached'")
        )
        p50, p99 = late[len(late) // 2], late[int(len(late) * 0.99)]
        print(
            f"\n{LEADS} leads, killed at {at_kill[0]} routed / {at_kill[1]} breaches; settled {settle_s:.0f} s after;"
            f" {len(late)} breaches late p50 {p50} ms, p99 {p99} ms, max {late[-1]} ms;"
            f" {redelivered} breach records re-published by the relay (same event id); rep shares {shares}"
        )
    finally:
        killed.set()  # a poster still waiting for the kill (the test failed before it) ends instead of hanging
        second.stop()
