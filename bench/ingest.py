"""Ingest: sustained acknowledged leads/s and latency against a bare FastAPI endpoint with the same request model."""

from __future__ import annotations

import os
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
    interleave,
    log,
    median,
    median_cpu,
    pin,
    ratio,
)


def _servers(tmp: Path, bootstrap: str, workers: int) -> tuple[Stack, Service]:
    stack = Stack(tmp, bootstrap)
    args = [*UVICORN_ARGS, "--workers", str(workers)] if workers > 1 else list(UVICORN_ARGS)
    stack["ingest"].extra_args = args
    bare_env = dict(stack.env, PYTHONPATH=str(ROOT))
    bare = Service("bench.bare", free_port(), bare_env, tmp / "bare.log", extra_args=args)
    return stack, bare


def _migrate(tmp: Path) -> None:
    from common.db_schema import upgrade_schema
    from ingest.app import MIGRATIONS
    from ingest.store import Base

    db = tmp / "data" / "ingest.db"
    upgrade_schema(f"sqlite+aiosqlite:///{db}", MIGRATIONS, Base.metadata)


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
    tmp: Path, *, bootstrap: str, pinned: bool, workers: int, seconds: float, repeats: int, connections: int
) -> dict[str, Any]:
    stack, bare = _servers(tmp, bootstrap, workers)
    ingest = stack["ingest"]
    if workers > 1:
        _migrate(tmp)  # several workers would otherwise race to create the same tables
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
            out = run_wrk(
                f"{service.url}/v1/leads",
                token=api_key,  # the bare endpoint ignores it; ingest looks it up
                seconds=duration,
                connections=connections,
                threads=threads,
                cpus=gen_cpus,
            )
            cpu_s = meter.stop()
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
    where = "pinned" if pinned else f"whole-machine, {workers} worker(s)"
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
    return result
