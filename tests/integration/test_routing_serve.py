"""Routing's two-phase entrypoint as a real process (`python -m routing.serve`): its timers are in service before the
HTTP side loads, it fires what fell due while it was down (each timer once, published through the outbox), then
answers HTTP with the same routes and readiness, and SIGTERM stops it through the app's lifespan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from common.db import Database
from common.envelope import Event
from common.settings import DEV_ADMIN_TOKEN
from routing.store import SlaTimer
from tests.support.routing import Clock, routing_on, scored
from tests.support.stack import ROOT, free_port, read_topic, wait_until

pytestmark = pytest.mark.integration

# The uvicorn options a deployment (and the bench) passes; the entrypoint hands them to uvicorn (info: the test
# reads uvicorn's start-up line).
_UVICORN_OPTIONS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "info"]


def _log_events(path: Path) -> dict[str, datetime]:
    """Each log event's first time."""
    events: dict[str, datetime] = {}
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        events.setdefault(str(entry.get("event", "")), datetime.fromisoformat(entry["timestamp"]))
    return events


async def test_the_served_process_fires_overdue_timers_before_http_then_serves_and_stops_on_sigterm(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}"
    namespace = f"t{uuid.uuid4().hex[:10]}."
    clock = Clock(datetime.now(UTC) - timedelta(hours=2))  # routed two hours ago: warnings and breaches overdue
    async with routing_on(url, clock, sla_minutes={"A": 60}, topic_namespace=namespace) as routing:
        for _ in range(3):
            await routing.route(scored(grade="A"))
        async with routing.db.read() as session:
            due = list((await session.execute(select(SlaTimer.id).where(SlaTimer.fired_at.is_(None)))).scalars())
        assert len(due) == 6  # a warning and a breach per lead

    port = free_port()
    log_path = tmp_path / "routing.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "ROUTING_"))} | {
        "HANDOFF_ENV": "test",
        "HANDOFF_ADMIN_TOKEN": DEV_ADMIN_TOKEN,
        "HANDOFF_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HANDOFF_TOPIC_NAMESPACE": namespace,
        "HANDOFF_TOPIC_PARTITIONS": "3",
        "HANDOFF_DATA_DIR": str(tmp_path / "data"),
        "HANDOFF_LOG_FORMAT": "json",
        "HANDOFF_SLA_BUSINESS_HOURS": "false",
        "ROUTING_DATABASE_URL": url,
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "routing.serve", "--host", "127.0.0.1", "--port", str(port), *_UVICORN_OPTIONS],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=90, what="routing ready")
        headers = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
        assert httpx.get(f"{base}/openapi.json", timeout=5).json()["info"]["title"] == "Handoff routing"
        assert httpx.get(f"{base}/v1/reps", headers=headers, timeout=5).status_code == 200

        events = _log_events(log_path)
        http_up = events["Application startup complete."]
        assert events["routing_timers_in_service"] <= http_up
        db = Database(url)
        try:
            async with db.read() as session:
                query = select(SlaTimer.fired_at).where(SlaTimer.id.in_(due))
                fired = (await session.execute(query)).scalars().all()
        finally:
            await db.dispose()
        assert all(at is not None and at.replace(tzinfo=UTC) <= http_up for at in fired)  # before HTTP was up

        records = await read_topic(kafka_bootstrap, f"{namespace}leads.sla.v1", timeout=30)
        notices = [Event.from_record(r.key, r.value, r.headers) for r in records]
        once = Counter((e.type, e.data["assignment_id"]) for e in notices)
        assert sorted(Counter(kind for kind, _ in once).items()) == [("lead.sla_breached", 3), ("lead.sla_warning", 3)]
        assert set(once.values()) == {1}  # each timer fired once
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in _log_events(log_path)
