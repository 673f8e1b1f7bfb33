"""max_open refuses a full rep after restarts: the worked open leads capacity takes off a rep's load are kept in
the store by its writes (migration 0018), not rebuilt by a process, so a restarted service reads the same count and
each touch, close and reassignment made before a restart still counts after it (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from routing.app import create_app
from routing.settings import RoutingSettings
from tests.support.routing import scored, service_settings
from tests.support.stack import ADMIN

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

RULES = """
fallback_team: t
rules:
  - id: everyone
    action: {team: t, method: round_robin}
"""


class Service:
    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client

    async def route(self) -> str:
        event = scored()
        async with self.app.state.runtime.db.transaction() as session:
            await self.app.state.router.on_scored(session, event)
        return event.subject

    async def rep_of(self, lead_id: str) -> str | None:
        response = await self.client.get(f"/v1/leads/{lead_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        current = response.json()["current_assignment"]
        return None if current is None or current["rep_id"] is None else str(current["rep_id"])

    async def act(self, lead_id: str, action: str) -> None:
        response = await self.client.post(f"/v1/leads/{lead_id}/actions", json={"action": action}, headers=ADMIN)
        assert response.status_code == 200, response.text


@asynccontextmanager
async def started(settings: RoutingSettings) -> AsyncIterator[Service]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
            yield Service(app, client)


async def test_max_open_refuses_a_full_rep_after_restarts(
    database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    settings = service_settings(
        database_url,
        tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        rules=RULES,
    )
    async with started(settings) as service:
        for rep_id, changes in (("r1", {"status": "away"}), ("r2", {"status": "away"}), ("r3", {"max_open": 2})):
            answer = await service.client.patch(f"/v1/reps/{rep_id}", json=changes, headers=ADMIN)
            assert answer.status_code == 200, answer.text
        first, second = await service.route(), await service.route()
        assert [await service.rep_of(first), await service.rep_of(second)] == ["r3", "r3"]
        await service.act(first, "touch")  # worked: r3 counts one open lead of two

    async with started(settings) as service:
        third = await service.route()
        assert await service.rep_of(third) == "r3"  # the touch made before the restart still counts
        assert await service.rep_of(await service.route()) is None  # two untouched open leads: full

    async with started(settings) as service:
        assert await service.rep_of(await service.route()) is None  # still full after a second restart
        await service.act(first, "convert")  # closed: r3's untouched open leads are still two
        assert await service.rep_of(await service.route()) is None
        await service.act(second, "touch")

    async with started(settings) as service:
        assert await service.rep_of(await service.route()) == "r3"  # one untouched lead left: room for one
        assert await service.rep_of(await service.route()) is None
