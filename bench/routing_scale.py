"""Routing scale-out: assigned leads/s draining a lead.scored backlog with one and with two routing processes on
one PostgreSQL database, two teams (issue 13 item 3).

`python -m bench.routing_scale [--quick] [--bootstrap HOST:PORT]` prints a Markdown table and writes the JSON
beside it (bench/results/routing_scale-<UTC time>.json). Runs alternate one, two, one, two (medians).

Two layouts of the same backlog: `aligned`, each team's leads on the partitions one process owns (the default
round-robin assignor gives a two-member group the even and the odd partitions), so each process decides for
one team and the two never wait on each other's team lock; `mixed`, lead ids as they come, so both processes
decide for both teams and take the same team locks. The first is what per-team locks make possible; the second
is what a consumer group keyed by lead id gives today.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from tests.support.stack import Service, Stack, free_port

from bench.chain import Stage, create_topics
from bench.routing import scored_events
from bench.scoring import _drain_rate, fill
from bench.util import RESULTS, UVICORN_ARGS, BenchBroker, CpuMeter, broker_pid, log, median, ratio
from common.envelope import Event
from common.topics import LEADS_ASSIGNED, LEADS_SCORED

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("HANDOFF_TEST_PG_URL", "postgresql://handoff:handoff@127.0.0.1:5432/handoff")
PARTITIONS = 6
SEED = """
teams:
  - {id: a, name: Team A, method: round_robin, hours: always, queue_sla_minutes: 60}
  - {id: b, name: Team B, method: round_robin, hours: always, queue_sla_minutes: 60}
reps:
""" + "".join(
    f"  - {{id: {t}{i}, name: Rep {t.upper()}{i}, email: {t}{i}@example.com, team: {t}, hours: always}}\n"
    for t in "ab"
    for i in range(1, 5)
)
RULES = """
fallback_team: a
rules:
  - id: team-a
    description: German leads go to team A.
    when: {lead.country: DE}
    action: {team: a, method: round_robin}
  - id: team-b
    description: The others go to team B.
    action: {team: b, method: round_robin}
"""


def two_team_events(n: int, *, aligned: bool) -> list[Event]:
    """lead.scored for two teams, half each; `aligned`: team A's lead ids hash to even partitions, B's to odd."""
    events = []
    for i, scored in enumerate(scored_events(n)):
        team_a = i % 2 == 0
        lead_id = scored.subject
        while aligned and (murmur2(lead_id.encode()) & 0x7FFFFFFF) % PARTITIONS % 2 != (0 if team_a else 1):
            lead_id = str(uuid.uuid4())
        data = {**scored.data, "lead_id": lead_id, "lead": {**scored.data["lead"], "country": "DE" if team_a else "FR"}}
        events.append(Event(type=scored.type, source=scored.source, subject=lead_id, data=data))
    return events


def _database() -> tuple[str, str]:
    """A fresh PostgreSQL database (the tests' server, started if missing): (name, SQLAlchemy URL)."""
    import asyncpg

    subprocess.run([ROOT / "scripts/postgres.sh", "ensure"], check=True, capture_output=True)
    name = f"handoff_bench_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return name, PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"


def _drop(name: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def drain(tmp: Path, bootstrap: str, events: list[Event], processes: int, wait_s: float) -> dict[str, Any]:
    """Start `processes` routing processes on a fresh database, let the group settle, fill the backlog, and time
    lead.assigned first record to last."""
    name, url = _database()
    stack = Stack(
        tmp,
        bootstrap,
        database_urls={"routing": url},
        seed=SEED,
        rules=RULES,
        env={"HANDOFF_TOPIC_PARTITIONS": str(PARTITIONS)},
    )
    first = stack["routing"]
    services = [first] + [
        Service("routing", free_port(), dict(first.env), tmp / f"routing-{i}.log") for i in range(1, processes)
    ]
    source, sink = stack.topic(LEADS_SCORED), stack.topic(LEADS_ASSIGNED)
    create_topics(bootstrap, [source, sink], PARTITIONS)
    observer = Stage("observe", "--bootstrap", bootstrap, "--in", sink)
    try:
        observer.wait_ready()
        for service in services:  # one after the other: the first migrates the store
            service.extra_args = list(UVICORN_ARGS)
            service.start()
        time.sleep(10)  # the group's join and assignment (a rebalance mid-drain would pause it)
        pids = {f"routing{i}": s.process.pid for i, s in enumerate(services) if s.process is not None}
        meter = CpuMeter({**pids, "broker": broker_pid(bootstrap)})
        fill(bootstrap, source, events)
        result = _drain_rate(observer, len(events), wait_s, meter)
    finally:
        observer.stop()
        for service in services:
            service.stop()
        _drop(name)
    log(f"routing x{processes}: {result['per_s'] or 0:.0f} leads/s ({result['done']}/{result['n']})")
    return result


def run(tmp: Path, bootstrap: str, *, quick: bool) -> dict[str, Any]:
    n, repeats = (3000, 2) if quick else (12_000, 3)
    results: dict[str, Any] = {"n": n, "partitions": PARTITIONS, "repeats": repeats}
    for layout in ("aligned", "mixed"):
        events = two_team_events(n, aligned=layout == "aligned")
        runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
        for i in range(repeats):
            for processes in (1, 2):
                run_tmp = tmp / f"{layout}{i}x{processes}"
                runs[str(processes)].append(drain(run_tmp, bootstrap, events, processes, 600.0))
        one, two = median([r["per_s"] for r in runs["1"]]), median([r["per_s"] for r in runs["2"]])
        results[layout] = {"one": one, "two": two, "ratio": ratio(two, one), "runs": runs}
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "| layout | one process (leads/s) | two processes (leads/s) | two / one |",
        "|---|---|---|---|",
    ]
    for layout in ("aligned", "mixed"):
        r = results[layout]
        lines.append(f"| {layout} | {r['one'] or 0:,.0f} | {r['two'] or 0:,.0f} | {r['ratio'] or 0:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_scale", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bootstrap", help="use this Kafka broker instead of starting the bench's own")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    broker = BenchBroker.up(args.bootstrap)
    started = datetime.now(UTC)
    try:
        with tempfile.TemporaryDirectory(prefix="handoff-bench-scale-") as scratch:
            results = run(Path(scratch), broker.bootstrap, quick=args.quick)
    finally:
        broker.down()
    results.update(started_at=started.isoformat(timespec="seconds"), quick=args.quick, loadavg=os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"routing_scale-{started.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(report(results))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
