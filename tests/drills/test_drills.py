"""Fault drills: real faults while leads flow, then the promises checked as invariants and printed as a table.

`make test` runs the short form (each fault once); `make drill` (`--drill-full`) runs more rounds, longer, with two
routing processes. The stores are on a PostgreSQL cluster of the drill's own (port 5433), so restarting it does not
disturb anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from common.envelope import Event
from common.topics import LEADS_ASSIGNED, LEADS_ERASED, LEADS_OUTCOMES, LEADS_RECEIVED, LEADS_SCORED, LEADS_SLA
from tests.e2e.conftest import EVEN_RULES, EVEN_SEED
from tests.support.receiver import WebhookReceiver
from tests.support.stack import ADMIN, ROOT, Broker, Service, Stack, free_port, read_topic, sample_lead, wait_until

pytestmark = [pytest.mark.drill, pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

DRILL_PGPORT = int(os.environ.get("HANDOFF_DRILL_PGPORT", "5433"))
SLA_SECONDS = 6
SHORT_SLA = {
    "HANDOFF_SLA_MINUTES": '{"A": 0.1, "B": 0.1, "C": 0.1, "D": 0.1}',
    "HANDOFF_SLA_BUSINESS_HOURS": "false",
    "HANDOFF_SLA_WARN_FRACTIONS": "[]",
    "HANDOFF_ESCALATION_MAX_REASSIGNMENTS": "2",
    "HANDOFF_ESCALATION_THEN": "queue",
    # A receiver that is down for a few seconds must get its deliveries within the drill, not after 5 minutes.
    "HANDOFF_WEBHOOK_RETRY_SCHEDULE_S": "[1, 2, 2, 2, 2, 2, 2, 2, 2, 2]",
    "HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true",
}
ALL_TOPICS = (LEADS_RECEIVED, LEADS_ERASED, LEADS_SCORED, LEADS_ASSIGNED, LEADS_SLA, LEADS_OUTCOMES)


def _pg(*args: str) -> None:
    env = dict(os.environ, PGPORT=str(DRILL_PGPORT))
    subprocess.run([ROOT / "scripts/postgres.sh", *args], env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def drill_postgres() -> Iterator[str]:
    _pg("ensure")
    yield f"postgresql://handoff:handoff@127.0.0.1:{DRILL_PGPORT}/handoff"


def _create_databases(admin_url: str, names: list[str]) -> None:
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())


@dataclass
class Invariant:
    name: str
    holds: bool
    detail: str


@dataclass
class DrillRun:
    stack: Stack
    receiver: WebhookReceiver = field(default_factory=WebhookReceiver)
    extra_routing: list[Service] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    refused: int = 0
    faults: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def stream(self, rate_per_s: float) -> threading.Thread:
        """A steady stream of leads; only 2xx answers count as accepted (a refused post is the client's to retry)."""

        def post() -> None:
            with httpx.Client(timeout=5) as client:
                i = 0
                next_at = time.monotonic()
                while not self._stop.is_set():
                    i += 1
                    try:
                        response = client.post(
                            f"{self.stack['ingest'].url}/v1/leads", json=sample_lead(i), headers=ADMIN
                        )
                        if response.status_code == 202:
                            self.acked.append(response.json()["lead_id"])
                        else:
                            self.refused += 1
                    except httpx.HTTPError:
                        self.refused += 1
                    next_at += 1 / rate_per_s
                    time.sleep(max(0.0, next_at - time.monotonic()))

        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        return thread

    def stop_stream(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join()


def _kill_and_restart(run: DrillRun, service: Service, down_s: float) -> None:
    run.faults.append(f"SIGKILL {service.name} (down {down_s:.1f}s)")
    service.kill(signal.SIGKILL)
    time.sleep(down_s)
    service.start(wait=False)


def _routing_record(client: httpx.Client, stack: Stack, lead_id: str) -> dict[str, Any] | None:
    response = client.get(f"{stack['routing'].url}/v1/leads/{lead_id}", headers=ADMIN)
    return response.json() if response.status_code == 200 else None


def _wait_quiet(run: DrillRun, timeout: float) -> dict[str, dict[str, Any]]:
    """Until every accepted lead has run its SLA ladder to the team queue (no timer left to fire soon)."""
    records: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=10) as client:

        def settled() -> bool:
            for lead_id in run.acked:
                record = records.get(lead_id)
                if record is None or (record["current_assignment"] or {}).get("outcome") != "queued":
                    fresh = _routing_record(client, run.stack, lead_id)
                    if fresh is None:
                        return False
                    records[lead_id] = fresh
                    if (fresh["current_assignment"] or {}).get("outcome") != "queued":
                        return False
            return True

        try:
            wait_until(settled, timeout=timeout, interval=1.0, what="every lead escalated to the queue")
        except AssertionError:
            states = Counter(
                (records[i]["current_assignment"] or {}).get("outcome", "none") if i in records else "not routed"
                for i in run.acked
            )
            unrouted = [i for i in run.acked if i not in records][:5]
            scored = {
                i: client.get(f"{run.stack['scoring'].url}/v1/scores/{i}", headers=ADMIN).status_code for i in unrouted
            }
            raise AssertionError(f"not quiet: {dict(states)}; unrouted sample scored? {scored}") from None
    return records


async def _events(stack: Stack, topic: str) -> list[Event]:
    return [Event.from_record(r.key, r.value, r.headers) for r in await read_topic(stack.bootstrap, stack.topic(topic))]


def _end_offsets(stack: Stack) -> dict[str, int]:
    async def ends() -> dict[str, int]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap)
        await consumer.start()
        try:
            totals = {}
            for topic in ALL_TOPICS:
                name = stack.topic(topic)
                partitions = [TopicPartition(name, p) for p in (consumer.partitions_for_topic(name) or set())]
                if not partitions:
                    await consumer._client.force_metadata_update()
                    partitions = [TopicPartition(name, p) for p in (consumer.partitions_for_topic(name) or set())]
                totals[topic] = sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
            return totals
        finally:
            await consumer.stop()

    return asyncio.run(ends())


def _check(run: DrillRun, records: dict[str, dict[str, Any]]) -> list[Invariant]:
    stack = run.stack
    invariants: list[Invariant] = []
    with httpx.Client(timeout=10) as client:
        missing_ingest = [
            i for i in run.acked if client.get(f"{stack['ingest'].url}/v1/leads/{i}", headers=ADMIN).status_code != 200
        ]
        missing_score = [
            i
            for i in run.acked
            if client.get(f"{stack['scoring'].url}/v1/scores/{i}", headers=ADMIN).status_code != 200
        ]
    invariants.append(Invariant("every 2xx lead is stored", not missing_ingest, f"{len(missing_ingest)} missing"))
    invariants.append(Invariant("every 2xx lead is scored", not missing_score, f"{len(missing_score)} missing"))

    bad_current, bad_history = [], []
    for lead_id in run.acked:
        record = records[lead_id]
        current = [a for a in record["assignments"] if a["ended_at"] is None]
        if len(current) != 1:
            bad_current.append(lead_id)
        # Reassignments happen only through SLA escalation, and each is recorded in the timeline.
        ended = [a for a in record["assignments"] if a["ended_at"] is not None]
        reassigned = [t for t in record["timeline"] if t["kind"] == "reassigned"]
        if any(a["end_reason"] != "sla_breach" for a in ended) or len(reassigned) != len(ended):
            bad_history.append(lead_id)
    invariants.append(
        Invariant("every lead has exactly one current assignment", not bad_current, f"{len(bad_current)} violate")
    )
    invariants.append(
        Invariant("reassignments only by SLA escalation, recorded", not bad_history, f"{len(bad_history)} violate")
    )

    received = Counter(e.subject for e in asyncio.run(_events(stack, LEADS_RECEIVED)))
    scored = Counter(e.subject for e in asyncio.run(_events(stack, LEADS_SCORED)))
    assigned = Counter(e.subject for e in asyncio.run(_events(stack, LEADS_ASSIGNED)) if e.type == "lead.assigned")
    once = [i for i in run.acked if received[i] < 1 or scored[i] < 1 or assigned[i] < 1]
    invariants.append(Invariant("every lead's events reached Kafka", not once, f"{len(once)} missing"))

    assignment_events = [
        e for e in asyncio.run(_events(stack, LEADS_ASSIGNED)) if e.type in ("lead.assigned", "lead.reassigned")
    ]

    def undelivered_ids() -> list[str]:
        delivered_now = run.receiver.by_id()
        return [e.id for e in assignment_events if e.id not in delivered_now]

    # Deliveries retry on their own schedule: give the last retries time to land.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not undelivered_ids(), timeout=60, interval=1.0, what="deliveries")
    delivered = run.receiver.by_id()
    undelivered = undelivered_ids()
    mismatched = [
        wid
        for wid, ds in delivered.items()
        if any(orjson.loads(d.body)["data"]["lead_id"] != ds[0].json()["data"]["lead_id"] for d in ds)
    ]
    invariants.append(
        Invariant(
            "every assignment reached the receiver, one webhook-id per event",
            not undelivered and not mismatched and len(assignment_events) > 0,
            # Records, not events: the relay may publish an event twice after a crash (one id, one delivery).
            f"{len({e.id for e in assignment_events})} events in {len(assignment_events)} records, "
            f"{len(undelivered)} undelivered, "
            f"{sum(len(d) for d in delivered.values())} deliveries",
        )
    )

    breaches: dict[int, int] = defaultdict(int)
    # Count distinct breach *decisions*: the same event may be re-published after a crash (same id) and is one.
    seen_ids: set[str] = set()
    for event in asyncio.run(_events(stack, LEADS_SLA)):
        if event.type == "lead.sla_breached" and event.id not in seen_ids:
            seen_ids.add(event.id)
            breaches[event.data["assignment_id"]] += 1
    missed = [
        a["assignment_id"]
        for lead_id in run.acked
        for a in records[lead_id]["assignments"]
        if a["outcome"] == "assigned" and a["sla"] is not None
    ]
    wrong = [a for a in missed if breaches.get(a, 0) != 1]
    invariants.append(
        Invariant(
            "every missed SLA produced exactly one breach",
            not wrong and len(missed) > 0,
            f"{len(missed)} missed SLAs, {len(wrong)} without exactly one breach",
        )
    )
    return invariants


def _replay_changes_nothing(run: DrillRun, records: dict[str, dict[str, Any]]) -> Invariant:
    """Restart the consumers under a new group: they read every topic from the start and must change nothing."""
    stack = run.stack
    before = _end_offsets(stack)
    group = f"{stack.namespace}replay-{int(time.time())}"
    for name in ("scoring", "routing"):
        stack[name].stop()
        stack[name].env["HANDOFF_CONSUMER_GROUP_OVERRIDE"] = f"{group}-{name}"
        stack[name].start(wait=False)
    for routing in run.extra_routing:
        routing.stop()
    for name in ("scoring", "routing"):
        stack[name].wait_ready(timeout=120)

    def caught_up() -> bool:
        checks = [httpx.get(f"{stack[n].url}/readyz", timeout=2).json()["checks"] for n in ("scoring", "routing")]
        return all(c["consumer"]["running"] and c["consumer"]["lag"] == 0 for c in checks)

    wait_until(caught_up, timeout=180, interval=1.0, what="replaying consumers caught up")
    time.sleep(2)  # anything a replay wrongly emitted would be in the outboxes by now
    after = _end_offsets(stack)
    changed = []
    with httpx.Client(timeout=10) as client:
        for lead_id in run.acked:
            fresh = _routing_record(client, stack, lead_id)
            if fresh is None or len(fresh["assignments"]) != len(records[lead_id]["assignments"]):
                changed.append(lead_id)
    holds = not changed and before == after
    return Invariant(
        "replaying every topic from the start changes nothing",
        holds,
        f"{len(changed)} leads changed; topic ends before {sum(before.values())}, after {sum(after.values())}",
    )


def _print_table(run: DrillRun, invariants: list[Invariant]) -> None:
    print("\nfaults:", "; ".join(run.faults))
    print(f"leads accepted: {len(run.acked)}, refused while a process was down: {run.refused}")
    print(f"| {'invariant':<55} | holds | detail")
    print(f"|{'-' * 57}|-------|{'-' * 40}")
    for inv in invariants:
        print(f"| {inv.name:<55} | {'yes' if inv.holds else 'NO ':<5} | {inv.detail}")


@pytest.fixture
def drill_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the drill's own: stopping it must not disturb anything else."""
    broker = Broker(port=free_port(), data_dir=tmp_path / "kafka")
    broker.start()
    yield broker
    broker.stop()


def test_faults_while_leads_flow_break_no_promise(
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    drill_postgres: str,
    drill_broker: Broker,
    tmp_path: Path,
) -> None:
    kafka_bootstrap = drill_broker.bootstrap
    full = bool(request.config.getoption("--drill-full"))
    rounds = 3 if full else 1
    quiet_timeout = float(os.environ.get("HANDOFF_DRILL_QUIET_S", "300"))
    suffix = f"{os.getpid()}_{int(time.time())}"
    names = {s: f"drill_{s}_{suffix}" for s in ("ingest", "scoring", "routing")}
    _create_databases(drill_postgres, list(names.values()))
    base = drill_postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    stack = Stack(
        tmp_path / "stack",
        kafka_bootstrap,
        database_urls={s: f"{base}/{n}" for s, n in names.items()},
        seed=EVEN_SEED,
        rules=EVEN_RULES,
        env=SHORT_SLA,
    )
    run = DrillRun(stack)
    rng = random.Random(int(time.time()))
    try:
        stack.start()
        run.receiver.start()
        response = httpx.post(
            f"{stack['routing'].url}/v1/webhook-endpoints",
            json={"url": run.receiver.url, "event_types": ["lead.assigned", "lead.reassigned"], "description": "CRM"},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
        if full:
            second = Service("routing", free_port(), dict(stack.env), tmp_path / "routing-2.log")
            second.start()
            run.extra_routing.append(second)
        stream = run.stream(rate_per_s=10)
        wait_until(lambda: len(run.acked) >= 20, timeout=60, what="leads flowing")
        for _ in range(rounds):
            for name in ("scoring", "routing", "ingest"):
                time.sleep(rng.uniform(1, 4))
                _kill_and_restart(run, stack[name], rng.uniform(0.5, 2.5))
            if run.extra_routing:
                time.sleep(rng.uniform(1, 3))
                _kill_and_restart(run, run.extra_routing[0], rng.uniform(0.5, 2))
            time.sleep(rng.uniform(1, 3))
            run.faults.append("broker stop/start")
            drill_broker.stop()
            time.sleep(rng.uniform(2, 5))
            drill_broker.start()
            time.sleep(rng.uniform(1, 3))
            run.faults.append("PostgreSQL restart")
            _pg("restart")
            time.sleep(rng.uniform(1, 3))
            run.faults.append("webhook receiver down 5s")
            run.receiver.stop()
            time.sleep(5)
            run.receiver.start()
        time.sleep(3)
        run.stop_stream(stream)
        for service in (*stack.services.values(), *run.extra_routing):
            service.wait_ready(timeout=120)

        records = _wait_quiet(run, timeout=quiet_timeout + 5 * SLA_SECONDS)
        invariants = _check(run, records)
        invariants.append(_replay_changes_nothing(run, records))
        with capsys.disabled():  # the table is the drill's report: shown even when pytest captures output
            _print_table(run, invariants)
        assert all(inv.holds for inv in invariants), [inv for inv in invariants if not inv.holds]
    finally:
        run._stop.set()
        run.receiver.stop()
        for service in run.extra_routing:
            service.stop()
        stack.stop()
