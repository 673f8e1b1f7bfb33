"""Routing: assigned leads/s draining a backlog of lead.scored, against a bare consume-and-produce loop and the
durable floor's forward stage (bench.durable: the loop plus its dedupe, state and outbox transaction); and, without
Kafka, the CPU per lead of routing's consumer loop with its handlers (`python -m bench.routing [--profile]`)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from tests.e2e.conftest import EVEN_RULES, EVEN_SEED

from bench.e2e import PARTITIONS
from bench.scoring import FULL_LEADS, QUICK_LEADS, _Polled, compare, received_events
from bench.util import log
from common.consumer import ConsumerLoop
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from common.runtime import tune_gc
from common.topics import LEADS_ASSIGNED, LEADS_SCORED

ROUTING_RULES: dict[str, tuple[str | None, str | None]] = {"even": (EVEN_SEED, EVEN_RULES), "default": (None, None)}


def scored_events(n: int) -> list[Event]:
    """lead.scored events carrying what routing reads: the lead, its source and a score with a grade."""
    events = []
    for received in received_events(n):
        data = dict(received.data)
        data["enrichment"] = {"company_domain": "example.org", "free_email": False}
        data["score"] = {"grade": "B", "fit": 55, "intent": 40, "total": 50, "reasons": ["job title: head of sales"]}
        scored = Event(type="lead.scored", source="/handoff/scoring", subject=received.subject, data=data)
        events.append(scored)
    return events


def _polls(events: list[Event], poll: int) -> list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]:
    tps = [TopicPartition(LEADS_SCORED, p) for p in range(PARTITIONS)]
    polls = []
    for start in range(0, len(events), poll):
        by_tp: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {tp: [] for tp in tps}
        for offset, event in enumerate(events[start : start + poll], start):
            tp = tps[offset % len(tps)]
            by_tp[tp].append(
                ConsumerRecord(
                    tp.topic, tp.partition, offset, 0, 0, event.key(), event.value(), None, 0, 0, event.headers()
                )
            )
        polls.append(by_tp)
    return polls


async def _loop_cpu(folder: Path, events: list[Event], poll: int, rules: str, profile: Path | None) -> float:
    """CPU seconds (all threads) of routing's ConsumerLoop._process over `events` in polls of `poll`, after one
    warm-up poll (statement caches, the roster and rules read)."""
    from routing.app import MIGRATIONS
    from routing.consumer import batch_handlers, event_handlers
    from routing.domain import DEFAULT_RULES_YAML
    from routing.handlers import Router
    from routing.settings import RoutingSettings
    from routing.store import Base, processed

    url = f"sqlite+aiosqlite:///{folder}/routing.db"
    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)
    db = Database(url)
    settings = RoutingSettings(env="test")
    router = Router(settings)
    seed, text = ROUTING_RULES[rules]
    if seed is None or text is None:
        seed = (Path(__file__).parents[1] / "services" / "routing" / "demo_reps.yaml").read_text(encoding="utf-8")
        text = DEFAULT_RULES_YAML
    async with db.transaction() as session:
        await router.replace_roster(session, yaml.safe_load(seed))
        await router.install_rules(session, text)
    loop = ConsumerLoop(
        settings=settings,
        db=db,
        processed=processed,
        topics=[LEADS_SCORED],
        handlers=event_handlers(router),
        batch_handlers=batch_handlers(router),
    )
    polls = _polls(events, poll)
    consumer = _Polled({tp for by_tp in polls for tp in by_tp})
    profiler = cProfile.Profile() if profile else None
    try:
        await loop._process(consumer, polls[0])
        started = time.process_time()
        if profiler:
            profiler.enable()
        for by_tp in polls[1:]:
            await loop._process(consumer, by_tp)
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        return time.process_time() - started
    finally:
        await db.dispose()


def in_process(tmp: Path, n: int, poll: int = 200, *, repeats: int = 1, profile: Path | None = None) -> dict[str, Any]:
    """Without Kafka (SQLite, polls of `poll`, GC tuned as the service tunes it): CPU microseconds per lead of
    routing's consumer loop with its handlers, on the bench's even rules and on the default rules and demo roster.
    With repeats, each on a fresh store, the least (what a busy machine adds to CPU time only ever adds)."""
    events = scored_events(n + poll)
    tune_gc()
    result: dict[str, Any] = {"n": n, "poll": poll, "repeats": repeats}
    for rules in ROUTING_RULES:
        runs = []
        for i in range(repeats):
            folder = tmp / f"{rules}{i}"
            folder.mkdir(parents=True, exist_ok=True)
            out = profile.with_suffix(f".{rules}.prof") if profile else None
            runs.append(asyncio.run(_loop_cpu(folder, events, poll, rules, out)))
        result[f"{rules}_us_per_lead"] = round(1e6 * min(runs) / n, 1)
    log(
        f"in process: routing {result['even_us_per_lead']} us CPU per lead (even rules), "
        f"{result['default_us_per_lead']} us (default rules, demo roster)"
    )
    return result


def run(tmp: Path, bootstrap: str, *, quick: bool, out_size: int = 1850) -> dict[str, Any]:
    """Routing alone (no webhook endpoints): the consumer, the decision, the SLA clock and the outbox; warm drains,
    as scoring's (bench.scoring's QUICK_LEADS / FULL_LEADS and three A B C rounds)."""
    result = compare(
        tmp,
        bootstrap,
        service="routing",
        topics=(LEADS_SCORED, LEADS_ASSIGNED),
        events=scored_events(QUICK_LEADS if quick else FULL_LEADS),
        out_size=out_size,
        repeats=3,
        wait_s=300.0 if quick else 900.0,
        warm=True,
        seed=EVEN_SEED,
        rules=EVEN_RULES,
    )
    result["in_process"] = in_process(tmp / "in-process", 2000 if quick else 10_000, repeats=3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--poll", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write cProfile stats to this path (.even.prof, .default.prof)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print(in_process(Path(tmp), args.n, args.poll, repeats=args.repeats, profile=args.profile))
    if args.profile:
        for rules in ROUTING_RULES:
            stats = pstats.Stats(str(args.profile.with_suffix(f".{rules}.prof")))
            stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
