"""Scoring: leads/s draining a backlog of lead.received, against a bare consume-and-produce loop and the durable floor
(bench.durable: the loop plus the dedupe, state and outbox transaction per batch) on the same broker."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from tests.support.stack import Stack, sample_lead

from bench.chain import Stage, create_topics
from bench.e2e import PARTITIONS
from bench.util import UVICORN_ARGS, CpuMeter, broker_pid, cpu_per_lead, log, median, median_cpu, ratio
from common.consumer import ConsumerLoop
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from common.ids import new_id
from common.kafka import new_producer
from common.runtime import tune_gc
from common.settings import ServiceSettings
from common.topics import LEADS_RECEIVED, LEADS_SCORED
from ingest.domain import normalize_lead
from ingest.handlers import source_view
from scoring.app import MIGRATIONS
from scoring.consumer import batch_handlers, event_handlers
from scoring.handlers import Scoring
from scoring.settings import ScoringSettings
from scoring.store import Base, processed


def received_events(n: int) -> list[Event]:
    """lead.received events as ingest writes them: normalized by ingest's own domain code."""
    now = datetime.now(UTC)
    events = []
    for i in range(n):
        lead_id = new_id()  # time-ordered, as ingest makes them
        lead = normalize_lead(sample_lead(i), default_region=None, field_mapping=None, now=now)
        events.append(
            Event(
                type="lead.received",
                source="/handoff/ingest",
                subject=lead_id,
                time=now,
                data={
                    "lead_id": lead_id,
                    "source": source_view(None),
                    "external_id": None,
                    "is_test": False,
                    "duplicate_of": None,
                    "received_at": now.isoformat(),
                    "lead": lead.to_dict(),
                },
            )
        )
    return events


def fill(bootstrap: str, topic: str, events: list[Event]) -> None:
    """Produce the backlog with the services' producer settings, every delivery awaited."""

    async def produce() -> None:
        producer = new_producer(ServiceSettings(kafka_bootstrap=bootstrap, service_name="bench-fill"))
        await producer.start()
        try:
            futures = [await producer.send(topic, value=e.value(), key=e.key(), headers=e.headers()) for e in events]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(produce())


def _fill_timed(bootstrap: str, topic: str, events: list[Event], on_start: Callable[[], None]) -> float:
    """`fill`, with `on_start` called once the producer is connected, just before the first send; returns the
    wall-clock time of that moment (the measured window starts there, without the producer's own start)."""

    async def produce() -> float:
        producer = new_producer(ServiceSettings(kafka_bootstrap=bootstrap, service_name="bench-fill"))
        await producer.start()
        try:
            on_start()
            started = time.time()
            futures = [await producer.send(topic, value=e.value(), key=e.key(), headers=e.headers()) for e in events]
            await asyncio.gather(*futures)
            return started
        finally:
            await producer.stop()

    return asyncio.run(produce())


def _warm_drain(
    observer: Stage, bootstrap: str, source: str, events: list[Event], wait_s: float, pids: dict[str, int | None]
) -> dict[str, Any]:
    """A warm consumer's drain: the first event goes through alone (group joined, partitions assigned, statements
    and ruleset loaded), then the rest arrive at once. Leads/s and CPU per process count from the first send of the
    rest to the last output, so neither the start-up nor the first output's wait is left out or counted."""
    fill(bootstrap, source, events[:1])
    if not observer.wait_count(1, wait_s):
        return {"n": len(events) - 1, "done": 0, "complete": False, "per_s": None}
    meters: list[CpuMeter] = []
    started = _fill_timed(bootstrap, source, events[1:], lambda: meters.append(CpuMeter(pids)))
    filled = time.time()
    complete = observer.wait_count(len(events), wait_s)
    cpu_s = meters[0].stop()
    times = sorted(a for a, _ in observer.arrivals.values())[1:]  # without the warm-up lead's
    n = len(events) - 1
    result: dict[str, Any] = {"n": n, "done": len(times), "complete": complete, "fill_s": round(filled - started, 3)}
    result["per_s"] = len(times) / (times[-1] - started) if times and times[-1] > started else None
    # For comparison with the cold runs: the rate from first output to last.
    result["per_s_first_to_last"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    result["cpu_s"] = cpu_s
    result["cpu_ms_per_lead"] = cpu_per_lead(cpu_s, len(times))
    return result


def _drain_rate(observer: Stage, n: int, wait_s: float, meter: CpuMeter | None = None) -> dict[str, Any]:
    """Leads/s first output to last; with a meter, CPU seconds per process and ms per lead over the same drain."""
    # Leads already out when the meter started were paid for before it: only the rest count against its CPU.
    before = observer.count()
    complete = observer.wait_count(n, wait_s)
    times = sorted(a for a, _ in observer.arrivals.values())
    per_s = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
    result: dict[str, Any] = {"n": n, "done": len(times), "complete": complete, "per_s": per_s}
    if meter is not None:
        result["cpu_s"] = meter.stop()
        result["cpu_ms_per_lead"] = cpu_per_lead(result["cpu_s"], len(times) - before)
    return result


def service_drain(
    tmp: Path,
    bootstrap: str,
    service: str,
    topics: tuple[str, str],
    events: list[Event],
    wait_s: float,
    warm: bool = False,
    **stack: Any,
) -> dict[str, Any]:
    """Start one service on a prefilled input topic and time its output, first record to last; or `warm`: start it
    on an empty one, then time a warm drain (`_warm_drain`)."""
    handoff = Stack(tmp, bootstrap, **stack)
    process = handoff[service]
    process.extra_args = list(UVICORN_ARGS)
    source, sink = (handoff.topic(t) for t in topics)
    create_topics(bootstrap, [source, sink], PARTITIONS)
    if not warm:
        fill(bootstrap, source, events)
    observer = Stage("observe", "--bootstrap", bootstrap, "--in", sink)
    try:
        observer.wait_ready()
        process.start()
        assert process.process is not None
        # From readiness on: the service's start-up (imports, migrations) is not a cost per lead.
        pids = {service: process.process.pid, "broker": broker_pid(bootstrap)}
        if warm:
            result = _warm_drain(observer, bootstrap, source, events, wait_s, pids)
        else:
            result = _drain_rate(observer, len(events), wait_s, CpuMeter(pids))
    finally:
        observer.stop()
        process.stop()
    log(f"{service}: {result['per_s'] or 0:.0f} leads/s ({result['done']}/{result['n']})")
    return result


def bare_drain(
    bootstrap: str, events: list[Event], out_size: int, wait_s: float, warm: bool = False, durable: Path | None = None
) -> dict[str, Any]:
    """The same backlog through a bare consume-and-produce loop writing records of `out_size` bytes (a warm drain
    with `warm`, as the service's); with `durable` (a folder), the durable floor's forward stage (bench.durable):
    the loop plus the dedupe, state and outbox transaction per batch that the guarantees require."""
    ns = f"bench.drain.{uuid.uuid4().hex[:8]}."
    source, sink = f"{ns}in", f"{ns}out"
    create_topics(bootstrap, [source, sink], PARTITIONS)
    if not warm:
        fill(bootstrap, source, events)
    observer = Stage("observe", "--bootstrap", bootstrap, "--in", sink)
    loop: Stage | None = None
    try:
        observer.wait_ready()
        loop = Stage(
            "forward",
            *("--bootstrap", bootstrap, "--in", source, "--out", sink, "--n", str(len(events))),
            *("--size", str(out_size), "--group", f"{ns}g"),
            *(("--durable", str(durable)) if durable else ()),
        )
        loop.wait_ready()
        pids = {"forward": loop.process.pid, "broker": broker_pid(bootstrap)}
        if warm:
            result = _warm_drain(observer, bootstrap, source, events, wait_s, pids)
        else:
            result = _drain_rate(observer, len(events), wait_s, CpuMeter(pids))
    finally:
        if loop is not None:
            loop.stop()
        observer.stop()
    log(f"{'durable floor' if durable else 'bare consume-and-produce'} loop: {result['per_s'] or 0:.0f} msgs/s")
    return result


def compare(
    tmp: Path,
    bootstrap: str,
    *,
    service: str,
    topics: tuple[str, str],
    events: list[Event],
    out_size: int,
    repeats: int,
    wait_s: float,
    warm: bool = False,
    **stack: Any,
) -> dict[str, Any]:
    """A B C, B C A, C A B over the same backlog contents (Handoff, the bare loop, the durable floor), medians and their
    ratios; `warm` drains (`_warm_drain`) or cold ones (the consumer started on a prefilled topic, timed from its
    first output to its last)."""
    # One untimed drain of each kind first: a broker the bench just started still JIT-compiles its request paths
    # (0.1-0.4 s of its CPU during the first drains, session 10), and that CPU landed in whichever drain ran then.
    service_drain(tmp / f"{service}-warm-up", bootstrap, service, topics, events, wait_s, warm, **stack)
    bare_drain(bootstrap, events, out_size, wait_s, warm)
    loadavg = os.getloadavg()[0]
    handoff: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    drains: list[Callable[[int], None]] = [
        lambda i: handoff.append(
            service_drain(tmp / f"{service}{i}", bootstrap, service, topics, events, wait_s, warm, **stack)
        ),
        lambda i: bare.append(bare_drain(bootstrap, events, out_size, wait_s, warm)),
        lambda i: floor.append(bare_drain(bootstrap, events, out_size, wait_s, warm, durable=tmp / f"floor{i}")),
    ]
    for i in range(repeats):  # drifting machine load hits all three alike; each goes first in its turn
        for k in range(len(drains)):
            drains[(i + k) % len(drains)](i)
    result: dict[str, Any] = {
        "n": len(events),
        "warm": warm,
        "loadavg": [loadavg, os.getloadavg()[0]],
        "partitions": PARTITIONS,
        "handoff_runs": handoff,
        "bare_runs": bare,
        "handoff_per_s": median([r["per_s"] for r in handoff]),
        "bare_per_s": median([r["per_s"] for r in bare]),
    }
    result["ratio"] = ratio(result["handoff_per_s"], result["bare_per_s"])
    result["floor_runs"] = floor
    result["floor_per_s"] = median([r["per_s"] for r in floor])
    result["handoff_of_floor"] = ratio(result["handoff_per_s"], result["floor_per_s"])
    result["floor_of_bare"] = ratio(result["floor_per_s"], result["bare_per_s"])
    result["cpu_ms_per_lead"] = {"handoff": median_cpu(handoff), "bare": median_cpu(bare), "floor": median_cpu(floor)}
    log(
        f"{service}: {result['handoff_per_s'] or 0:.0f}/s, durable floor {result['floor_per_s'] or 0:.0f}/s, bare "
        f"{result['bare_per_s'] or 0:.0f}/s (Handoff/floor {result['handoff_of_floor'] or 0:.2f}, floor/bare "
        f"{result['floor_of_bare'] or 0:.2f})"
    )
    if warm:
        first_to_last = [median([r.get("per_s_first_to_last") for r in runs]) for runs in (handoff, bare)]
        result["ratio_first_to_last"] = ratio(*first_to_last)
    return result


class _Polled:
    """The two calls the consumer loop makes of its Kafka consumer after a poll, for the in-process split."""

    def __init__(self, partitions: set[TopicPartition]) -> None:
        self._partitions = partitions

    def assignment(self) -> set[TopicPartition]:
        return self._partitions

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        pass


async def _noop_batch(session: Any, events: Any) -> None:
    pass


async def _loop_cpu(tmp: Path, events: list[Event], poll: int, *, handlers: bool) -> float:
    """CPU seconds (all threads) of ConsumerLoop._process over `events` in polls of `poll`, after one warm-up poll."""
    url = f"sqlite+aiosqlite:///{tmp}/scoring.db"
    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)
    db = Database(url)
    settings = ScoringSettings(env="test")
    scoring = Scoring(settings, None)
    loop = ConsumerLoop(
        settings=settings,
        db=db,
        processed=processed,
        topics=[LEADS_RECEIVED],
        handlers=event_handlers(scoring) if handlers else None,
        batch_handlers=batch_handlers(scoring) if handlers else {"lead.received": _noop_batch},
        prepare=scoring.prepare if handlers else None,
    )
    tps = [TopicPartition(LEADS_RECEIVED, p) for p in range(PARTITIONS)]
    polls = []
    for start in range(0, len(events), poll):
        by_tp: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {tp: [] for tp in tps}
        for offset, event in enumerate(events[start : start + poll], start):
            tp = tps[offset % len(tps)]
            record = ConsumerRecord(
                tp.topic, tp.partition, offset, 0, 0, event.key(), event.value(), None, 0, 0, event.headers()
            )
            by_tp[tp].append(record)
        polls.append(by_tp)
    consumer = _Polled(set(tps))
    try:
        await loop._process(consumer, polls[0])  # statement caches, ruleset compile
        started = time.process_time()
        for by_tp in polls[1:]:
            await loop._process(consumer, by_tp)
        return time.process_time() - started
    finally:
        await db.dispose()


def in_process(tmp: Path, n: int, poll: int = 500) -> dict[str, Any]:
    """Without Kafka (SQLite, polls of `poll`, GC tuned as the service tunes it): CPU microseconds per lead of the
    consumer loop with scoring's handlers, and of the loop alone with a no-op handler (parse, dedupe, commit)."""
    events = received_events(n + poll)
    tune_gc()
    result: dict[str, Any] = {"n": n, "poll": poll}
    for name, handlers in (("scoring_us_per_lead", True), ("loop_only_us_per_event", False)):
        folder = tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        cpu_s = asyncio.run(_loop_cpu(folder, events, poll, handlers=handlers))
        result[name] = round(1e6 * cpu_s / n, 1)
    log(
        f"in process, polls of {poll}: scoring {result['scoring_us_per_lead']} us CPU per lead, of it the consumer "
        f"loop alone {result['loop_only_us_per_event']} us per event"
    )
    return result


# Warm drains (`_warm_drain`): the ratio no longer depends on the backlog's size once start-up is out of it; the
# quick run's 5,000 leads (ten polls of 500 per drain, ~1 minute for its three A B pairs) gave the same ratio as
# 20,000 in the runs of bench/results/scoring.md, and three pairs instead of two make its median a middle run.
QUICK_LEADS, FULL_LEADS = 5_000, 20_000


def run(tmp: Path, bootstrap: str, *, quick: bool, out_size: int = 1900) -> dict[str, Any]:
    """Scoring's warm drain of a lead.received backlog; the bare loop writes records the size of a lead.scored."""
    result = compare(
        tmp,
        bootstrap,
        service="scoring",
        topics=(LEADS_RECEIVED, LEADS_SCORED),
        events=received_events(QUICK_LEADS if quick else FULL_LEADS),
        out_size=out_size,
        repeats=3,
        wait_s=300.0 if quick else 900.0,
        warm=True,
    )
    result["in_process"] = in_process(tmp / "in-process", 2500 if quick else 10_000)
    # A low rate's cost: every poll holds one lead, so each pays a whole batch's fixed costs (transaction, reads).
    result["in_process_one_lead_polls"] = in_process(tmp / "in-process-1", 300 if quick else 1_000, poll=1)
    return result
