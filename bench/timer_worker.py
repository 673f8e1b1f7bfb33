"""One SLA-timer process for bench.timers: routing's real TimerLoop (`handoff`) or a bare heap (`heap`).

    python -m bench.timer_worker handoff|heap --db PATH --spawned T --burst-ids A:B [--idle-s S]
        [--recover-only | --hold]

Prints one JSON line: start-up times (from the parent's spawn time, or the SIGKILL of the process before it),
idle CPU, memory, and for each timer of the burst how late its breach was detected. The burst: 5,000 new breach
timers for the burst's routed leads, written by this process (as an assignment writes its clock) two seconds
before they fall due within one second. `--hold` runs the loop until killed (printing READY once in service).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import importlib
import os
import resource
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


def _rss_mb(key: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _burst_due(n: int) -> list[float]:
    """n deadlines spread evenly over one second, starting at the next whole second plus one."""
    start = float(int(time.time()) + 2)
    return [start + k / n for k in range(n)]


async def _idle(args: argparse.Namespace, out: dict[str, Any]) -> None:
    cpu = _cpu_s()
    await asyncio.sleep(args.idle_s)
    out["idle_cpu_pct"] = round((_cpu_s() - cpu) / args.idle_s * 100, 2)
    out["rss_mb"] = _rss_mb()


async def _wait(done: asyncio.Event, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    return done.is_set()


async def handoff(args: argparse.Namespace, out: dict[str, Any]) -> None:
    # What the service's entrypoint (`python -m routing.serve`) imports before its timers are in service: the
    # routing package first (common.startup: the collector's thresholds before SQLAlchemy loads), then its
    # background half (routing.engine); FastAPI and the HTTP routes load after (routing.app, not imported here).
    importlib.import_module("routing.serve")
    from sqlalchemy import func, insert, select

    from common.db import Database
    from common.db_schema import upgrade_schema_async
    from common.runtime import tune_gc
    from routing.engine import MIGRATIONS
    from routing.handlers import Router
    from routing.settings import RoutingSettings
    from routing.store import Base, RoutingRepository, SlaTimer
    from routing.timers import TimerLoop
    from routing.usecases import clock as clock_usecase

    out["imported_s"] = round(time.time() - args.spawned, 3)
    out["imported_cpu_s"] = round(_cpu_s(), 3)
    url = args.url or f"sqlite+aiosqlite:///{args.db}"
    settings = RoutingSettings()
    db = Database(url, sqlite_synchronous=settings.sqlite_synchronous)
    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)  # as routing's lifespan does
    tune_gc()  # as Runtime.start does
    out["migrated_s"] = round(time.time() - args.spawned, 3)
    out["migrated_cpu_s"] = round(_cpu_s(), 3)
    router = Router(settings)
    loop = TimerLoop(
        db,
        router,
        batch_size=settings.timer_batch_size,
        max_sleep_s=settings.timer_max_sleep_s,
        horizon_s=args.horizon_s,
    )

    expected = args.burst_last - args.burst_first + 1
    first, last = 0, -1  # the ids of the burst's timers, once written
    # Per session: (timer id, due, claim time) fired in a transaction not yet committed (a rollback drops them).
    claimed: dict[int, list[tuple[int, float, float]]] = {}
    detected: dict[int, tuple[float, float, float]] = {}  # timer id -> (due, claimed, committed)
    all_detected = asyncio.Event()
    build = clock_usecase.sla_event
    current_session: list[Any] = [None]
    fire, sweep = clock_usecase.fire_timers, clock_usecase.detect_due_timers

    async def fire_and_note(rt: Any, session: Any, ids: Any, now: datetime) -> int:
        current_session[0] = session
        return await fire(rt, session, ids, now)

    async def sweep_and_note(rt: Any, session: Any, now: datetime, limit: int, **kw: Any) -> int:
        current_session[0] = session
        return await sweep(rt, session, now, limit, **kw)

    # The breach counts as detected when the transaction that fires it commits (that is when anyone can see it).
    def build_and_note(kind: str, lead: Any, current: Any, timer: Any, now: datetime, **extra: Any) -> Any:
        if kind == "lead.sla_breached" and first <= timer.id <= last:
            due = timer.due_at if timer.due_at.tzinfo else timer.due_at.replace(tzinfo=UTC)
            claimed.setdefault(id(current_session[0]), []).append((timer.id, due.timestamp(), now.timestamp()))
        return build(kind, lead, current, timer, now, **extra)

    def on_commit(session: Any) -> None:
        committed = time.time()
        for timer_id, due, claim in claimed.pop(id(session), []):
            detected.setdefault(timer_id, (due, claim, committed))
        if len(detected) >= expected:
            all_detected.set()

    clock_usecase.sla_event = build_and_note
    clock_usecase.fire_timers = fire_and_note  # type: ignore[assignment]
    clock_usecase.detect_due_timers = sweep_and_note
    db.on_commit(on_commit)

    # In service: the horizon read, the overdue swept, pending escalations looked for (what a round does first).
    await loop.tick()
    await loop.sweep()
    async with db.read() as session:
        next_due = await RoutingRepository(session).next_due()
    out["ready_s"] = round(time.time() - args.spawned, 3)
    out["ready_cpu_s"] = round(_cpu_s(), 3)  # CPU from exec to in service: the time on an idle core
    out["sees_timers"] = next_due is not None
    out["horizon_timers"] = len(loop.horizon)
    out["rss_ready_mb"] = _rss_mb()
    if args.recover_only:
        await db.dispose()
        return
    task = asyncio.create_task(loop.run())
    if args.hold:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await asyncio.Event().wait()  # until SIGKILL
    await _idle(args, out)

    table = SlaTimer.__table__
    due_times = _burst_due(expected)
    async with db.transaction() as session:
        clocks = (
            await session.execute(
                select(table.c.lead_id, table.c.assignment_id)
                .where(table.c.id.between(args.burst_first, args.burst_last))
                .order_by(table.c.id)
            )
        ).all()
        first = int((await session.execute(select(func.max(table.c.id)))).scalar_one()) + 1
        await session.execute(
            insert(table),  # type: ignore[arg-type]
            [
                {
                    "lead_id": lead_id,
                    "assignment_id": assignment_id,
                    "kind": "breach",
                    "fraction": None,
                    "due_at": datetime.fromtimestamp(due, UTC),
                    "fired_at": None,
                    "cancelled": False,
                }
                for (lead_id, assignment_id), due in zip(clocks, due_times, strict=True)
            ],
        )
        last = first + expected - 1
        router.on_timer_written(datetime.fromtimestamp(due_times[0], UTC))  # as schedule_clock does
    out["burst_written_ahead_s"] = round(due_times[0] - time.time(), 3)
    await asyncio.sleep(max(0.0, due_times[0] - time.time()))
    cpu = _cpu_s()  # from the first due time: the CPU the process spent firing (and escalating meanwhile)
    complete = await _wait(all_detected, args.burst_timeout_s)
    out["burst_cpu_ms_per_timer"] = round((_cpu_s() - cpu) * 1000 / expected, 3)
    out["load_average"] = os.getloadavg()[0]
    await loop.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 30)
    await db.dispose()
    out["burst"] = {
        "expected": expected,
        "detected": len(detected),
        "complete": complete,
        "late_ms": [round((c - d) * 1000, 2) for d, _cl, c in detected.values()],
        "claim_late_ms": [round((cl - d) * 1000, 2) for d, cl, _c in detected.values()],
    }


async def heap(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """The bare baseline: every open timer read into a heap, fired by one sleeping task; no work per timer."""
    out["imported_s"] = round(time.time() - args.spawned, 3)
    if args.url:  # PostgreSQL: the driver hands back aware datetimes
        import asyncpg

        pg = await asyncpg.connect(args.url.replace("postgresql+asyncpg://", "postgresql://", 1))
        rows = await pg.fetch("SELECT due_at, id FROM sla_timers WHERE fired_at IS NULL")
        await pg.close()
        timers = [(due.timestamp(), timer_id) for due, timer_id in rows]
    else:
        conn = sqlite3.connect(args.db)
        rows = conn.execute("SELECT due_at, id FROM sla_timers WHERE fired_at IS NULL").fetchall()
        conn.close()
        parse = datetime.fromisoformat
        timers = [(parse(due).replace(tzinfo=UTC).timestamp(), timer_id) for due, timer_id in rows]
    del rows
    heapq.heapify(timers)
    out["migrated_s"] = out["imported_s"]
    out["ready_s"] = round(time.time() - args.spawned, 3)
    out["ready_cpu_s"] = round(_cpu_s(), 3)  # CPU from exec to in service: the time on an idle core
    out["sees_timers"] = bool(timers)
    out["rss_ready_mb"] = _rss_mb()
    if args.recover_only:
        return
    first, last = args.burst_first, args.burst_last
    expected = last - first + 1
    late: list[float] = []
    wake = asyncio.Event()
    all_fired = asyncio.Event()

    async def fire() -> None:
        while True:
            delay = timers[0][0] - time.time() if timers else 3600.0
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
                wake.clear()
                continue
            due, timer_id = heapq.heappop(timers)
            if timer_id < 0:
                late.append((time.time() - due) * 1000)
                if len(late) >= expected:
                    all_fired.set()

    task = asyncio.create_task(fire())
    await _idle(args, out)
    # The burst is rescheduled under negative ids (the old entries stay, due in two hours, as in the store).
    for k, due in enumerate(_burst_due(expected)):
        heapq.heappush(timers, (due, -(first + k)))
    wake.set()
    complete = await _wait(all_fired, args.burst_timeout_s)
    task.cancel()
    out["burst"] = {
        "expected": expected,
        "detected": len(late),
        "complete": complete,
        "late_ms": [round(x, 2) for x in late],
        "claim_late_ms": [round(x, 2) for x in late],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.timer_worker")
    parser.add_argument("mode", choices=["handoff", "heap"])
    parser.add_argument("--db", required=True, help="the SQLite store (with --url: a folder for the run log)")
    parser.add_argument("--url", help="a PostgreSQL store (postgresql+asyncpg://...) instead of the SQLite file")
    parser.add_argument("--spawned", type=float, required=True)
    parser.add_argument("--burst-ids", required=True, help="first:last sla_timers ids of the burst")
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--burst-timeout-s", type=float, default=180.0)
    parser.add_argument("--recover-only", action="store_true")
    parser.add_argument("--result", help="also write the result (JSON) to this file")
    parser.add_argument("--hold", action="store_true", help="run the loop until killed; print READY once in service")
    parser.add_argument("--horizon-s", type=float, default=300.0, help="the timer loop's near horizon")
    args = parser.parse_args()
    args.burst_first, args.burst_last = (int(x) for x in args.burst_ids.split(":"))
    import uvloop

    out: dict[str, Any] = {"mode": args.mode}
    uvloop.run(handoff(args, out) if args.mode == "handoff" else heap(args, out))
    out["rss_peak_mb"] = _rss_mb("VmHWM")
    # Marked: routing's logs also go to stdout. Blocking again (the event loop may have left stdout non-blocking,
    # and a line of 80 KB to a busy parent's pipe would then be cut at the pipe's 64 KiB).
    os.set_blocking(sys.stdout.fileno(), True)
    if args.result:
        Path(args.result).write_bytes(orjson.dumps(out))  # the bench reads this file: no pipe in the way
    summary = {k: v for k, v in out.items() if k != "burst"} | {"recover_only": args.recover_only}
    with (Path(args.db).parent / "runs.jsonl").open("ab") as runs:  # every run's figures, beside the store
        runs.write(orjson.dumps(summary) + b"\n")
    sys.stdout.write("RESULT " + orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
