"""Ingest: sustained acknowledged leads/s and latency against a bare FastAPI endpoint with the same request model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
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

PG_ADMIN_URL = os.environ.get("HANDOFF_TEST_PG_URL", "postgresql://handoff:handoff@127.0.0.1:5432/handoff")


def _servers(tmp: Path, bootstrap: str, workers: int, database_url: str | None) -> tuple[Stack, Service]:
    stack = Stack(tmp, bootstrap, database_urls={"ingest": database_url} if database_url else None)
    args = [*UVICORN_ARGS, "--workers", str(workers)] if workers > 1 else list(UVICORN_ARGS)
    stack["ingest"].extra_args = args
    bare_env = dict(stack.env, PYTHONPATH=str(ROOT))
    bare = Service("bench.bare", free_port(), bare_env, tmp / "bare.log", extra_args=args)
    return stack, bare


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
) -> dict[str, Any]:
    database, url = postgres if postgres else (None, None)
    stack, bare = _servers(tmp, bootstrap, workers, url)
    ingest = stack["ingest"]
    if workers > 1 or url:
        # Several workers would otherwise race to create the same tables.
        _migrate(url or f"sqlite+aiosqlite:///{tmp / 'data' / 'ingest.db'}")
    try:
        ingest.start()
        bare.start()
        api_key = source_key(ingest)
        if pinned:
            _pin_tree(ingest, "0")
            _pin_tree(bare, "0")
        gen_cpus = "1" if pinned else None
        threads = 1 if pinned else 2

        broker = broker_pid(bootstrap)
        cpu: dict[str, list[dict[str, Any]]] = {"handoff": [], "bare": []}

        def measure(service: Service, duration: float) -> WrkResult:
            # The server's process tree (uvicorn's workers included) and the broker, over exactly this wrk run.
            assert service.process is not None
            meter = CpuMeter({"server": service.process.pid, "broker": broker})
            backends = _backend_cpu(database) if service is ingest else {}
            out = run_wrk(
                f"{service.url}/v1/leads",
                token=api_key,  # the bare endpoint ignores it; ingest looks it up
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
            run = {"cpu_s": cpu_s, "cpu_ms_per_lead": cpu_per_lead(cpu_s, out.accepted)}
            cpu["handoff" if service is ingest else "bare"].append(run)
            return out

        # Warm both (imports, first connections, SQLite page cache) before anything counts.
        measure(ingest, 1)
        measure(bare, 1)
        cpu = {"handoff": [], "bare": []}  # the warm-up does not count
        handoff, baseline = interleave(repeats, lambda _i: measure(ingest, seconds), lambda _i: measure(bare, seconds))
    finally:
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
        "cpu_ms_per_lead": {"handoff": median_cpu(cpu["handoff"]), "bare": median_cpu(cpu["bare"])},
    }
    for name, runs in (("handoff", handoff), ("bare", baseline)):
        result[name] = {
            "accepted_per_s": median([r.accepted_per_s for r in runs]),
            "p50_ms": median([r.p50_ms for r in runs]),
            "p99_ms": median([r.p99_ms for r in runs]),
            "errors": sum(r.errors for r in runs),
        }
    result["ratio"] = ratio(result["handoff"]["accepted_per_s"], result["bare"]["accepted_per_s"])
    where = ("pinned" if pinned else f"whole-machine, {workers} worker(s)") + (", PostgreSQL" if url else "")
    log(
        f"ingest {where}: {result['handoff']['accepted_per_s']:.0f}/s vs bare "
        f"{result['bare']['accepted_per_s']:.0f}/s (ratio {result['ratio'] or 0:.2f})"
    )
    return result


def run(tmp: Path, bootstrap: str, *, quick: bool) -> dict[str, Any]:
    """Pinned (server on core 0, wrk on core 1), then unpinned with one worker and with one worker per core."""
    seconds = 4.0 if quick else 15.0
    repeats = 2 if quick else 3
    cores = os.cpu_count() or 1
    common: dict[str, Any] = {"bootstrap": bootstrap, "seconds": seconds, "repeats": repeats}
    result = {
        "pinned": _mode(tmp / "pinned", pinned=True, workers=1, connections=32, **common),
        # One process is how the stack deploys ingest on SQLite (one writer); more workers share one file lock.
        "whole_machine": _mode(tmp / "whole", pinned=False, workers=1, connections=64, **common),
    }
    if cores > 1:
        result["whole_machine_workers"] = _mode(tmp / "workers", pinned=False, workers=cores, connections=64, **common)
    # The production store: a process per core on PostgreSQL, its backends' CPU per lead beside ingest's.
    with postgres_database() as postgres:
        result["whole_machine_postgres"] = _mode(
            tmp / "postgres", pinned=False, workers=cores, connections=64, postgres=postgres, **common
        )
    return result
