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


# The floor through FastAPI as the bare endpoint is (`floor`), and on raw ASGI as Handoff's own fast path serves a
# lead (`floor_asgi`): the first prices the guarantees, the second the guarantees without the framework.
FLOOR_FRONTS = {"floor": "fastapi", "floor_asgi": "asgi"}


def _servers(
    tmp: Path, bootstrap: str, workers: int, database_url: str | None
) -> tuple[Stack, Service, dict[str, FloorService], str]:
    """Handoff's stack, the bare endpoint, the durable floors and their API key."""
    stack = Stack(tmp, bootstrap, database_urls={"ingest": database_url} if database_url else None)
    args = [*UVICORN_ARGS, "--workers", str(workers)] if workers > 1 else list(UVICORN_ARGS)
    stack["ingest"].extra_args = args
    bare_env = dict(stack.env, PYTHONPATH=str(ROOT))
    bare = Service("bench.bare", free_port(), bare_env, tmp / "bare.log", extra_args=args)
    floor_key = secrets.token_urlsafe(32)
    floors = {}
    for name, front in FLOOR_FRONTS.items():
        floor_env = dict(
            bare_env,
            FLOOR_DATABASE=str(tmp / f"{name}.db"),
            FLOOR_KAFKA_BOOTSTRAP=bootstrap,
            FLOOR_TOPIC=stack.topic(f"{name}.leads.received.v1"),
            FLOOR_TOPIC_PARTITIONS=stack.env.get("HANDOFF_TOPIC_PARTITIONS", "3"),
            FLOOR_API_KEY_SHA256=hashlib.sha256(floor_key.encode()).hexdigest(),
            FLOOR_FRONT=front,
        )
        # One process: the floor's writer is the only writer of its SQLite file, as ingest's is on SQLite.
        floors[name] = FloorService(name, free_port(), floor_env, tmp / f"{name}.log", extra_args=list(UVICORN_ARGS))
    return stack, bare, floors, floor_key


def interleave_all(repeats: int, names: list[str], run: Callable[[str], WrkResult]) -> dict[str, list[WrkResult]]:
    """A B C D A B C D ...: drifting machine load hits every side alike."""
    runs: dict[str, list[WrkResult]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            runs[name].append(run(name))
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
    stack, bare, floors, floor_key = _servers(tmp, bootstrap, workers, url)
    ingest = stack["ingest"]
    if workers > 1 or url:
        # Several workers would otherwise race to create the same tables.
        _migrate(url or f"sqlite+aiosqlite:///{tmp / 'data' / 'ingest.db'}")
    servers: dict[str, Service] = {"handoff": ingest, "bare": bare, **(floors if with_floor else {})}
    try:
        for server in servers.values():
            server.start()
        api_key = source_key(ingest)
        # The bare endpoint ignores its key.
        tokens = {"handoff": api_key, "bare": api_key, **{name: floor_key for name in floors}}
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
        runs = interleave_all(repeats, list(servers), lambda name: measure(name, seconds))
    finally:
        for floor in floors.values():
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
        **{f"{name}_runs": [r.as_dict() for r in runs[name]] for name in servers},
        "cpu_runs": cpu,
        "cpu_ms_per_lead": {name: median_cpu(runs) for name, runs in cpu.items()},
    }
    for name in servers:
        result[name] = {
            "accepted_per_s": median([r.accepted_per_s for r in runs[name]]),
            "p50_ms": median([r.p50_ms for r in runs[name]]),
            "p99_ms": median([r.p99_ms for r in runs[name]]),
            "errors": sum(r.errors for r in runs[name]),
        }
    result["ratio"] = ratio(result["handoff"]["accepted_per_s"], result["bare"]["accepted_per_s"])
    where = ("pinned" if pinned else f"whole-machine, {workers} worker(s)") + (", PostgreSQL" if url else "")
    line = (
        f"ingest {where}: {result['handoff']['accepted_per_s']:.0f}/s vs bare "
        f"{result['bare']['accepted_per_s']:.0f}/s (ratio {result['ratio'] or 0:.2f})"
    )
    if with_floor:
        result["floor_mode"] = {
            "writer": os.environ.get("FLOOR_WRITER", "thread"),
            "relay": os.environ.get("FLOOR_RELAY", "batch"),
            "fronts": FLOOR_FRONTS,
        }
        # The same ratios in leads per server CPU second too: on a shared machine the pinned core also runs other
        # people's work, which moves leads/s far more than the CPU each lead costs.
        server_ms = {name: result["cpu_ms_per_lead"][name].get("server") for name in servers}
        result["server_cpu_ratio_handoff_bare"] = ratio(server_ms["bare"], server_ms["handoff"])
        for name in floors:
            # floor/bare: what the guarantees cost a bare endpoint; Handoff/floor: what Handoff costs beyond them.
            rate = result[name]["accepted_per_s"]
            result[f"ratio_{name}_bare"] = ratio(rate, result["bare"]["accepted_per_s"])
            result[f"ratio_handoff_{name}"] = ratio(result["handoff"]["accepted_per_s"], rate)
            result[f"server_cpu_ratio_{name}_bare"] = ratio(server_ms["bare"], server_ms[name])
            result[f"server_cpu_ratio_handoff_{name}"] = ratio(server_ms[name], server_ms["handoff"])
            line += (
                f"; {name} {rate:.0f}/s ({name}/bare {result[f'ratio_{name}_bare'] or 0:.2f}, Handoff/{name} "
                f"{result[f'ratio_handoff_{name}'] or 0:.2f}; per server CPU second {name}/bare "
                f"{result[f'server_cpu_ratio_{name}_bare'] or 0:.2f}, "
                f"Handoff/{name} {result[f'server_cpu_ratio_handoff_{name}'] or 0:.2f})"
            )
    log(line)
    return result


def run(tmp: Path, bootstrap: str, *, quick: bool) -> dict[str, Any]:
    """Pinned (server on core 0, wrk on core 1), then unpinned with one worker and with one worker per core; the
    durable floors run beside Handoff and the bare endpoint in the first two (each is one process on SQLite)."""
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
