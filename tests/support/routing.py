"""Routing test helpers: a settable clock, lead.scored events, a router on a migrated store, outbox reading."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from routing.app import MIGRATIONS
from routing.handlers import Router
from routing.settings import RoutingSettings
from routing.store import Base, outbox

# Three reps rotating around the clock, and a manager above them.
ROSTER = """
teams:
  - {id: t, name: Test team, method: round_robin, hours: always, queue_sla_minutes: 60, queue_business_hours: false}
reps:
  - {id: m, name: Mona Manager, email: mona@example.com, hours: always}
  - {id: r1, name: Rep One, email: r1@example.com, team: t, hours: always, manager_id: m}
  - {id: r2, name: Rep Two, email: r2@example.com, team: t, hours: always, manager_id: m}
  - {id: r3, name: Rep Three, email: r3@example.com, team: t, hours: always, manager_id: m}
"""

RULES = """
fallback_team: t
rules:
  - id: everyone
    action: {team: t, method: round_robin}
"""


class Clock:
    """A clock the test moves by hand; handed to the code under test, never patched in."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def scored(
    lead_id: str | None = None,
    *,
    grade: str = "A",
    duplicate_of: str | None = None,
    enrichment: dict[str, Any] | None = None,
    received_at: datetime | None = None,
    **lead: Any,
) -> Event:
    """A lead.scored event as scoring publishes it (only the fields routing reads)."""
    lead_id = lead_id or str(uuid.uuid4())
    person = {"email": f"{lead_id[:8]}@example.org", "first_name": "Pat", "last_name": "Lee", "country": "DE"}
    person.update(lead)
    return Event(
        type="lead.scored",
        source="/tests",
        subject=lead_id,
        data={
            "lead_id": lead_id,
            "source": {"id": None, "kind": "api", "name": "tests"},
            "is_test": False,
            "duplicate_of": duplicate_of,
            "received_at": (received_at or datetime.now(UTC)).isoformat(),
            "lead": person,
            "enrichment": {"email_type": "corporate", "domain": "example.org"} if enrichment is None else enrichment,
            "score": {"grade": grade, "qualified": grade in ("A", "B", "C"), "points": 50},
        },
    )


def routing_settings(database_url: str, **overrides: Any) -> RoutingSettings:
    values: dict[str, Any] = {
        "env": "test",
        "admin_token": "test-admin-token-0123456789",
        "topic_namespace": f"t{uuid.uuid4().hex[:10]}.",
        "sla_business_hours": False,
        "ROUTING_DATABASE_URL": database_url,
    }
    values.update(overrides)
    return RoutingSettings(**values)


def service_settings(
    database_url: str,
    tmp_path: Path,
    *,
    kafka_bootstrap: str,
    namespace: str,
    rules: str | None = RULES,
    **overrides: Any,
) -> RoutingSettings:
    """A routing service's settings on the test roster, as the in-process service tests start it: the seed (and
    rules, unless None) written to tmp_path, one partition, console logs."""
    (tmp_path / "seed.yaml").write_text(ROSTER)
    if rules is not None:
        (tmp_path / "rules.yaml").write_text(rules)
        overrides = {"rules_file": tmp_path / "rules.yaml", **overrides}
    return routing_settings(
        database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_namespace=namespace,
        topic_partitions=1,
        log_format="console",
        seed_file=tmp_path / "seed.yaml",
        **overrides,
    )


@dataclass
class Routing:
    """A router on a migrated store, as one routing process holds it (without Kafka)."""

    db: Database
    router: Router
    clock: Clock

    async def route(self, event: Event) -> None:
        async with self.db.transaction() as session:
            await self.router.on_scored(session, event)

    async def fire(self, limit: int = 500) -> int:
        async with self.db.transaction() as session:
            return await self.router.fire_due_timers(session, self.clock(), limit)

    async def act(self, lead_id: str, action: str, **kwargs: Any) -> dict[str, Any]:
        async with self.db.transaction() as session:
            return await self.router.act(
                session,
                lead_id,
                action,
                rep_id=kwargs.get("rep_id"),
                reason=kwargs.get("reason"),
                correlation_id=None,
            )

    async def events(self, *types: str) -> list[Event]:
        """Events waiting in the outbox (no relay runs in these tests), oldest first."""
        return [e for e in await outbox_events(self.db) if not types or e.type in types]


async def outbox_events(db: Database) -> list[Event]:
    async with db.read() as session:
        rows = (await session.execute(select(outbox).order_by(outbox.c.seq))).all()
    return [
        Event.from_record(row.key, row.value, [(k, v.encode()) for k, v in json.loads(row.headers)]) for row in rows
    ]


@asynccontextmanager
async def routing_on(
    database_url: str, clock: Clock, *, roster: str = ROSTER, rules: str = RULES, **overrides: Any
) -> AsyncIterator[Routing]:
    """A migrated store with the roster and rules installed, and a router on the test clock."""
    db = Database(database_url)
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    router = Router(routing_settings(database_url, **overrides), clock=clock)
    async with db.transaction() as session:
        await router.replace_roster(session, yaml.safe_load(roster))
        await router.install_rules(session, rules)
    try:
        yield Routing(db, router, clock)
    finally:
        await db.dispose()
