"""Ingest: sustained acknowledged leads/s and latency against a bare FastAPI endpoint with the same request model,
and against the durable floor (bench/bare/floor.py: that endpoint plus only what ingest's guarantees require)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from tests.support.stack import ADMIN_TOKEN, ROOT, Service, Stack, free_port

from bench.load import WrkResult, run_wrk
from bench.util import (
    UVICORN_ARGS,
    CpuMeter,
    broker_pid,
    children,
    cpu_per_lead,
    cpu_seconds,
    interleave,
    log,
    median,
    median_cpu,
    pin,
    ratio,
)

FLOOR_APP = "bench.bare.floor:create_app"

PG_ADMIN_URL = os.environ.get("HANDOFF_TEST_PG_URL", "postgresql://handoff:handoff@127.0.0.1:5432/handoff")


class FloorService(Service):
    """The durable floor under uvicorn, as `bench.bare` runs (its module is not a service's `<name>.app`)."""

    def start(self, wait: bool = True) -> None:
        log = self.log_path.open("ab")
        target = [sys.executable, "-m", "uvicorn", FLOOR_APP, "--factory", "--host", "127.0.0.1", "--port"]
        self.process = subprocess.Popen(
            [*target, str(self.port), *self.extra_args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill()
                raise


def _servers(
    tmp: Path, bootstrap: str, workers: int, database_url: str | None
) -> tuple[Stack, Service, FloorService, str]:
    """Handoff's stack, the bare endpoint, the durable floor and the floor's API key."""
    stack = Stack(tmp, bootstrap, database_urls={"ingest": database_url} if database_url else None)
    args = [*UVICORN_ARGS, "--workers", str(workers)] if workers > 1 else list(UVICORN_ARGS)
    stack["ingest"].extra_args = args
    bare_env = dict(stack.env, PYTHONPATH=str(ROOT))
    bare = Service("bench.bare", free_port(), bare_env, tmp / "bare.log", extra_args=args)
    floor_key = secrets.token_urlsafe(32)
    floor_env = dict(
        bare_env,
        FLOOR_DATABASE=str(tmp / "floor.db"),
        FLOOR_KAFKA_BOOTSTRAP=bootstrap,
        FLOOR_TOPIC=stack.topic("floor.leads.received.v1"),
        FLOOR_TOPIC_PARTITIONS=stack.env.get("HANDOFF_TOPIC_PARTITIONS", "3"),
        FLOOR_API_KEY_SHA256=hashlib.sha256(floor_key.encode()).hexdigest(),
    )
    # One process: the floor's writer is the only writer of its SQLite file, as ingest's is on SQLite.
    floor = FloorService("bench.bare.floor", free_port(), floor_env, tmp / "floor.log", extra_args=list(UVICORN_ARGS))
    return stack, bare, floor, floor_key


def interleave3(
    repeats: int, *sides: Callable[[int], WrkResult]
) -> tuple[list[WrkResult], list[WrkResult], list[WrkResult]]:
    """A B C A B C ...: drifting machine load hits every side alike."""
    runs: tuple[list[WrkResult], list[WrkResult], list[WrkResult]] = ([], [], [])
    for i in range(repeats):
        for side, out in zip(sides, runs, strict=True):
            out.append(side(i))
    return runs


def _migrate(url: str) -> None:
    from common.db_schema import upgrade_schema
    from ingest.app import MIGRATIONS
    from ingest.store import Base

    upgrade_schema(url, MIGRATIONS, Base.metadata)


async def _pg(statement: str, *args: Any) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


@contextmanager
def postgres_database() -> Iterator[tuple[str, str]]:
    """A fresh database on the local PostgreSQL server (scripts/postgres.sh, as the tests use): (name, URL)."""
    subprocess.run([ROOT / "scripts/postgres.sh", "ensure"], check=True, capture_output=True)
    name = f"handoff_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield name, PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _backend_cpu(database: str | None) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving `database` (the server's shared writers are not counted)."""
    if database is None:
        return {}
    rows = asyncio.run(_pg("SELECT pid FROM pg_stat_activity WHERE datname = $1", database))
    out: dict[int, float] = {}
    for row in rows:
        try:
            out[row["pid"]] = cpu_seconds(row["pid"])
        except (OSError, ValueError, IndexError):
            continue
    return out


def source_key(ingest: Service) -> str:
    """A web source's secret API key: the bench posts as a back end does (the key looked up, not the admin token)."""
    answer = httpx.post(
        f"{ingest.url}/v1/sources",
        json={"kind": "web", "name": "bench"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    answer.raise_for_status()
    key: str = answer.json()["api_key"]
    return key


def _pin_tree(service: Service, cpus: str) -> None:
    assert service.process is not None
    pid = service.process.pid
    for p in [pid, *children(pid)]:
        pin(p, cpus)


def _mode(
    tmp: Path,
    *,
    bootstrap: str,
    pinned: bool,
    workers: int,
    seconds: float,
    repeats: int,
    connections: int,
    postgres: tuple[str, str] | None = None,
    with_floor: bool = False,
) -> dict[str, Any]:
    database, url = postgres if postgres else (None, None)
    stack, bare, floor, floor_key = _servers(tmp, bootstrap, workers, url)
    ingest = stack["ingest"]
    if workers > 1 or url:
        # Several workers would otherwise race to create the same tables.
        _migrate(url or f"sqlite+aiosqlite:///{tmp / 'data' / 'ingest.db'}")
    servers = {"handoff": ingest, "bare": bare, **({"floor": floor} if with_floor else {})}
    try:
        for server in servers.values():
            server.start()
        api_key = source_key(ingest)
        tokens = {"handoff": api_key, "bare": api_key, "floor": floor_key}  # the bare endpoint ignores its key
        if pinned:
            for server in servers.values():
                _pin_tree(server, "0")
        gen_cpus = "1" if pinned else None
        threads = 1 if pinned else 2

        broker = broker_pid(bootstrap)
        cpu: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}

        def measure(name: str, duration: float) -> WrkResult:
            # The server's process tree (uvicorn's workers included) and the broker, over exactly this wrk run.
            service = servers[name]
            assert service.process is not None
            meter = CpuMeter({"server": service.process.pid, "broker": broker})
            backends = _backend_cpu(database) if service is ingest else {}
            out = run_wrk(
                f"{service.url}/v1/leads",
                token=tokens[name],
                seconds=duration,
                connections=connections,
                threads=threads,
                cpus=gen_cpus,
            )
            cpu_s = meter.stop()
            if backends:
                # Backends opened during the run count whole (they started inside it).
                after = _backend_cpu(database)
                cpu_s["postgres"] = sum(cpu - backends.get(pid, 0.0) for pid, cpu in after.items())
            cpu[name].append({"cpu_s": cpu_s, "cpu_ms_per_lead": cpu_per_lead(cpu_s, out.accepted)})
            return out

        # Warm every server (imports, first connections, SQLite page cache) before anything counts.
        for name in servers:
            measure(name, 1)
        cpu = {name: [] for name in servers}  # the warm-up does not count
        sides = [lambda _i, name=name: measure(name, seconds) for name in servers]
        if with_floor:
            handoff, baseline, floored = interleave3(repeats, *sides)
        else:
            handoff, baseline = interleave(repeats, *sides)
            floored = []
    finally:
        floor.stop()
        bare.stop()
        stack.stop()
    result: dict[str, Any] = {
        "pinned": pinned,
        "workers": workers,
        "store": "postgresql" if url else "sqlite",
        "connections": connections,
        "credential": "source API key",
        "seconds_per_run": seconds,
        "handoff_runs": [r.as_dict() for r in handoff],
        "bare_runs": [r.as_dict() for r in baseline],
        "cpu_runs": cpu,
        "cpu_ms_per_lead": {name: median_cpu(runs) for name, runs in cpu.items()},
    }
    named = {"handoff": handoff, "bare": baseline, **({"floor": floored} if with_floor else {})}
    for name, runs in named.items():
        result[name] = {
            "accepted_per_s": median([r.accepted_per_s for r in runs]),
            "p50_ms": median([r.p50_ms for r in runs]),
            "p99_ms": median([r.p99_ms for r in runs]),
            "errors": sum(r.errors for r in runs),
        }
    result["ratio"] = ratio(result["handoff"]["accepted_per_s"], result["bare"]["accepted_per_s"])
    where = ("pinned" if pinned else f"whole-machine, {workers} worker(s)") + (", PostgreSQL" if url else "")
    line = (
        f"ingest {where}: {result['handoff']['accepted_per_s']:.0f}/s vs bare "
        f"{result['bare']['accepted_per_s']:.0f}/s (ratio {result['ratio'] or 0:.2f})"
    )
    if with_floor:
        result["floor_runs"] = [r.as_dict() for r in floored]
        result["floor_mode"] = {
            "writer": os.environ.get("FLOOR_WRITER", "thread"),
            "relay": os.environ.get("FLOOR_RELAY", "batch"),
        }
        # floor/bare: what the guarantees cost a bare endpoint; Handoff/floor: what Handoff costs beyond them.
        result["ratio_floor_bare"] = ratio(result["floor"]["accepted_per_s"], result["bare"]["accepted_per_s"])
        result["ratio_handoff_floor"] = ratio(result["handoff"]["accepted_per_s"], result["floor"]["accepted_per_s"])
        # The same ratios in leads per server CPU second: on a shared machine the pinned core also runs other
        # people's work, which moves leads/s far more than the CPU each lead costs.
        server_ms = {name: result["cpu_ms_per_lead"][name].get("server") for name in named}
        result["server_cpu_ratio_floor_bare"] = ratio(server_ms["bare"], server_ms["floor"])
        result["server_cpu_ratio_handoff_floor"] = ratio(server_ms["floor"], server_ms["handoff"])
        result["server_cpu_ratio_handoff_bare"] = ratio(server_ms["bare"], server_ms["handoff"])
        line += (
            f", floor {result['floor']['accepted_per_s']:.0f}/s (floor/bare {result['ratio_floor_bare'] or 0:.2f}, "
            f"Handoff/floor {result['ratio_handoff_floor'] or 0:.2f}); per server CPU second: floor/bare "
            f"{result['server_cpu_ratio_floor_bare'] or 0:.2f}, "
            f"Handoff/floor {result['server_cpu_ratio_handoff_floor'] or 0:.2f}"
        )
    log(line)
    return result


def run(tmp: Path, bootstrap: str, *, quick: bool) -> dict[str, Any]:
    """Pinned (server on core 0, wrk on core 1), then unpinned with one worker and with one worker per core; the
    durable floor runs beside Handoff and the bare endpoint in the first two (it is one process on SQLite)."""
    seconds = 4.0 if quick else 15.0
    repeats = 2 if quick else 3
    cores = os.cpu_count() or 1
    common: dict[str, Any] = {"bootstrap": bootstrap, "seconds": seconds, "repeats": repeats}
    result = {
        "pinned": _mode(tmp / "pinned", pinned=True, workers=1, connections=32, with_floor=True, **common),
        # One process is how the stack deploys ingest on SQLite (one writer); more workers share one file lock.
        "whole_machine": _mode(tmp / "whole", pinned=False, workers=1, connections=64, with_floor=True, **common),
    }
    if cores > 1:
        result["whole_machine_workers"] = _mode(tmp / "workers", pinned=False, workers=cores, connections=64, **common)
    # The production store: a process per core on PostgreSQL, its backends' CPU per lead beside ingest's.
    with postgres_database() as postgres:
        result["whole_machine_postgres"] = _mode(
            tmp / "postgres", pinned=False, workers=cores, connections=64, postgres=postgres, **common
        )
    return result
