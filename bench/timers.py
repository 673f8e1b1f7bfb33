"""SLA timers: N open timers in routing's store plus a burst of due breaches, against a bare in-memory heap."""

from __future__ import annotations

import asyncio
import compileall
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml
from sqlalchemy import create_engine, delete, func, insert, select
from tests.e2e.conftest import EVEN_RULES, EVEN_SEED
from tests.support.stack import ROOT

from bench.util import interleave, log, median, ratio, summarize

BURST = 5_000
CHUNK = 50_000
# The timer loop's near horizon in these runs (its watermark moves a minute per refill). The open timers fall due
# from 20 minutes after the store is filled, over an hour: filling 3M rows and the runs on a loaded machine take
# well over 8 minutes, and timers falling due mid-run would be fired ahead of the burst.
HORIZON_S = 600.0
SPREAD_START = timedelta(minutes=20)


async def _template(url: str) -> str:
    """Migrate, seed a roster and rules, and route one real lead: its rows are the pattern for the burst."""
    from common.db import Database
    from common.db_schema import upgrade_schema_async
    from common.envelope import Event
    from routing.app import MIGRATIONS
    from routing.handlers import Router
    from routing.settings import RoutingSettings
    from routing.store import Base

    await upgrade_schema_async(url, MIGRATIONS, Base.metadata)
    db = Database(url)
    router = Router(RoutingSettings())
    lead_id = str(uuid.uuid4())
    try:
        async with db.transaction() as session:
            await router.replace_roster(session, yaml.safe_load(EVEN_SEED))
            await router.install_rules(session, EVEN_RULES)
        event = Event(
            type="lead.scored",
            source="/handoff/scoring",
            subject=lead_id,
            data={
                "lead_id": lead_id,
                "lead": {"email": "template@example.org", "company": "Example Org", "country": "DE"},
                "enrichment": {},
                "score": {"grade": "A", "total": 90},
                "source": {"id": None, "kind": "api", "name": "admin API"},
                "is_test": False,
                "duplicate_of": None,
                "received_at": datetime.now(UTC).isoformat(),
            },
        )
        async with db.transaction() as session:
            await router.on_scored(session, event)
    finally:
        await db.dispose()
    return lead_id


def prepare(path: Path, n: int) -> dict[str, Any]:
    """A routing store with BURST routed leads whose breach timers are the burst, and n more open timers."""
    from routing.store import AssignmentRow, LeadRow, SlaTimer

    path.parent.mkdir(parents=True, exist_ok=True)
    template_id = asyncio.run(_template(f"sqlite+aiosqlite:///{path}"))
    leads, assignments, timers = LeadRow.__table__, AssignmentRow.__table__, SlaTimer.__table__
    engine = create_engine(f"sqlite:///{path}")
    now = datetime.now(UTC)
    placeholder = now + timedelta(hours=2)  # each worker moves the burst to "now" itself, after start-up
    started = time.perf_counter()
    with engine.begin() as conn:
        lead = dict(conn.execute(select(leads).where(leads.c.lead_id == template_id)).mappings().one())
        assignment = dict(
            conn.execute(select(assignments).where(assignments.c.lead_id == template_id)).mappings().one()
        )
        conn.execute(delete(timers))  # only the timers below exist
        next_assignment = int(conn.execute(select(func.max(assignments.c.id))).scalar_one()) + 1
        lead_rows, assignment_rows, burst_rows = [], [], []
        for k in range(BURST):
            lead_id = str(uuid.uuid4())
            lead_rows.append({**lead, "lead_id": lead_id})
            assignment_rows.append({**assignment, "id": next_assignment + k, "lead_id": lead_id})
            burst_rows.append(
                {
                    "lead_id": lead_id,
                    "assignment_id": next_assignment + k,
                    "kind": "breach",
                    "fraction": None,
                    "due_at": placeholder,
                    "fired_at": None,
                    "cancelled": False,
                }
            )
        conn.execute(insert(leads), lead_rows)
        conn.execute(insert(assignments), assignment_rows)
        conn.execute(insert(timers), burst_rows)
        first, last = conn.execute(select(func.min(timers.c.id), func.max(timers.c.id))).one()
        # The open timers: no lead behind them (they do not fall due during the run), deadlines over an hour.
        spread_start = now + SPREAD_START
        # Straight to the driver, in the column format SQLAlchemy writes (UTC, no zone): 3M rows in a minute or
        # two rather than a quarter of an hour through the ORM's bind processing on a loaded machine.
        fill = (
            "INSERT INTO sla_timers (lead_id, assignment_id, kind, fraction, due_at, fired_at, cancelled, escalate_at)"
            " VALUES (?, 0, 'breach', NULL, ?, NULL, 0, NULL)"
        )
        start = spread_start.replace(tzinfo=None)
        for offset in range(0, n, CHUNK):
            conn.exec_driver_sql(
                fill,
                [
                    (
                        f"00000000-0000-4000-8000-{i:012d}",
                        (start + timedelta(seconds=3600 * i / n)).strftime("%Y-%m-%d %H:%M:%S.%f"),
                    )
                    for i in range(offset, min(n, offset + CHUNK))
                ],
            )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return {
        "open_timers": n + BURST,
        "burst_ids": f"{first}:{last}",
        "insert_rows_per_s": round((n + 3 * BURST) / elapsed),
        "db_mb": round(path.stat().st_size / 1024 / 1024, 1),
    }


def _command(mode: str, db: Path, burst_ids: str, spawned: float, idle_s: float, url: str | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.timer_worker",
        mode,
        "--db",
        str(db),
        "--spawned",
        repr(spawned),
        "--burst-ids",
        burst_ids,
        "--idle-s",
        str(idle_s),
        "--horizon-s",
        str(HORIZON_S),
        *(["--url", url] if url else []),
    ]


def _worker(
    mode: str,
    db: Path,
    burst_ids: str,
    *,
    idle_s: float,
    recover_only: bool,
    spawned: float | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    command = _command(mode, db, burst_ids, spawned or time.time(), idle_s, url)
    if recover_only:
        command.append("--recover-only")
    result = db.parent / f"result-{uuid.uuid4().hex}.json"
    done = subprocess.run([*command, "--result", str(result)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if not result.exists():
        raise RuntimeError(f"timer worker failed ({done.returncode}): {done.stderr[-2000:]} {done.stdout[-2000:]}")
    try:
        return dict(orjson.loads(result.read_bytes()))
    finally:
        result.unlink(missing_ok=True)


def _after_kill(db: Path, burst_ids: str) -> dict[str, Any]:
    """A routing timer loop in service on this store is killed with SIGKILL; the time from the kill until a
    new process has the timers back in service (spawn, imports, migrations checked, horizon read, swept)."""
    held = subprocess.Popen(
        [*_command("handoff", db, burst_ids, time.time(), 0.0), "--hold"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert held.stdout is not None
    for line in held.stdout:
        if line.startswith("READY"):
            break
    else:
        raise RuntimeError("the held timer worker ended before it was in service")
    killed = time.time()
    os.kill(held.pid, signal.SIGKILL)
    held.wait()
    return _worker("handoff", db, burst_ids, idle_s=0.0, recover_only=True, spawned=killed)


def _burst_summary(result: dict[str, Any]) -> dict[str, Any]:
    burst = result.pop("burst")
    return {
        "expected": burst["expected"],
        "detected": burst["detected"],
        "complete": burst["complete"],
        "late_ms": summarize(burst["late_ms"]),
        "claim_late_ms": summarize(burst["claim_late_ms"]),
    }


def run(tmp: Path, *, quick: bool, sizes: list[int] | None = None) -> dict[str, Any]:
    """For each N: recovery A B A B (read-only), restarts after a SIGKILL, then the heap's burst, then routing's
    (which changes the store)."""
    sizes = sizes or ([100_000] if quick else [100_000, 1_000_000, 3_000_000])
    # A restart is timed as an installed service restarts: with its modules' bytecode on disk (pip and the image
    # compile them). Where PYTHONDONTWRITEBYTECODE is set, as on some CI machines, every start would otherwise
    # compile ~130 of Handoff's modules from source again (~0.3 s of CPU), which no deployment pays.
    compileall.compile_dir(ROOT / "services", quiet=1)
    repeats = 2 if quick else 3
    idle_s = 5.0 if quick else 20.0
    results = []
    for n in sizes:
        db = tmp / f"timers-{n}" / "routing.db"
        prepared = prepare(db, n)
        log(f"timers: {prepared['open_timers']} open timers stored ({prepared['insert_rows_per_s']} rows/s)")
        recover_a, recover_b = interleave(
            repeats,
            lambda _i, db=db, p=prepared: _worker("handoff", db, p["burst_ids"], idle_s=idle_s, recover_only=True),
            lambda _i, db=db, p=prepared: _worker("heap", db, p["burst_ids"], idle_s=idle_s, recover_only=True),
        )
        after_kill = [_after_kill(db, prepared["burst_ids"]) for _ in range(repeats)]
        heap = _worker("heap", db, prepared["burst_ids"], idle_s=idle_s, recover_only=False)
        handoff = _worker("handoff", db, prepared["burst_ids"], idle_s=idle_s, recover_only=False)
        entry = {
            "n": n,
            **prepared,
            "handoff": {**handoff, "burst": _burst_summary(handoff)},
            "heap": {**heap, "burst": _burst_summary(heap)},
            "recovery_s": {
                "handoff": median([r["ready_s"] for r in recover_a]),
                "heap": median([r["ready_s"] for r in recover_b]),
                "handoff_after_imports": median([r["ready_s"] - r["imported_s"] for r in recover_a]),
                "heap_after_imports": median([r["ready_s"] - r["imported_s"] for r in recover_b]),
                "handoff_runs": [r["ready_s"] for r in recover_a],
                "heap_runs": [r["ready_s"] for r in recover_b],
                "handoff_after_sigkill": median([r["ready_s"] for r in after_kill]),
                "handoff_after_sigkill_runs": [r["ready_s"] for r in after_kill],
                "horizon_timers_at_start": recover_a[0].get("horizon_timers"),
            },
        }
        entry["recovery_s"]["ratio"] = ratio(entry["recovery_s"]["handoff"], entry["recovery_s"]["heap"])
        p99 = entry["handoff"]["burst"]["late_ms"]["p99"]
        log(
            f"timers {n}: breach p99 {p99} ms late (heap {entry['heap']['burst']['late_ms']['p99']} ms), "
            f"ready in {entry['recovery_s']['handoff']} s (heap {entry['recovery_s']['heap']} s), "
            f"after SIGKILL {entry['recovery_s']['handoff_after_sigkill']} s"
        )
        results.append(entry)
        for leftover in db.parent.glob("routing.db*"):
            leftover.unlink(missing_ok=True)
    return {"burst": BURST, "idle_s": idle_s, "horizon_s": HORIZON_S, "sizes": results}


# -- PostgreSQL: the burst on the local server (scripts/postgres.sh), a fresh database per size ----------------

PG_ADMIN_URL = os.environ.get("HANDOFF_TEST_PG_URL", "postgresql://handoff:handoff@127.0.0.1:5432/handoff")


async def _prepare_pg(admin_url: str, n: int) -> tuple[str, str, dict[str, Any]]:
    """A fresh PostgreSQL database shaped as prepare() shapes the SQLite file; the open timers written by the
    server itself (generate_series)."""
    import asyncpg
    from sqlalchemy.ext.asyncio import create_async_engine

    from routing.store import AssignmentRow, LeadRow, SlaTimer

    name = f"handoff_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    template_id = await _template(url)
    tables: Any = (LeadRow.__table__, AssignmentRow.__table__, SlaTimer.__table__)
    leads, assignments, timers = tables
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    started = time.perf_counter()
    async with engine.begin() as conn:
        lead = dict((await conn.execute(select(leads).where(leads.c.lead_id == template_id))).mappings().one())
        assignment = dict(
            (await conn.execute(select(assignments).where(assignments.c.lead_id == template_id))).mappings().one()
        )
        await conn.execute(delete(timers))
        next_assignment = int((await conn.execute(select(func.max(assignments.c.id)))).scalar_one()) + 1
        ids = [str(uuid.uuid4()) for _ in range(BURST)]
        await conn.execute(insert(leads), [{**lead, "lead_id": lead_id} for lead_id in ids])
        await conn.execute(
            insert(assignments),
            [{**assignment, "id": next_assignment + k, "lead_id": lead_id} for k, lead_id in enumerate(ids)],
        )
        await conn.execute(
            insert(timers),
            [
                {
                    "lead_id": lead_id,
                    "assignment_id": next_assignment + k,
                    "kind": "breach",
                    "fraction": None,
                    "due_at": now + timedelta(hours=2),
                    "fired_at": None,
                    "cancelled": False,
                }
                for k, lead_id in enumerate(ids)
            ],
        )
        first, last = (await conn.execute(select(func.min(timers.c.id), func.max(timers.c.id)))).one()
        await conn.exec_driver_sql(
            "INSERT INTO sla_timers (lead_id, assignment_id, kind, fraction, due_at, fired_at, cancelled, escalate_at)"
            " SELECT '00000000-0000-4000-8000-' || lpad(i::text, 12, '0'), 0, 'breach', NULL,"
            f" $1::timestamptz + make_interval(secs => i * 3600.0 / {n}), NULL, false, NULL"
            f" FROM generate_series(0, {n - 1}) AS i",
            (now + SPREAD_START,),
        )
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE sla_timers")
    await engine.dispose()
    elapsed = time.perf_counter() - started
    prepared = {
        "open_timers": n + BURST,
        "burst_ids": f"{first}:{last}",
        "insert_rows_per_s": round((n + 3 * BURST) / elapsed),
    }
    return url, name, prepared


async def _drop_pg(admin_url: str, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def run_pg(tmp: Path, sizes: list[int], *, idle_s: float = 20.0) -> dict[str, Any]:
    """The burst on PostgreSQL for each N (one handoff run, one heap run) and the restart to in service."""
    subprocess.run([ROOT / "scripts/postgres.sh", "ensure"], check=True, capture_output=True)
    results = []
    for n in sizes:
        url, name, prepared = asyncio.run(_prepare_pg(PG_ADMIN_URL, n))
        folder = tmp / f"timers-pg-{n}" / "run"
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            log(f"timers (PostgreSQL): {prepared['open_timers']} open timers stored")
            ready = _worker("handoff", folder, prepared["burst_ids"], idle_s=idle_s, recover_only=True, url=url)
            heap = _worker("heap", folder, prepared["burst_ids"], idle_s=idle_s, recover_only=False, url=url)
            handoff = _worker("handoff", folder, prepared["burst_ids"], idle_s=idle_s, recover_only=False, url=url)
        finally:
            asyncio.run(_drop_pg(PG_ADMIN_URL, name))
        entry = {
            "n": n,
            **prepared,
            "ready": ready,
            "handoff": {**handoff, "burst": _burst_summary(handoff)},
            "heap": {**heap, "burst": _burst_summary(heap)},
        }
        log(
            f"timers (PostgreSQL) {n}: breach p99 {entry['handoff']['burst']['late_ms']['p99']} ms late "
            f"(heap {entry['heap']['burst']['late_ms']['p99']} ms), in service in {ready['ready_s']} s"
        )
        results.append(entry)
    return {"burst": BURST, "idle_s": idle_s, "horizon_s": HORIZON_S, "postgres": results}
