"""POST /v1/leads answered by ingest's fast path (api/fast.py) is answered exactly as the route answers it.

Two apps on stores of their own take the same requests: one as it is built, one with the fast path taken out (the
FastAPI route alone). Every answer, status, headers and body (ids aside), must be the same, and the stores must
hold the same.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from common import metrics
from ingest.api.fast import IngestApp, LeadFastPath
from tests.integration.test_ingest_abuse import _inflight_limit, _store_held
from tests.integration.test_ingest_api import (
    BAD_REQUESTS,
    ORIGIN,
    Ingest,
    _key,
    _stored,
    _web_source,
    running_ingest,
)
from tests.support.stack import ADMIN, wait_until_async

pytestmark = [pytest.mark.integration]

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


def _requests(source: dict[str, Any], email: str) -> list[tuple[str, dict[str, Any]]]:
    """(what, httpx keyword arguments) for POST /v1/leads; each list is built per app (the keys differ)."""
    key = _key(source)
    idem = {**key, "Idempotency-Key": "k-1"}
    json = {**key, "Content-Type": "application/json"}
    browser = {"Origin": ORIGIN}
    deep = b'{"email": "d@example.org", "c": ' + b"[" * 40 + b"]" * 40 + b"}"
    form = urlencode({"_key": source["publishable_key"], "email": "f@example.org"})
    out: list[tuple[str, dict[str, Any]]] = [
        ("a lead", {"json": {"email": email, "phone": "+49 30 1234567", "country": "DE"}, "headers": key}),
        ("the same person again", {"json": {"email": email}, "headers": key}),
        ("charset", {"content": b'{"email": "c@example.org"}',
                     "headers": {**key, "Content-Type": "application/json; charset=utf-8"}}),
        ("a key", {"json": {"email": "k@example.org"}, "headers": idem}),
        ("the key again", {"json": {"email": "k@example.org"}, "headers": idem}),
        ("the key, another body", {"json": {"email": "other@example.org"}, "headers": idem}),
        ("the key, an invalid body", {"json": {"email": "nope"}, "headers": idem}),
        ("invalid email", {"json": {"email": "nope"}, "headers": key}),
        ("no contact", {"json": {"first_name": "Ada"}, "headers": key}),
        ("honeypot and _key fields", {"json": {"email": "h@example.org", "_gotcha": "", "_key": "x"}, "headers": key}),
        ("deep JSON", {"content": deep, "headers": json}),
        ("unknown key", {"json": {"email": "u@example.org"}, "headers": {"Authorization": "Bearer hk_live_nope"}}),
        ("no credential", {"json": {"email": "u@example.org"}}),
        ("admin token", {"json": {"email": "a@example.org"}, "headers": ADMIN}),
        ("publishable key as bearer", {"json": {"email": "p@example.org"},
                                       "headers": {"Authorization": f"Bearer {source['publishable_key']}", **browser}}),
        ("browser form", {"content": form,
                          "headers": {"Content-Type": "application/x-www-form-urlencoded", **browser}}),
    ]  # fmt: skip
    for what, request, _status, _code in BAD_REQUESTS:
        request = dict(request)
        if callable(request.get("content")):
            request["content"] = request["content"]()
        headers = {**key, **request.pop("headers", {})}
        if "content" in request and "Content-Type" not in headers and "files" not in request:
            headers["Content-Type"] = "application/json"
        out.append((what, {**request, "headers": headers}))
    return out


def _answer(response: httpx.Response) -> tuple[int, dict[str, str], str]:
    headers = {k: v for k, v in response.headers.items() if k != "x-correlation-id"}
    return response.status_code, headers, _ID.sub("<id>", response.text)


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[tuple[Ingest, Ingest]]:
    async with (
        running_ingest(f"sqlite+aiosqlite:///{tmp_path / 'fast.db'}") as fast,
        running_ingest(f"sqlite+aiosqlite:///{tmp_path / 'route.db'}") as route,
    ):
        assert isinstance(fast.app, IngestApp) and isinstance(route.app, IngestApp)
        assert isinstance(fast.app.fast_path, LeadFastPath)
        route.app.fast_path = None  # every POST /v1/leads through the middleware and the route
        yield fast, route


async def test_every_answer_to_post_leads_is_the_routes_own(apps: tuple[Ingest, Ingest]) -> None:
    fast, route = apps
    counted = metrics.HTTP_REQUESTS.labels(method="POST", route="/v1/leads", status="202")
    before = counted._value.get()
    email = f"lead-{uuid.uuid4().hex[:10]}@example.org"
    sources = [await _web_source(fast), await _web_source(route)]
    answers = []
    for ingest, source in zip((fast, route), sources, strict=True):
        answers.append(
            [
                (what, _answer(await ingest.client.post("/v1/leads", **request)))
                for what, request in _requests(source, email)
            ]
        )
    for (what, got), (_, expected) in zip(*answers, strict=True):
        assert got == expected, what
    assert {what: answer[0] for what, answer in answers[0]}["the key again"] == 202
    assert await _stored(fast) == await _stored(route)
    # Labelled by the route's template, as the metrics middleware labels every routed request.
    accepted = sum(answer[0] == 202 for _, answer in answers[0] + answers[1])
    assert counted._value.get() - before == accepted


async def test_a_store_that_cannot_look_the_key_up_is_a_503_not_a_500(
    apps: tuple[Ingest, Ingest], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, _ = apps
    source = await _web_source(fast)

    async def unreachable(_key: str) -> None:
        raise OperationalError("SELECT", None, OSError("connection refused"))

    monkeypatch.setattr(fast.app.state.source_keys, "by_api_key", unreachable)
    response = await fast.client.post("/v1/leads", json={"email": "x@example.org"}, headers=_key(source))
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable" and response.headers["retry-after"] == "1"


async def test_fast_path_answers_carry_the_correlation_id(apps: tuple[Ingest, Ingest]) -> None:
    fast, _ = apps
    source = await _web_source(fast)
    traced = {**_key(source), "X-Correlation-Id": "trace-42"}
    given = await fast.client.post("/v1/leads", json={"email": f"c-{uuid.uuid4().hex[:8]}@example.org"}, headers=traced)
    assert given.status_code == 202, given.text
    assert given.headers["x-correlation-id"] == "trace-42" == given.json()["correlation_id"]
    fresh = await fast.client.post(
        "/v1/leads", json={"email": f"c-{uuid.uuid4().hex[:8]}@example.org"}, headers=_key(source)
    )
    assert fresh.status_code == 202, fresh.text
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-correlation-id"])
    assert fresh.json()["correlation_id"] == fresh.headers["x-correlation-id"]


async def test_leads_taken_by_the_fast_path_count_against_the_inflight_limit(tmp_path: Path) -> None:
    async with running_ingest(f"sqlite+aiosqlite:///{tmp_path / 'limit.db'}", max_inflight_leads=2) as ingest:
        source = await _web_source(ingest)
        assert isinstance(ingest.app, IngestApp) and ingest.app.fast_path is not None
        gate = ingest.app.fast_path.gate

        async def post() -> httpx.Response:
            email = f"l-{uuid.uuid4().hex[:8]}@example.org"
            return await ingest.client.post("/v1/leads", json={"email": email}, headers=_key(source))

        async with _store_held(ingest):
            held = [asyncio.create_task(post()) for _ in range(2)]
            await wait_until_async(lambda: gate.inflight == 2, timeout=20, what="both posts in progress")
            shed = await post()
            assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
            assert shed.json()["error"] == "unavailable" and shed.headers.get("x-correlation-id")
        assert [r.status_code for r in await asyncio.gather(*held)] == [202, 202]
        assert gate.inflight == 0


async def test_over_the_inflight_bound_every_post_gets_the_middlewares_503(apps: tuple[Ingest, Ingest]) -> None:
    """The fast path sheds what the in-flight middleware would shed, with the same bytes and count, and stores
    nothing; a body over the limit is still the body limit's 413."""
    fast, route = apps
    shed = metrics.HTTP_REQUESTS.labels(method="POST", route="unmatched", status="503")
    email = f"lead-{uuid.uuid4().hex[:10]}@example.org"
    sources = [await _web_source(fast), await _web_source(route)]
    assert (await route.client.get("/healthz")).status_code == 200  # builds the middleware stack
    assert fast.app.fast_path is not None
    gates = [fast.app.fast_path.gate, _inflight_limit(route).gate]
    answers = []
    for ingest, source, gate in zip((fast, route), sources, gates, strict=True):
        before = shed._value.get()
        gate.inflight = gate.limit
        try:
            got = []
            for what, request in _requests(source, email):
                headers = {**request.get("headers", {}), "X-Correlation-Id": f"cid-{len(got)}"}
                response = await ingest.client.post("/v1/leads", **{**request, "headers": headers})
                got.append((what, response.status_code, response.headers.multi_items(), response.content))
        finally:
            gate.inflight = 0
        answers.append(got)
        assert shed._value.get() - before == sum(status == 503 for _, status, _, _ in got)
    for fast_answer, route_answer in zip(*answers, strict=True):
        assert fast_answer == route_answer, fast_answer[0]
    statuses = {status for _, status, _, _ in answers[0]}
    assert 503 in statuses and statuses <= {503, 413}, statuses
    first = answers[0][0]
    assert dict(first[2])["retry-after"] == "1" and dict(first[2])["x-correlation-id"] == "cid-0"
    assert await _stored(fast) == await _stored(route) == (0, 0)
