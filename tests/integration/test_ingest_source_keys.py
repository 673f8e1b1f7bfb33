"""POST /v1/leads remembers which source a key belongs to (issue 13 item 5), within a stated revocation bound.

Two ingest apps share one store (SQLite and PostgreSQL), as two processes behind a balancer do. A key rotated or a
source disabled through the other one stops working here within HANDOFF_SOURCE_CACHE_TTL_S; through this one, at
once. The cache's clock is the test's, so "within the bound" is checked exactly, without waiting.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ingest.handlers.source_keys import SourceKeys
from tests.integration.test_ingest_api import ORIGIN, Ingest, _email, _key, _post, _web_source, running_ingest
from tests.support.stack import ADMIN, wait_until_async

pytestmark = [pytest.mark.integration]

TTL_S = 30.0


class Ticks:
    """A monotonic clock moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def _two_processes(database_url: str) -> AsyncIterator[tuple[Ingest, Ingest, Ticks]]:
    """`here` (the cache under test, on the test's clock) and `there` (another process on the same store)."""
    async with (
        running_ingest(database_url, source_cache_ttl_s=TTL_S) as here,
        running_ingest(database_url, source_cache_ttl_s=TTL_S) as there,
    ):
        ticks = Ticks()
        here.app.state.source_keys = SourceKeys(here.app.state.runtime.db, TTL_S, clock=ticks)
        yield here, there, ticks


def _browser(source: dict[str, Any]) -> dict[str, str]:
    return {"X-Handoff-Key": source["publishable_key"], "Origin": ORIGIN}


async def test_a_key_rotated_through_another_process_is_refused_here_once_the_bound_has_passed(
    database_url: str,
) -> None:
    async with _two_processes(database_url) as (here, there, ticks):
        created = await _web_source(there)
        assert (await _post(here, {"email": _email()}, _key(created))).status_code == 202  # looked up, remembered

        rotated = await there.client.post(f"/v1/sources/{created['id']}/rotate-key", headers=ADMIN)
        assert rotated.status_code == 200
        assert (await _post(there, {"email": _email()}, _key(created))).status_code == 401  # there: at once
        # Here the old key is still trusted, but never longer than the bound...
        ticks.now += TTL_S - 1
        assert (await _post(here, {"email": _email()}, _key(created))).status_code == 202
        # ...and once it has passed, it is refused; the new key works here at once (unknown keys are not remembered).
        ticks.now += 1
        old = await _post(here, {"email": _email()}, _key(created))
        assert old.status_code == 401 and old.headers["www-authenticate"] == "Bearer"
        assert (await _post(here, {"email": _email()}, _key(rotated.json()))).status_code == 202


async def test_a_source_disabled_through_another_process_takes_no_leads_here_by_either_key_within_the_bound(
    database_url: str,
) -> None:
    async with _two_processes(database_url) as (here, there, ticks):
        created = await _web_source(there)
        assert (await _post(here, {"email": _email()}, _key(created))).status_code == 202
        assert (await _post(here, {"email": _email()}, _browser(created))).status_code == 202

        url = f"/v1/sources/{created['id']}"
        assert (await there.client.patch(url, json={"enabled": False}, headers=ADMIN)).status_code == 200
        ticks.now += TTL_S
        assert (await _post(here, {"email": _email()}, _key(created))).status_code == 401
        assert (await _post(here, {"email": _email()}, _browser(created))).status_code == 401

        # Enabled again through the other process: here at once, since a refused key was not remembered.
        assert (await there.client.patch(url, json={"enabled": True}, headers=ADMIN)).status_code == 200
        assert (await _post(here, {"email": _email()}, _key(created))).status_code == 202


async def test_a_change_through_this_process_takes_effect_here_at_once(database_url: str) -> None:
    async with _two_processes(database_url) as (here, _there, _ticks):
        created = await _web_source(here)
        assert (await _post(here, {"email": _email()}, _key(created))).status_code == 202
        assert (await _post(here, {"email": _email()}, _browser(created))).status_code == 202

        # No time passes on the cache's clock: its entries are dropped when the change commits.
        url = f"/v1/sources/{created['id']}"
        narrowed = {"allowed_origins": ["https://other.example.com"]}
        assert (await here.client.patch(url, json=narrowed, headers=ADMIN)).status_code == 200
        assert (await _post(here, {"email": _email()}, _browser(created))).status_code == 403
        rotated = await here.client.post(f"{url}/rotate-key", headers=ADMIN)
        assert (await _post(here, {"email": _email()}, _key(created))).status_code == 401
        assert (await _post(here, {"email": _email()}, _key(rotated.json()))).status_code == 202


async def test_with_the_real_clock_a_key_disabled_elsewhere_is_refused_after_the_bound(database_url: str) -> None:
    async with (
        running_ingest(database_url, source_cache_ttl_s=0.2) as here,
        running_ingest(database_url) as there,
    ):
        created = await _web_source(there)
        assert (await _post(here, {"email": _email()}, _key(created))).status_code == 202
        patched = await there.client.patch(f"/v1/sources/{created['id']}", json={"enabled": False}, headers=ADMIN)
        assert patched.status_code == 200

        async def refused() -> bool:
            return (await _post(here, {"email": _email()}, _key(created))).status_code == 401

        await wait_until_async(refused, timeout=10, what="the disabled source's key to be refused")
