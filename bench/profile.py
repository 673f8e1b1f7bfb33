"""`python -m bench.profile [--only handlers,ingest,e2e] [--seconds S]`: where the services spend their time.

`handlers` times ingest's accept_lead and routing's on_scored in-process (CPU and SQL statements per lead);
`ingest` and `e2e` sample the service processes with py-spy (`pip install py-spy`) under the bench's load. Writes
the folded stacks and summary.md (self time by layer, top functions) under bench/results/profiles/<UTC time>/.
py-spy samples a runnable thread that is waiting for a CPU as if it ran: on a busy machine, read the layers, not
single lines.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from tests.e2e.conftest import EVEN_RULES, EVEN_SEED
from tests.support.stack import ROOT, Service, Stack, free_port

from bench.e2e import closed_load, register_webhook, webhooks_available
from bench.ingest import source_key
from bench.load import run_wrk
from bench.util import RESULTS, UVICORN_ARGS, BenchBroker, log, pin

# Where a sample's innermost frame lives says which layer pays for it; the first match wins.
CATEGORIES = (
    ("sqlite (C driver and its thread)", ("sqlite3/", "aiosqlite/")),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("aiokafka", ("aiokafka/", "kafka/")),
    ("logging (structlog, stdlib)", ("structlog/", "logging/")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("fastapi / starlette", ("fastapi/", "starlette/")),
    ("uvicorn / httptools", ("uvicorn/", "httptools/")),
    ("httpx / httpcore", ("httpx/", "httpcore/")),
    ("alembic", ("alembic/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("email / phone / country parsing", ("email_validator/", "phonenumbers/", "pycountry/", "idna/")),
    ("Handoff: common", ("services/common/",)),
    ("Handoff: ingest", ("services/ingest/",)),
    ("Handoff: scoring", ("services/scoring/",)),
    ("Handoff: routing", ("services/routing/",)),
    ("asyncio / uvloop", ("asyncio/", "uvloop/")),
    ("json / orjson / yaml", ("json/", "orjson", "yaml/")),
)


def _category(frame: str) -> str:
    for name, needles in CATEGORIES:
        if any(needle in frame for needle in needles):
            return name
    return "other (stdlib, interpreter)"


# Frames every sample passes through (process start-up, the event loop's entry): no information in them.
_SCAFFOLDING = (
    "click/",
    "runpy",
    "uvicorn/main.py",
    "uvicorn/__main__.py",
    "uvicorn/server.py",
    "_compat.py",
    "asyncio/runners.py",
    "threading.py",
)


def _function(frame: str) -> str:
    """`name (path/to/file.py:line)` -> `name (file.py)`, so lines of one function add up."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def summarize(folded: Path, top: int = 20) -> str:
    """A Markdown summary of one py-spy raw (folded) profile."""
    total = 0
    by_category: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        by_category[_category(leaf)] += count
        self_time[_function(leaf)] += count
        for function in {_function(f) for f in frames if not any(x in f for x in _SCAFFOLDING)}:
            inclusive[function] += count
    if not total:
        return f"## {folded.stem}\n\nno samples\n"

    def pct(n: int) -> str:
        return f"{100 * n / total:.1f}%"

    lines = [f"## {folded.stem} ({total} samples)", "", "| layer (self time) | share |", "|---|---|"]
    lines += [f"| {name} | {pct(n)} |" for name, n in by_category.most_common()]
    lines += ["", "| function (self time) | share |", "|---|---|"]
    lines += [f"| `{name}` | {pct(n)} |" for name, n in self_time.most_common(top)]
    lines += ["", "| function (inclusive time) | share |", "|---|---|"]
    lines += [f"| `{name}` | {pct(n)} |" for name, n in inclusive.most_common(top + 10)]
    return "\n".join(lines) + "\n"


async def _handler_costs(tmp: Path, n: int) -> str:
    """CPU and SQL statements per lead of ingest's accept_lead and routing's on_scored, in-process, no HTTP or Kafka.

    Each runs once with a commit per lead (as ingest's route does) and once with n leads in one transaction (as a
    consumer batch does), so the share of the commit and of the per-statement work can be read apart.
    """
    import time

    import yaml
    from sqlalchemy import event
    from tests.support.stack import sample_lead

    from bench.routing import scored_events
    from common.db import Database
    from common.db_schema import upgrade_schema_async
    from ingest import handlers as ingest_handlers
    from ingest.app import MIGRATIONS as INGEST_MIGRATIONS
    from ingest.settings import IngestSettings
    from ingest.store import Base as IngestBase
    from routing.app import MIGRATIONS as ROUTING_MIGRATIONS
    from routing.handlers import Router
    from routing.settings import RoutingSettings
    from routing.store import Base as RoutingBase

    lines = [
        "## Handler cost per lead (in-process)",
        "",
        "| handler | mode | wall ms | CPU ms | statements |",
        "|---|---|---|---|---|",
    ]

    async def measure(name: str, db: Database, work: Any, per_lead_commit: bool) -> None:
        statements = [0]
        event.listen(
            db.engine.sync_engine, "before_cursor_execute", lambda *_a: statements.__setitem__(0, statements[0] + 1)
        )
        wall, cpu = time.perf_counter(), time.process_time()
        if per_lead_commit:
            for i in range(n):
                async with db.transaction() as session:
                    await work(session, i)
        else:
            async with db.transaction() as session:
                for i in range(n):
                    await work(session, i)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        mode = "commit per lead" if per_lead_commit else f"{n} leads, one transaction"
        lines.append(f"| {name} | {mode} | {wall / n * 1000:.2f} | {cpu / n * 1000:.2f} | {statements[0] / n:.1f} |")

    url = f"sqlite+aiosqlite:///{tmp / 'ingest.db'}"
    await upgrade_schema_async(url, INGEST_MIGRATIONS, IngestBase.metadata)
    db = Database(url)
    settings = IngestSettings()
    offset = [0]

    async def accept(session: Any, i: int) -> None:
        offset[0] += 1
        lead = sample_lead(offset[0])
        await ingest_handlers.accept_lead(
            session, settings, raw=lead, source=None, now=datetime.now(UTC), correlation_id="c"
        )

    await measure("ingest accept_lead", db, accept, True)
    await measure("ingest accept_lead", db, accept, False)
    await db.dispose()

    url = f"sqlite+aiosqlite:///{tmp / 'routing.db'}"
    await upgrade_schema_async(url, ROUTING_MIGRATIONS, RoutingBase.metadata)
    db = Database(url)
    router = Router(RoutingSettings())
    async with db.transaction() as session:
        await router.replace_roster(session, yaml.safe_load(EVEN_SEED))
        await router.install_rules(session, EVEN_RULES)
    events = iter(scored_events(2 * n))

    async def route(session: Any, _i: int) -> None:
        await router.on_scored(session, next(events))

    await measure("routing on_scored", db, route, True)
    await measure("routing on_scored", db, route, False)
    await db.dispose()
    return "\n".join(lines) + "\n"


def _py_spy() -> str | None:
    """py-spy on PATH, or beside this interpreter (pip installs it into the venv's bin/)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def _record(service: Service, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    assert service.process is not None
    return subprocess.Popen(
        [
            _py_spy() or "py-spy",
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "--duration",
            str(round(seconds)),
            "--pid",
            str(service.process.pid),
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def profile_ingest(tmp: Path, bootstrap: str, out: Path, seconds: float) -> list[Path]:
    """Ingest pinned to core 0 under wrk on core 1, as in the ingest benchmark (a source's API key)."""
    stack = Stack(tmp / "ingest", bootstrap)
    ingest = stack["ingest"]
    ingest.extra_args = list(UVICORN_ARGS)
    try:
        ingest.start()
        assert ingest.process is not None
        pin(ingest.process.pid, "0")
        key = source_key(ingest)  # as a back end posts: the source's key looked up on every request
        run_wrk(f"{ingest.url}/v1/leads", token=key, seconds=2, connections=32, cpus="1")
        target = out / "ingest.folded"
        spy = _record(ingest, target, seconds)
        run_wrk(f"{ingest.url}/v1/leads", token=key, seconds=seconds + 1, connections=32, cpus="1")
        spy.wait(60)
    finally:
        stack.stop()
    return [target]


def profile_e2e(tmp: Path, bootstrap: str, out: Path, seconds: float) -> list[Path]:
    """All three services while the closed-loop generator pushes leads through the whole path."""
    env = {"HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true"}
    stack = Stack(tmp / "e2e", bootstrap, seed=EVEN_SEED, rules=EVEN_RULES, env=env)
    for service in stack.services.values():
        service.extra_args = list(UVICORN_ARGS)
    receiver = Service(
        "bench.receiver",
        free_port(),
        dict(stack.env, PYTHONPATH=str(ROOT)),
        tmp / "receiver.log",
        extra_args=list(UVICORN_ARGS),
    )
    targets = [out / f"e2e-{name}.folded" for name in stack.services]
    try:
        stack.start()
        if webhooks_available(stack["routing"]):
            receiver.start()
            register_webhook(stack["routing"], f"{receiver.url}/hook")
        uvloop.run(closed_load(stack["ingest"], 2, 16))
        load = threading.Thread(target=lambda: uvloop.run(closed_load(stack["ingest"], seconds + 2, 32)))
        load.start()
        spies = [_record(s, t, seconds) for s, t in zip(stack.services.values(), targets, strict=True)]
        for spy in spies:
            spy.wait(90)
        load.join()
    finally:
        receiver.stop()
        stack.stop()
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--only", default="handlers,ingest,e2e", help="comma list of handlers, ingest, e2e")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--bootstrap", help="use this Kafka broker instead of starting the bench's own")
    args = parser.parse_args(argv)
    if _py_spy() is None:
        parser.error("py-spy is missing: .venv/bin/pip install py-spy")
    out = RESULTS / "profiles" / datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    broker = BenchBroker.up(args.bootstrap)
    folded: list[Path] = []
    costs = ""
    try:
        with tempfile.TemporaryDirectory(prefix="handoff-profile-") as scratch:
            if "handlers" in args.only:
                log("measuring handler costs in-process")
                costs = uvloop.run(_handler_costs(Path(scratch), 300))
            if "ingest" in args.only:
                log("profiling ingest")
                folded += profile_ingest(Path(scratch), broker.bootstrap, out, args.seconds)
            if "e2e" in args.only:
                log("profiling the end-to-end path")
                folded += profile_e2e(Path(scratch), broker.bootstrap, out, args.seconds)
    finally:
        broker.down()
    summary = (
        "# Profiles (py-spy samples while under the bench's load)\n\n"
        + costs
        + "\n".join(summarize(f) for f in folded if f.exists())
    )
    (out / "summary.md").write_text(summary)
    print(summary)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
