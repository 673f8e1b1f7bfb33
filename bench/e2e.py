"""End to end: leads/s and open-loop latency from the HTTP request to the assignment, against a bare Kafka chain."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

import httpx
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from tests.e2e.conftest import EVEN_RULES, EVEN_SEED
from tests.support.stack import ADMIN, ADMIN_TOKEN, ROOT, Service, Stack, free_port, read_topic

from bench import scrape
from bench.chain import Stage, create_topics
from bench.durable import WARM, floor_chain
from bench.ingest import source_key
from bench.load import RawHttp, Sent, closed_loop, open_loop
from bench.util import (
    UVICORN_ARGS,
    CpuMeter,
    broker_pid,
    cpu_per_lead,
    log,
    median,
    median_cpu,
    ratio,
    summarize,
)
from common.topics import LEADS_ASSIGNED, LEADS_RECEIVED, LEADS_SCORED

PARTITIONS = 3  # what tests.support.stack.Stack gives every topic
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"}
# Ingest's port -> a web source's API key: leads are posted as a form back end posts them (the key looked up on every
# request), not with the admin token; the bare endpoint ignores the header.
SOURCE_KEYS: dict[int, str] = {}


class Arrivals(Protocol):
    def wait_count(self, n: int, timeout: float, keys: set[str] | None = None) -> bool: ...
    def arrival(self, key: str) -> float | None: ...


class KafkaArrivals:
    """The lead.assigned records on Kafka, seen by a bare consumer in its own process."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.where = "lead.assigned record consumed from Kafka"

    def wait_count(self, n: int, timeout: float, keys: set[str] | None = None) -> bool:
        return self.stage.wait_count(n, timeout, keys)

    def arrival(self, key: str) -> float | None:
        found = self.stage.arrivals.get(key)
        return found[0] if found else None


class WebhookArrivals:
    """Assignment webhooks at the local receiver (keyed by the lead id in the body)."""

    def __init__(self, receiver: Service) -> None:
        self.receiver = receiver
        self.where = "assignment webhook at a local receiver"
        self.arrivals: dict[str, float] = {}

    def _refresh(self) -> None:
        self.arrivals = httpx.get(f"{self.receiver.url}/_stats", timeout=10).json()["arrivals"]

    def wait_count(self, n: int, timeout: float, keys: set[str] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._refresh()
            have = len(self.arrivals) if keys is None else sum(1 for k in keys if k in self.arrivals)
            if have >= n:
                return True
            time.sleep(0.25)
        return False

    def arrival(self, key: str) -> float | None:
        return self.arrivals.get(key)


def webhooks_available(routing: Service) -> bool:
    """Whether routing serves `POST /v1/webhook-endpoints` yet (another change is adding it)."""
    try:
        paths = httpx.get(f"{routing.url}/openapi.json", timeout=10).json().get("paths", {})
    except (httpx.HTTPError, ValueError):
        return False
    return "post" in paths.get("/v1/webhook-endpoints", {})


def register_webhook(routing: Service, url: str) -> None:
    response = httpx.post(
        f"{routing.url}/v1/webhook-endpoints",
        json={"url": url, "event_types": ["lead.assigned"], "description": "bench receiver"},
        headers=ADMIN,
        timeout=10,
    )
    response.raise_for_status()


def _http(service: Service, connections: int) -> RawHttp:
    key = SOURCE_KEYS.get(service.port)
    headers = dict(HEADERS, Authorization=f"Bearer {key}") if key else HEADERS
    return RawHttp("127.0.0.1", service.port, max_connections=connections, headers=headers)


async def closed_load(service: Service, seconds: float, concurrency: int) -> tuple[list[Sent], float]:
    client = _http(service, concurrency)
    try:
        return await closed_loop(client, seconds=seconds, concurrency=concurrency)
    finally:
        await client.close()


async def open_load(service: Service, rate: float, seconds: float) -> tuple[list[Sent], float]:
    client = _http(service, 256)
    try:
        return await open_loop(client, rate=rate, seconds=seconds)
    finally:
        await client.close()


def _handoff_max(
    ingest: Service, arrivals: Arrivals, *, seconds: float, wait_s: float, pids: dict[str, int | None]
) -> dict[str, Any]:
    # The generator is this process (not its tree: the services are its children, measured one by one).
    meter = CpuMeter(pids)
    meter.add("generator", os.getpid(), tree=False)
    sent, start = uvloop.run(closed_load(ingest, seconds, 32))
    ids = {s.lead_id for s in sent if s.status == 202 and s.lead_id}
    complete = arrivals.wait_count(len(ids), wait_s, ids)
    times = [t for t in (arrivals.arrival(k) for k in ids) if t is not None]
    answered = [s.answered for s in sent if s.answered]
    result: dict[str, Any] = {
        "accepted": len(ids),
        "assigned": len(times),
        "complete": complete,
        "accepted_per_s": len(ids) / (max(answered) - start) if answered else None,
        "assigned_per_s": len(times) / (max(times) - start) if times else None,
    }
    result["cpu_s"] = meter.stop()
    # Only a complete run gives a cost per lead: with leads still in flight, the upstream stages' CPU would be
    # divided among the few that made it through.
    result["cpu_ms_per_lead"] = cpu_per_lead(result["cpu_s"], len(times) if complete else 0)
    log(f"e2e max: {result['assigned_per_s'] or 0:.0f} leads/s assigned ({len(times)}/{len(ids)})")
    return result


def _chain(bootstrap: str, sizes: list[int], *, n: int, rate: float = 0.0, wait_s: float = 120) -> dict[str, Any]:
    """source -> forward -> forward -> observe over 3 fresh topics: the same hops as ingest -> scoring -> routing."""
    ns = f"bench.chain.{uuid.uuid4().hex[:8]}."
    topics = [f"{ns}{name}" for name in ("received", "scored", "assigned")]
    create_topics(bootstrap, topics, PARTITIONS)
    common = ["--bootstrap", bootstrap, "--n", str(n + WARM)]
    observer = Stage("observe", "--bootstrap", bootstrap, "--in", topics[2])
    hop1 = Stage(
        "forward", *common, "--in", topics[0], "--out", topics[1], "--size", str(sizes[1]), "--group", f"{ns}1"
    )
    hop2 = Stage(
        "forward", *common, "--in", topics[1], "--out", topics[2], "--size", str(sizes[2]), "--group", f"{ns}2"
    )
    meter = CpuMeter()
    try:
        for stage in (observer, hop1, hop2):
            stage.wait_ready()
        # The source's warm-up records (t0 `-`, left out of every figure) through the chain first: the measured ones
        # then leave a warm producer into consumers that have fetched and forwarded (bench.chain `--warm`).
        source = Stage(
            "source",
            "--bootstrap",
            bootstrap,
            "--out",
            topics[0],
            "--size",
            str(sizes[0]),
            "--n",
            str(n),
            *("--rate", str(rate), "--warm", str(WARM)),
        )
        source.wait_ready()
        observer.wait_count(WARM, wait_s)
        meter.add("hop1", hop1.process.pid)
        meter.add("hop2", hop2.process.pid)
        meter.add("broker", broker_pid(bootstrap))
        meter.add("source", source.process.pid)
        source.go()
        started = _finish_sampled(source, meter)["start"]
        complete = observer.wait_count(n + WARM, wait_s)
        arrivals = [(a, t0) for a, t0 in observer.arrivals.values() if t0 is not None]
        cpu_s = meter.stop()
    finally:
        for stage in (hop1, hop2, observer):
            stage.stop()
    last = max((a for a, _ in arrivals), default=None)
    return {
        "n": n,
        "delivered": len(arrivals),
        "complete": complete,
        "per_s": len(arrivals) / (last - started) if last else None,
        "latency_ms": summarize([(a - t0) * 1000 for a, t0 in arrivals if t0 is not None]),
        "cpu_s": cpu_s,
        "cpu_ms_per_lead": cpu_per_lead(cpu_s, len(arrivals)),
    }


def _finish_sampled(stage: Stage, meter: CpuMeter) -> dict[str, Any]:
    """Wait for a stage that ends by itself and read its CPU before it is reaped (then /proc forgets it)."""
    os.waitid(os.P_PID, stage.process.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie: /proc still has it
    meter.sample()
    return stage.finish()


def _pair(summary: dict[str, Any]) -> str:
    return f"{summary['p50'] or 0:.1f} / {summary['p99'] or 0:.1f} ms"


def _sizes(bootstrap: str, stack: Stack) -> list[int]:
    """Mean record value size on each of Handoff's three topics, so the bare chain carries the same bytes."""
    sizes = []
    for topic in (LEADS_RECEIVED, LEADS_SCORED, LEADS_ASSIGNED):
        records = asyncio.run(read_topic(bootstrap, stack.topic(topic), timeout=10))
        values = [len(r.value) for r in records[:2000] if r.value]
        sizes.append(round(sum(values) / len(values)) if values else 1024)
    return sizes


HOPS = (LEADS_RECEIVED, LEADS_SCORED, LEADS_ASSIGNED)


async def _end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return await consumer.end_offsets([TopicPartition(t, p) for t in topics for p in range(PARTITIONS)])
    finally:
        await consumer.stop()


async def _created_times(
    bootstrap: str, start: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> dict[str, dict[str, float]]:
    """Per topic, each key's first record's CreateTime (s) between the two offsets: when its relay sent it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, dict[str, float]] = {}
    try:
        wanted = [tp for tp in start if end.get(tp, 0) > start[tp]]
        consumer.assign(wanted)
        for tp in wanted:
            consumer.seek(tp, start[tp])
        left, deadline = set(wanted), time.monotonic() + 30
        while left and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                times = found.setdefault(tp.topic, {})
                for record in records:
                    if record.key:
                        times.setdefault(record.key.decode(), record.timestamp / 1000)
                if records and records[-1].offset + 1 >= end[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return found


def _hops(
    sent: list[Sent], arrivals: Arrivals, created: dict[str, dict[str, float]], topics: list[str]
) -> dict[str, Any]:
    """Where a lead's time goes, from the record timestamps (CreateTime: the producer's send() in each relay):
    202 -> lead.received sent (ingest's relay), -> lead.scored sent (scoring's consumer and relay), -> the
    webhook (routing's consumer and sender); lead.assigned's send (routing's relay) for reference."""
    received, scored, assigned = (created.get(t, {}) for t in topics)
    hops: dict[str, list[float]] = {"202_to_received": [], "received_to_scored": [], "scored_to_webhook": []}
    hops["scored_to_assigned"] = []
    for s in sent:
        key = s.lead_id
        if not key or not s.answered or key not in received:
            continue
        hops["202_to_received"].append((received[key] - s.answered) * 1000)
        if key in scored:
            hops["received_to_scored"].append((scored[key] - received[key]) * 1000)
            if (hook := arrivals.arrival(key)) is not None:
                hops["scored_to_webhook"].append((hook - scored[key]) * 1000)
            if key in assigned:
                hops["scored_to_assigned"].append((assigned[key] - scored[key]) * 1000)
    return {name: summarize(values) for name, values in hops.items()}


def _latency(
    ingest: Service, arrivals: Arrivals, *, rate: float, seconds: float, wait_s: float, stack: Stack | None = None
) -> dict[str, Any]:
    topics = [stack.topic(t) for t in HOPS] if stack is not None else []
    before = asyncio.run(_end_offsets(stack.bootstrap, topics)) if stack is not None else {}
    consumers = ("scoring", "routing") if stack is not None else ()
    polls_before = {name: scrape.sample(stack[name].url) for name in consumers} if stack is not None else {}
    began = time.monotonic()
    sent, _start = uvloop.run(open_load(ingest, rate, seconds))
    ids = {s.lead_id for s in sent if s.status == 202 and s.lead_id}
    complete = arrivals.wait_count(len(ids), wait_s, ids)
    polls_after = {name: scrape.sample(stack[name].url) for name in consumers} if stack is not None else {}
    took = time.monotonic() - began
    to_202 = [(s.answered - s.intended) * 1000 for s in sent if s.answered and s.status == 202]
    to_assigned = []
    for s in sent:
        t = arrivals.arrival(s.lead_id) if s.lead_id else None
        if t is not None and s.answered:
            to_assigned.append((t - s.answered) * 1000)
    result: dict[str, Any] = {
        "rate": round(rate, 1),
        "sent": len(sent),
        "accepted": len(ids),
        "assigned": len(to_assigned),
        "complete": complete,
        "http_to_202_ms": summarize(to_202),
        "accepted_to_assigned_ms": summarize(to_assigned),
        "load_average": os.getloadavg()[0],
    }
    if stack is not None:
        after = asyncio.run(_end_offsets(stack.bootstrap, topics))
        result["hops_ms"] = _hops(sent, arrivals, asyncio.run(_created_times(stack.bootstrap, before, after)), topics)
        result["polls"] = {name: scrape.difference(polls_before[name], polls_after[name], took) for name in consumers}
    return result


def _bare_latency(bare: Service, *, rate: float, seconds: float) -> dict[str, Any]:
    sent, _start = uvloop.run(open_load(bare, rate, seconds))
    to_202 = [(s.answered - s.intended) * 1000 for s in sent if s.answered and s.status == 202]
    return {"rate": round(rate, 1), "sent": len(sent), "http_to_202_ms": summarize(to_202)}


TARGET_RATE = 500.0  # issue 13's latency target is set at 500 leads/s


def _levels(
    stack: Stack,
    arrivals: Arrivals,
    bare: Service,
    floor_receiver: Service,
    sizes: list[int],
    tmp: Path,
    seconds: float,
    wait_s: float,
    throughput: dict[str, Any],
) -> list[dict[str, Any]]:
    """Latency at 10%, 50% and 80% of Handoff's maximum and at exactly 500/s, for Handoff, the bare chain and the
    floor; a side whose measured maximum is below a level's rate skips it (`{"rate", "skipped"}`)."""
    best = throughput["handoff_per_s"]
    rates = sorted({*(max(1.0, best * f) for f in (0.1, 0.5, 0.8)), TARGET_RATE})
    levels = []
    for rate in rates:
        n = max(1, int(rate * seconds))
        level: dict[str, Any] = {"fraction": rate / best, "rate": round(rate, 1)}
        if rate > best:
            level["handoff"] = {"rate": round(rate, 1), "skipped": f"above Handoff's max {best:.0f}/s"}
        else:
            level["handoff"] = _latency(
                stack["ingest"], arrivals, rate=rate, seconds=seconds, wait_s=wait_s, stack=stack
            )
        for side, most in (("chain", throughput["chain_per_s"]), ("floor", throughput["floor_per_s"])):
            if rate > (most or 0):
                # An empty latency summary beside the reason: the report's rows read the chain's.
                skipped = f"above the {side}'s max {most or 0:.0f}/s"
                level[side] = {"rate": round(rate, 1), "skipped": skipped, "latency_ms": summarize([])}
            elif side == "chain":
                level[side] = _chain(stack.bootstrap, sizes, n=n, rate=rate, wait_s=wait_s)
            else:
                level[side] = floor_chain(
                    stack.bootstrap, sizes, floor_receiver, tmp / "floor", n=n, rate=rate, wait_s=wait_s
                )
        level["bare_http"] = _bare_latency(bare, rate=rate, seconds=seconds)
        level["load_average"] = os.getloadavg()[0]
        levels.append(level)
        h = level["handoff"]
        pairs = {side: level[side].get("skipped") or _pair(level[side]["latency_ms"]) for side in ("chain", "floor")}
        log(
            f"e2e latency at {rate:.0f}/s: 202->assigned p50 / p99 "
            f"{_pair(h['accepted_to_assigned_ms']) if 'skipped' not in h else h['skipped']}; "
            f"bare chain {pairs.get('chain', '-')}; durable floor {pairs.get('floor', '-')}"
        )
        if hops := h.get("hops_ms"):
            log(
                "  per hop p50 (202->received / ->scored / ->webhook / scored->assigned) "
                + " / ".join(f"{v['p50'] or 0:.0f}" for v in hops.values())
                + " ms"
            )
        if polls := h.get("polls"):
            log("  " + "; ".join(scrape.describe(name, figures) for name, figures in polls.items()))
    return levels


def run(tmp: Path, bootstrap: str, *, quick: bool) -> dict[str, Any]:
    """Throughput (A B A B) then latency at 10%, 50% and 80% of Handoff's measured maximum."""
    seconds = 8.0 if quick else 30.0
    repeats = 2 if quick else 3
    chain_n = 5_000 if quick else 50_000
    latency_s = 6.0 if quick else 30.0
    wait_s = 90.0 if quick else 300.0
    stack = Stack(
        tmp / "stack", bootstrap, seed=EVEN_SEED, rules=EVEN_RULES, env={"HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true"}
    )
    for service in stack.services.values():
        service.extra_args = list(UVICORN_ARGS)
    bare = Service(
        "bench.bare",
        free_port(),
        dict(stack.env, PYTHONPATH=str(ROOT)),
        tmp / "bare.log",
        extra_args=list(UVICORN_ARGS),
    )
    receiver = Service(
        "bench.receiver",
        free_port(),
        dict(stack.env, PYTHONPATH=str(ROOT)),
        tmp / "receiver.log",
        extra_args=list(UVICORN_ARGS),
    )
    # The floor's own receiver: its arrivals never mix with Handoff's.
    floor_receiver = Service(
        "bench.receiver",
        free_port(),
        dict(stack.env, PYTHONPATH=str(ROOT)),
        tmp / "floor-receiver.log",
        extra_args=list(UVICORN_ARGS),
    )
    observer: Stage | None = None
    result: dict[str, Any] = {"partitions": PARTITIONS, "warm_records": WARM}
    try:
        stack.start()
        SOURCE_KEYS[stack["ingest"].port] = source_key(stack["ingest"])
        bare.start()
        floor_receiver.start()
        arrivals: KafkaArrivals | WebhookArrivals
        if webhooks_available(stack["routing"]):
            receiver.start()
            register_webhook(stack["routing"], f"{receiver.url}/hook")
            arrivals = WebhookArrivals(receiver)
        else:
            observer = Stage("observe", "--bootstrap", bootstrap, "--in", stack.topic(LEADS_ASSIGNED))
            observer.wait_ready()
            arrivals = KafkaArrivals(observer)
        result["measured_to"] = arrivals.where
        log(f"e2e: measuring to the {arrivals.where}")
        # One warm-up pass so imports, caches and consumer groups are settled before anything counts.
        _latency(stack["ingest"], arrivals, rate=20, seconds=2, wait_s=wait_s)
        sizes: list[int] = []

        pids: dict[str, int | None] = {
            name: service.process.pid if service.process else None for name, service in stack.services.items()
        }
        if receiver.process is not None:
            pids["receiver"] = receiver.process.pid
        pids["broker"] = broker_pid(bootstrap)

        def handoff(_i: int) -> dict[str, Any]:
            return _handoff_max(stack["ingest"], arrivals, seconds=seconds, wait_s=wait_s, pids=pids)

        def chain(_i: int) -> dict[str, Any]:
            if not sizes:
                sizes.extend(_sizes(bootstrap, stack))
            out = _chain(bootstrap, sizes, n=chain_n, wait_s=wait_s)
            log(f"e2e bare chain: {out['per_s'] or 0:.0f} msgs/s")
            return out

        def floor(_i: int) -> dict[str, Any]:
            out = floor_chain(bootstrap, sizes, floor_receiver, tmp / "floor", n=chain_n, wait_s=wait_s)
            log(f"e2e durable floor: {out['per_s'] or 0:.0f} leads/s")
            return out

        handoff_runs, chain_runs, floor_runs = [], [], []
        for i in range(repeats):  # A B C A B C: drifting load hits all three alike
            handoff_runs.append(handoff(i))
            chain_runs.append(chain(i))
            floor_runs.append(floor(i))
        result["value_bytes"] = dict(zip(("received", "scored", "assigned"), sizes, strict=True))
        best = median([r["assigned_per_s"] for r in handoff_runs]) or 1.0
        result["throughput"] = {
            "handoff_runs": handoff_runs,
            "chain_runs": chain_runs,
            "handoff_per_s": best,
            "handoff_accepted_per_s": median([r["accepted_per_s"] for r in handoff_runs]),
            "chain_per_s": median([r["per_s"] for r in chain_runs]),
            "floor_runs": floor_runs,
            "floor_per_s": median([r["per_s"] for r in floor_runs]),
        }
        t = result["throughput"]
        t["ratio"] = ratio(best, t["chain_per_s"])
        t["handoff_of_floor"] = ratio(best, t["floor_per_s"])
        t["floor_of_chain"] = ratio(t["floor_per_s"], t["chain_per_s"])
        t["cpu_ms_per_lead"] = {
            "handoff": median_cpu(handoff_runs),
            "chain": median_cpu(chain_runs),
            "floor": median_cpu(floor_runs),
        }
        levels = _levels(stack, arrivals, bare, floor_receiver, sizes, tmp, latency_s, wait_s, t)
        # The report reads every level's Handoff side: a level above Handoff's maximum is kept apart.
        result["latency"] = [lv for lv in levels if "skipped" not in lv["handoff"]]
        result["latency_above_handoff_max"] = [lv for lv in levels if "skipped" in lv["handoff"]]
    finally:
        if observer is not None:
            observer.stop()
        receiver.stop()
        floor_receiver.stop()
        bare.stop()
        stack.stop()
    return result
