"""`python -m bench.sqlprep [--before DIR]`: CPU microseconds per driver-level statement on the inline SQLite store.

What the stores' hot paths cost per statement, through the same signatures in both trees (at 84d13e2
routing.store.bulk.insert_many and routing.store.prepared.run/fetch, now common.sqlprep's; common.db.insert_many
and sqlite_fetchall): an executemany of 100 rows, a one-row insert, a small fetch (5 rows), each in a loop inside
one greenlet hop (the statement's own cost), plus the async session helpers (100 rows, 1 row, a small hand-written
read) each awaited on its own. With --before, the same worker runs on another tree's services (a `git archive` of
the baseline), A B A B, and the ratios are medians.
CPU is the process's (time.process_time): the machine is shared, wall time is not reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPS = ("many100", "one_row", "fetch5", "async_many100", "async_one_row", "async_read5")


async def _worker(folder: Path, loops: int) -> dict[str, float]:
    from sqlalchemy import Column, Integer, String, Table, select
    from sqlalchemy.orm import Session

    from common.db import Database, UtcDateTime, new_metadata

    try:  # this tree: common.sqlprep; the baseline (84d13e2): routing/store/bulk.py, prepared.py and common.db's
        from common import sqlprep as bulk
        from common import sqlprep as prepared
        from common.sqlprep_session import insert_rows as insert_many
        from common.sqlprep_session import sqlite_rows as sqlite_fetchall
    except ImportError:
        from common.db import insert_many, sqlite_fetchall  # type: ignore[attr-defined,no-redef]
        from routing.store import bulk, prepared  # type: ignore[no-redef,attr-defined]

    metadata = new_metadata()
    table = Table(
        "bench_rows",
        metadata,
        Column("id", String(40), primary_key=True),
        Column("n", Integer, nullable=False),
        Column("kind", String(20), nullable=False),
        Column("at", UtcDateTime, nullable=True),
    )
    db = Database(f"sqlite:///{folder / 'bench.db'}", sqlite_synchronous="OFF")
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    from datetime import UTC, datetime

    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    counter = iter(range(10**9))

    def rows(n: int) -> list[dict[str, Any]]:
        return [{"id": f"r{next(counter)}", "n": i, "kind": "k", "at": now} for i in range(n)]

    def one_insert() -> Any:
        return table.insert()

    def small_read() -> Any:
        return select(table.c.id, table.c.n, table.c.kind).where(table.c.n < 5).limit(5)

    async with db.transaction() as session:
        await insert_many(session, table, rows(100))
    results: dict[str, float] = {}

    async def in_hop(name: str, work: Any, make: Any) -> None:
        async with db.transaction() as session:

            def run(batch: list[Any]) -> Any:
                def each(sync: Session) -> None:
                    connection = sync.connection()
                    for item in batch:
                        work(connection, item)

                return each

            await session.run_sync(run(make()))  # warm: statement caches
            batch = make()
            start = time.process_time()
            await session.run_sync(run(batch))
            results[name] = (time.process_time() - start) / len(batch) * 1e6

    await in_hop("many100", lambda c, r: bulk.insert_many(c, table, r), lambda: [rows(100) for _ in range(loops // 10)])
    await in_hop("one_row", lambda c, r: prepared.run(c, "bench_one", one_insert, r), lambda: rows(loops))
    await in_hop("fetch5", lambda c, _: prepared.fetch(c, "bench_read", small_read, literal=True), lambda: [0] * loops)

    async def awaited(name: str, work: Any, count: int) -> None:
        async with db.transaction() as session:
            await work(session)
            start = time.process_time()
            for _ in range(count):
                await work(session)
            results[name] = (time.process_time() - start) / count * 1e6

    await awaited("async_many100", lambda s: insert_many(s, table, rows(100)), loops // 10)
    await awaited("async_one_row", lambda s: insert_many(s, table, rows(1)), loops)
    sql = "SELECT id, n, kind FROM bench_rows WHERE n < ? LIMIT 5"
    await awaited("async_read5", lambda s: sqlite_fetchall(s, sql, [5]), loops)
    await db.dispose()
    return results


def _run_tree(services: Path, loops: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{services}:{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.sqlprep", "--worker", "--loops", str(loops)],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, help="the baseline tree (its services/ is imported)")
    parser.add_argument("--loops", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(asyncio.run(_worker(Path(tmp), args.loops))))
        return 0
    trees = {"after": ROOT / "services"}
    if args.before:
        trees = {"before": args.before / "services", **trees}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, services in trees.items():
            runs[name].append(_run_tree(services, args.loops))
    medians = {name: {op: statistics.median(r[op] for r in rs) for op in OPS} for name, rs in runs.items()}
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f}; CPU us per statement (median of {args.repeats})")
    print(f"{'op':<16}" + "".join(f"{name:>10}" for name in trees) + ("     ratio" if args.before else ""))
    for op in OPS:
        line = f"{op:<16}" + "".join(f"{medians[name][op]:>10.1f}" for name in trees)
        if args.before:
            line += f"{medians['after'][op] / medians['before'][op]:>10.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
