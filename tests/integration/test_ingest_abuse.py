"""Ingest's POST /v1/leads under abuse and overload, through the in-process app on SQLite and PostgreSQL: what a
publishable key may learn, whose Idempotency-Keys are whose, failed-authentication limits per client address, and
a writer that cannot keep up answering 503 instead of making callers wait without end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, text

from common.web import InflightLimitMiddleware
from ingest.store import IngestRepository, outbox
from tests.integration.test_ingest_api import (
    ORIGIN,
    Ingest,
    _email,
    _key,
    _post,
    _stored,
    _web_source,
    running_ingest,
)
from tests.support.stack import ADMIN, wait_until_async

pytestmark = [pytest.mark.integration]


@pytest.fixture
async def ingest(database_url: str) -> AsyncIterator[Ingest]:
    async with running_ingest(database_url) as running:
        yield running


def _browser(source: dict[str, Any], **headers: str) -> dict[str, str]:
    return {"X-Handoff-Key": source["publishable_key"], "Origin": ORIGIN, **headers}


async def _outbox_data(ingest: Ingest, lead_id: str) -> dict[str, Any]:
    """The data of the lead.received event waiting in the outbox for this lead."""
    async with ingest.app.state.runtime.db.read() as session:
        for (value,) in (await session.execute(select(outbox.c.value))).all():
            data: dict[str, Any] = orjson.loads(value)  # binary mode: the value is the event's data
            if data.get("lead_id") == lead_id:
                return data
    raise AssertionError(f"no event for {lead_id}")


# -- item 9: what a publishable key may learn ----------------------------------------------------------------


async def test_duplicate_of_is_left_out_for_publishable_key_callers_and_kept_for_back_ends(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    email = _email()
    first = await _post(ingest, {"email": email}, _key(source))
    original = first.json()["lead_id"]

    browser = await _post(ingest, {"email": email}, _browser(source, **{"Idempotency-Key": "form-1"}))
    replay = await _post(ingest, {"email": email}, _browser(source, **{"Idempotency-Key": "form-1"}))
    back_end = await _post(ingest, {"email": email}, _key(source))

    assert browser.status_code == replay.status_code == 202
    assert "duplicate_of" not in browser.json() and "duplicate_of" not in replay.json()
    assert replay.headers["idempotent-replayed"] == "true" and replay.json() == browser.json()
    assert back_end.json()["duplicate_of"] == original  # a back end on the secret key still learns it
    # The repeat is still a repeat for the services downstream: stored and published with its original.
    browser_lead = browser.json()["lead_id"]
    assert (await ingest.client.get(f"/v1/leads/{browser_lead}", headers=ADMIN)).json()["duplicate_of"] == original
    assert (await _outbox_data(ingest, browser_lead))["duplicate_of"] == original


# -- item 10: Idempotency-Keys scoped per credential ----------------------------------------------------------


async def test_the_same_idempotency_key_from_the_publishable_and_the_secret_key_gives_two_results(
    ingest: Ingest,
) -> None:
    source = await _web_source(ingest)
    key = {"Idempotency-Key": "order-1234"}
    # The page (anyone can hold its key) claims the key first, with another body: the back end must not get a 409
    # or, with the same body, the page's answer.
    from_page = await _post(ingest, {"email": _email()}, _browser(source, **key))
    from_back_end = await _post(ingest, {"email": _email()}, {**_key(source), **key})
    back_end_again = await _post(ingest, {"email": "other@example.org"}, {**_key(source), **key})

    assert from_page.status_code == from_back_end.status_code == 202
    assert "idempotent-replayed" not in from_back_end.headers
    assert from_back_end.json()["lead_id"] != from_page.json()["lead_id"]
    assert back_end_again.status_code == 409  # within one credential the key still means what it did
    assert (await _stored(ingest))[0] == 2


# -- item 11: failed authentication, per client address -------------------------------------------------------


@contextlib.contextmanager
def _counted_key_lookups(monkeypatch: pytest.MonkeyPatch) -> Any:
    calls = {"n": 0}
    real = IngestRepository.source_by_key_hash

    async def counting(self: IngestRepository, key_hash: str) -> Any:
        calls["n"] += 1
        return await real(self, key_hash)

    monkeypatch.setattr(IngestRepository, "source_by_key_hash", counting)
    yield calls


BAD_KEY = {"Authorization": "Bearer hk_live_not-a-real-key-0000000000"}


async def test_repeated_bad_keys_from_one_address_get_429_before_any_key_lookup(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_ingest(database_url, auth_failure_limit=3) as ingest:
        source = await _web_source(ingest)
        with _counted_key_lookups(monkeypatch) as lookups:
            answers = [(await _post(ingest, {"email": _email()}, BAD_KEY)).status_code for _ in range(3)]
            looked_up = lookups["n"]
            limited = await _post(ingest, {"email": _email()}, BAD_KEY)
            good_key_same_address = await _post(ingest, {"email": _email()}, _key(source))
            assert lookups["n"] == looked_up  # refused before the key was looked up
            other_address = await ingest.client_from("198.51.100.20").post(
                "/v1/leads", json={"email": _email()}, headers=_key(source)
            )

        assert answers == [401, 401, 401]
        assert limited.status_code == 429 and limited.json()["error"] == "too_many_requests"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert good_key_same_address.status_code == 429
        assert other_address.status_code == 202
        assert (await _stored(ingest))[0] == 1


async def test_a_forged_x_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limit(database_url: str) -> None:
    async with running_ingest(database_url, auth_failure_limit=3) as ingest:
        answers = []
        for i in range(5):
            forged = {**BAD_KEY, "X-Forwarded-For": f"192.0.2.{i + 1}"}
            answers.append((await _post(ingest, {"email": _email()}, forged)).status_code)
        assert answers == [401, 401, 401, 429, 429]


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(database_url: str) -> None:
    async with running_ingest(database_url, auth_failure_limit=3, trusted_proxies="10.0.0.0/8") as ingest:
        source = await _web_source(ingest)
        proxy = ingest.client_from("10.0.0.2")
        other_proxy = ingest.client_from("10.0.0.3")

        async def through(client: httpx.AsyncClient, forwarded: str, headers: dict[str, str]) -> int:
            response = await client.post(
                "/v1/leads", json={"email": _email()}, headers={**headers, "X-Forwarded-For": forwarded}
            )
            return response.status_code

        # The client prepends hops of its own to hide behind: the hop our proxy added is the one believed.
        answers = [await through(proxy, f"203.0.113.{i}, 198.51.100.7", BAD_KEY) for i in range(4)]
        assert answers == [401, 401, 401, 429]
        assert await through(other_proxy, "198.51.100.7", _key(source)) == 429  # same client, another proxy
        assert await through(proxy, "198.51.100.8", _key(source)) == 202  # another client, same proxy
        # The proxy itself was never the one counted.
        assert (await ingest.client_from("10.0.0.2").post("/v1/leads", json={"email": _email()},
                                                           headers=_key(source))).status_code == 202  # fmt: skip


# -- item 17: a writer that cannot keep up -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _store_held(ingest: Ingest) -> AsyncIterator[None]:
    """The leads table held by another transaction: the writer's next batch waits until the block ends."""
    async with ingest.app.state.runtime.db.transaction() as session:
        if not ingest.app.state.runtime.db.is_sqlite:
            # On SQLite the transaction alone holds the single writer slot; PostgreSQL needs the table lock.
            await session.execute(text("LOCK TABLE leads IN EXCLUSIVE MODE"))
        yield


async def test_when_the_writer_cannot_keep_up_the_excess_gets_503_at_once_and_the_rest_is_stored(
    database_url: str,
) -> None:
    async with running_ingest(
        database_url, writer_max_batch=1, writer_max_pending=2, writer_enqueue_timeout_s=0.5
    ) as ingest:
        emails = [_email() for _ in range(6)]
        async with _store_held(ingest):
            posts = [asyncio.create_task(_post(ingest, {"email": email})) for email in emails]

            def answered() -> list[asyncio.Task[httpx.Response]]:
                return [p for p in posts if p.done()]

            # One lead waits in the writer's transaction and two in its queue; the other three cannot wait longer.
            await wait_until_async(lambda: len(answered()) >= 3, timeout=20, what="the excess to be refused")
            refused = answered()
            assert len(refused) == 3
            for task in refused:
                response = task.result()
                assert response.status_code == 503 and response.headers["retry-after"] == "1"
                assert response.json()["error"] == "unavailable"
        accepted = await asyncio.gather(*[p for p in posts if p not in refused])
        assert [r.status_code for r in accepted] == [202, 202, 202]
        assert (await _stored(ingest))[0] == 3
        # The refused leads were not kept: their retries are first-time leads, not repeats.
        for email in (emails[posts.index(task)] for task in refused):
            retry = await _post(ingest, {"email": email})
            assert retry.status_code == 202 and retry.json()["duplicate_of"] is None


async def test_lead_posts_beyond_the_inflight_limit_get_503_while_the_others_finish(database_url: str) -> None:
    async with running_ingest(database_url, max_inflight_leads=2) as ingest:
        assert (await ingest.client.get("/healthz")).status_code == 200  # builds the middleware stack
        async with _store_held(ingest):
            held = [asyncio.create_task(_post(ingest, {"email": _email()})) for _ in range(2)]
            limit = _inflight_limit(ingest)
            await wait_until_async(lambda: limit.inflight == 2, timeout=20, what="both posts in progress")
            shed = await _post(ingest, {"email": _email()})
            assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
            assert shed.json()["error"] == "unavailable" and shed.headers.get("x-correlation-id")
            reads = await ingest.client.get("/v1/leads", headers=ADMIN)  # other routes are not limited
            assert reads.status_code == 200
        assert [r.status_code for r in await asyncio.gather(*held)] == [202, 202]
        assert (await _post(ingest, {"email": _email()})).status_code == 202
        assert (await _stored(ingest))[0] == 3


def _inflight_limit(ingest: Ingest) -> InflightLimitMiddleware:
    layer: Any = ingest.app.middleware_stack
    while not isinstance(layer, InflightLimitMiddleware):
        layer = layer.app
    return layer
