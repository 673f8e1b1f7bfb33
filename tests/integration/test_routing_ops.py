"""The ops read side on a real store (SQLite and PostgreSQL): breaches, the compliance summary, the board,
the live SSE stream with resume, and who may read them (admin token, ops token, the dashboard's cookie).

The rows are written by routing's own router on a test clock (no Kafka involved); the ops routes are mounted on a
bare app over that store, as routing mounts them, and the stream is read from a real uvicorn server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, text

from common.web import OPS_COOKIE, install_common
from routing import api, ops
from routing.store import AssignmentRow, WebhookDelivery, WebhookEndpoint
from tests.support.routing import Clock, Routing, routing_on, scored
from tests.support.stack import ADMIN, free_port, wait_until_async

pytestmark = pytest.mark.integration

OPS_TOKEN = "ops-wallboard-token-0123456789"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
FIVE = {"A": 5, "B": 5, "C": 5, "D": 5}


def _start() -> datetime:
    """An hour ago, to the second: the store's rows are in the recent past of the routes' real clock."""
    return (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def ops_app(routing: Routing, **settings: Any) -> FastAPI:
    """Routing's ops routes (and its admin API, to check the ops token does not open it) over the test store."""
    app = FastAPI()
    install_common(app)
    app.state.settings = routing.router.settings.model_copy(update={"ops_token": SecretStr(OPS_TOKEN), **settings})
    app.state.runtime = SimpleNamespace(db=routing.db)
    app.state.router = routing.router
    app.include_router(api.router)
    app.include_router(ops.router)
    return app


@contextlib.asynccontextmanager
async def client_for(routing: Routing) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ops_app(routing))
    async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
        yield client


async def route(routing: Routing, *, grade: str = "A", kind: str = "web", source_id: str | None = None) -> str:
    event = scored(grade=grade)
    event.data["source"] = {"id": source_id, "kind": kind, "name": kind}
    await routing.route(event)
    return event.subject


async def current_rep(routing: Routing, lead_id: str) -> str | None:
    async with routing.db.read() as session:
        return (
            await session.execute(
                select(AssignmentRow.rep_id).where(AssignmentRow.lead_id == lead_id, AssignmentRow.ended_at.is_(None))
            )
        ).scalar_one()


def by(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {row[key]: row for row in rows}


# -- breaches -------------------------------------------------------------------------------------------------------


async def test_breaches_are_listed_newest_first_by_who_held_the_lead_filtered_and_paginated(
    database_url: str,
) -> None:
    t0 = _start()
    clock = Clock(t0)
    async with routing_on(database_url, clock, sla_minutes=FIVE) as routing:
        web_source = str(uuid.uuid4())
        first = await route(routing, grade="A", kind="web", source_id=web_source)  # r1
        second = await route(routing, grade="B", kind="meta")  # r2
        touched = await route(routing, grade="A", kind="web")  # r3
        clock.advance(minutes=1)
        await routing.act(touched, "touch")
        clock.advance(minutes=4)
        await routing.fire()  # the warnings at 2.5 min and both breaches at 5 min
        clock.advance(minutes=1)
        await routing.act(first, "touch")
        await routing.act(second, "touch")

        async with client_for(routing) as client:
            everything = (await client.get("/v1/sla/breaches", headers=ADMIN)).json()
            assert [b["lead_id"] for b in everything["items"]] == [second, first]  # newest first
            assert everything["next_cursor"] is None
            one = by(everything["items"], "lead_id")[first]
            assert (one["rep_id"], one["team_id"], one["grade"], one["source_kind"]) == ("r1", "t", "A", "web")
            assert one["due_at"] == (t0 + timedelta(minutes=5)).isoformat()
            assert one["late_ms"] >= 0 and one["first_touch_at"] is not None
            assert one["current_rep_id"] not in (None, "r1")  # escalated to the next rep
            assert "@example.org" not in json.dumps(everything)

            async def leads(**params: str) -> list[str]:
                response = await client.get("/v1/sla/breaches", params=params, headers=ADMIN)
                assert response.status_code == 200, response.text
                return [b["lead_id"] for b in response.json()["items"]]

            assert await leads(rep="r1") == [first]
            assert await leads(rep="r3") == []
            assert await leads(team="t") == [second, first]
            assert await leads(team="other") == []
            assert await leads(grade="B") == [second]
            assert await leads(source="meta") == [second]
            assert await leads(source=web_source) == [first]
            breached_at = t0 + timedelta(minutes=5)
            assert await leads(since=(breached_at + timedelta(seconds=1)).isoformat()) == []
            assert await leads(since=t0.isoformat(), until=breached_at.isoformat()) == []  # until is exclusive
            assert await leads(since=t0.isoformat(), until=(breached_at + timedelta(seconds=1)).isoformat()) == [
                second,
                first,
            ]

            page = (await client.get("/v1/sla/breaches", params={"limit": 1}, headers=ADMIN)).json()
            assert [b["lead_id"] for b in page["items"]] == [second] and page["next_cursor"]
            rest = (
                await client.get("/v1/sla/breaches", params={"limit": 1, "cursor": page["next_cursor"]}, headers=ADMIN)
            ).json()
            assert [b["lead_id"] for b in rest["items"]] == [first] and rest["next_cursor"] is None

            bad_cursor = await client.get("/v1/sla/breaches", params={"cursor": "x1"}, headers=ADMIN)
            assert bad_cursor.status_code == 422
            backwards = await client.get(
                "/v1/sla/breaches", params={"since": t0.isoformat(), "until": t0.isoformat()}, headers=ADMIN
            )
            assert backwards.status_code == 422


# -- summary and board --------------------------------------------------------------------------------------------


async def test_summary_counts_compliance_touch_times_open_and_at_risk_by_team_rep_and_source(
    database_url: str,
) -> None:
    t0 = _start()
    clock = Clock(t0)
    sla = {"A": 5, "B": 120, "C": 5, "D": 5}
    async with routing_on(database_url, clock, sla_minutes=sla) as routing:
        meta_source = str(uuid.uuid4())
        fast = await route(routing, kind="web")  # r1, touched at 2 min: met
        slower = await route(routing, kind="web")  # r2, touched at 4 min: met
        late = await route(routing, kind="meta", source_id=meta_source)  # r3, breaches at 5 min: missed
        long_sla = await route(routing, grade="B", kind="web")  # r1, due in two hours: open, not at risk soon
        clock.advance(minutes=2)
        await routing.act(fast, "touch")
        clock.advance(minutes=2)
        await routing.act(slower, "touch")
        clock.advance(minutes=1)
        await routing.fire()
        second_rep = await current_rep(routing, late)
        clock.advance(minutes=1)
        await routing.act(late, "touch")  # the next rep is in time, but the lead already missed
        overdue = await route(routing, kind="web")  # due 5 min after t0 + 6 min: overdue now, not fired yet

        async with client_for(routing) as client:
            params = {
                "since": t0.isoformat(),
                "until": (t0 + timedelta(minutes=12)).isoformat(),
                "buckets": 2,
                "at_risk_minutes": 10,
            }
            response = await client.get("/v1/sla/summary", params=params, headers=ADMIN)
            assert response.status_code == 200, response.text
            summary = response.json()
            wide = (await client.get("/v1/sla/summary", params={**params, "at_risk_minutes": 90}, headers=ADMIN)).json()
            board = (await client.get("/v1/ops/board", headers=ADMIN)).json()

    overall = summary["overall"]
    assert (overall["leads"], overall["met"], overall["missed"], overall["undecided"]) == (5, 2, 1, 2)
    assert overall["within_sla_share"] == pytest.approx(2 / 3, abs=1e-4)
    # Time to first touch from routing: 120 s, 240 s and 360 s (the late lead, touched by the second rep).
    assert overall["touched"] == 3
    assert overall["time_to_first_touch_p50_s"] == pytest.approx(240)
    assert overall["time_to_first_touch_p90_s"] == pytest.approx(240 + 0.8 * 120)
    assert (overall["open"], overall["at_risk"]) == (2, 1)
    assert wide["overall"]["at_risk"] == 2  # the two-hour lead is due within 90 minutes

    reps = by(summary["by_rep"], "rep_id")
    assert (reps["r3"]["met"], reps["r3"]["missed"], reps["r3"]["within_sla_share"]) == (0, 1, 0.0)
    assert reps["r2"]["met"] >= 1
    assert reps[second_rep]["time_to_first_touch_p50_s"] is not None  # measured from their own assignment
    assert sum(r["met"] for r in reps.values()) == 3 and sum(r["missed"] for r in reps.values()) == 1

    sources = {(s["source_kind"], s["source_id"]): s for s in summary["by_source"]}
    web = sources[("web", None)]
    assert (web["leads"], web["met"], web["missed"], web["within_sla_share"], web["open"]) == (4, 2, 0, 1.0, 2)
    meta = sources[("meta", meta_source)]
    assert (meta["leads"], meta["missed"], meta["within_sla_share"]) == (1, 1, 0.0)
    (team,) = summary["by_team"]
    assert (team["team_id"], team["leads"], team["open"]) == ("t", 5, 2)

    first_half, second_half = summary["series"]
    assert first_half["start"] == t0.isoformat() and second_half["end"] == params["until"]
    assert (first_half["leads"], first_half["within_sla_share"]) == (4, pytest.approx(2 / 3, abs=1e-4))
    assert (second_half["leads"], second_half["within_sla_share"]) == (1, None)

    assert (board["open_total"], board["at_risk_total"]) == (2, 1)
    open_leads = by(board["open"], "lead_id")
    assert set(open_leads) == {long_sla, overdue}
    assert open_leads[overdue]["at_risk"] and open_leads[overdue]["seconds_left"] < 0
    assert not open_leads[long_sla]["at_risk"] and open_leads[long_sla]["seconds_left"] > 0
    assert [o["lead_id"] for o in board["open"]] == [overdue, long_sla]  # soonest deadline first
    loads = {r["rep_id"]: r for r in board["reps"]}
    assert set(loads) == {"m", "r1", "r2", "r3"} and loads["r1"]["name"] == "Rep One"
    assert sum(r["running_clocks"] for r in loads.values()) == 2


async def test_a_warned_lead_is_at_risk_even_when_its_deadline_is_far(database_url: str) -> None:
    t0 = _start()
    clock = Clock(t0)
    async with routing_on(database_url, clock, sla_minutes={"A": 100}) as routing:
        lead = await route(routing)
        clock.advance(minutes=50)
        await routing.fire()  # the half-way warning; the deadline is 10 minutes past the real clock
        async with client_for(routing) as client:
            board = (await client.get("/v1/ops/board", params={"at_risk_minutes": 1}, headers=ADMIN)).json()
    (item,) = board["open"]
    assert item["lead_id"] == lead and item["warned"] and item["at_risk"] and item["seconds_left"] > 60


# -- webhook failures ---------------------------------------------------------------------------------------------


async def test_the_board_lists_failing_webhook_deliveries_and_none_when_the_tables_are_absent(
    database_url: str,
) -> None:
    clock = Clock(_start())
    async with routing_on(database_url, clock) as routing:
        now = clock.now
        async with routing.db.transaction() as session:
            session.add(
                WebhookEndpoint(
                    id="ep1",
                    url="https://crm.example.com/hooks/handoff?token=receiver-secret",
                    description="CRM",
                    event_types=["*"],
                    enabled=True,
                    secret="whsec_x",
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.flush()
            for i, (status, attempts, code, minutes) in enumerate(
                [("failed", 8, 500, 1), ("pending", 2, 503, 2), ("succeeded", 1, 200, 3), ("pending", 0, None, 4)]
            ):
                session.add(
                    WebhookDelivery(
                        id=f"d{i}",
                        endpoint_id="ep1",
                        message_id=f"msg{i}",
                        event_type="lead.assigned",
                        payload='{"email": "someone@example.org"}',
                        status=status,
                        attempt_count=attempts,
                        last_status_code=code,
                        last_error=f"HTTP {code}" if code and code >= 300 else None,
                        last_attempt_at=now + timedelta(minutes=minutes) if attempts else None,
                        created_at=now,
                    )
                )
        async with client_for(routing) as client:
            board = (await client.get("/v1/ops/board", headers=ADMIN)).json()
            failures = board["webhook_failures"]
            assert [(f["delivery_id"], f["state"], f["attempts"], f["last_status_code"]) for f in failures] == [
                ("d1", "retrying", 2, 503),
                ("d0", "failed", 8, 500),
            ]
            assert failures[0]["endpoint_host"] == "crm.example.com"
            assert "receiver-secret" not in json.dumps(board) and "someone@" not in json.dumps(board)

            async with routing.db.transaction() as session:
                await session.execute(text("DROP TABLE webhook_attempts"))
                await session.execute(text("DROP TABLE webhook_deliveries"))
            bare = await client.get("/v1/ops/board", headers=ADMIN)
            assert bare.status_code == 200 and bare.json()["webhook_failures"] == []


# -- who may read ---------------------------------------------------------------------------------------------------


async def test_the_ops_token_opens_the_dashboard_once_then_a_cookie_reads_ops_routes_and_nothing_else(
    database_url: str,
) -> None:
    async with routing_on(database_url, Clock(_start())) as routing, client_for(routing) as client:
        assert (await client.get("/v1/sla/summary")).status_code == 401
        assert (await client.get("/v1/sla/summary", headers=OPS)).status_code == 200
        assert (await client.get("/v1/sla/summary", headers=ADMIN)).status_code == 200
        wrong = {"Authorization": "Bearer not-the-token-0123456789"}
        assert (await client.get("/v1/sla/summary", headers=wrong)).status_code == 401

        anonymous = await client.get("/ops")
        assert anonymous.status_code == 401 and "text/html" in anonymous.headers["content-type"]
        assert (await client.get("/ops", params={"token": "nope"})).status_code == 401
        assert not client.cookies

        opened = await client.get("/ops", params={"token": OPS_TOKEN})
        assert opened.status_code == 303 and opened.headers["location"] == "/ops"  # the token leaves the URL
        cookie = opened.headers["set-cookie"]
        assert f"{OPS_COOKIE}=" in cookie and OPS_TOKEN not in cookie
        assert {"httponly", "samesite=strict", "path=/"} <= {p.strip().lower() for p in cookie.split(";")}

        page = await client.get("/ops")
        assert page.status_code == 200 and 'id="breaches"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for asset in ("ops.js", "ops.css"):
            assert (await client.get(f"/ops/assets/{asset}")).status_code == 200
        assert (await client.get("/ops/assets/ops.py")).status_code == 404
        assert (await client.get("/v1/sla/summary")).status_code == 200
        assert (await client.get("/v1/sla/breaches")).status_code == 200
        assert (await client.get("/v1/ops/board")).status_code == 200

        # The cookie opens only the read-only ops views; the ops token (ops-read) reads the roster too.
        assert (await client.get("/v1/reps")).status_code == 401
        assert (await client.get("/v1/reps", headers=OPS)).status_code == 200  # the ops token is ops-read
        assert (await client.get("/v1/reps", headers=ADMIN)).status_code == 200

        expires, _, mac = client.cookies[OPS_COOKIE].partition(".")
        client.cookies.clear()
        client.cookies.set(OPS_COOKIE, f"{int(expires) + 3600}.{mac}", domain="routing.test")  # not signed
        assert (await client.get("/v1/sla/summary")).status_code == 401


# -- the live stream ----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(routing: Routing, **settings: Any) -> AsyncIterator[str]:
    port = free_port()
    app = ops_app(routing, **settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"

    await wait_until_async(lambda: server.started, timeout=10, what="uvicorn started")
    try:
        yield url
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)  # an open stream would hold this: streams end when clients leave


class Frames:
    """Server-sent events read off a streaming response, one dict per event."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        frame: dict[str, Any] = {}
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if not line:
                    if "event" in frame:
                        return frame
                    frame = {}
                    continue
                name, _, value = line.partition(":")
                frame[name] = value.strip()
        raise AssertionError("the stream ended")


async def test_the_stream_sends_sla_events_as_they_happen_and_resumes_after_last_event_id(
    database_url: str,
) -> None:
    clock = Clock(_start())
    async with routing_on(database_url, clock, sla_minutes=FIVE) as routing, served(routing) as url:
        first = await route(routing)  # before anyone listens: not replayed to a new subscriber
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/v1/sla/stream")).status_code == 401
            async with client.stream("GET", "/v1/sla/stream", headers=OPS) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                frames = Frames(response)
                clock.advance(minutes=2.5)
                await routing.fire()
                warning = await frames.next()
                clock.advance(minutes=2.5)
                await routing.fire()
                breach = await frames.next()

            assert warning["event"] == "sla_warning"
            data = json.loads(warning["data"])
            assert (data["lead_id"], data["rep_id"], data["team_id"], data["fraction"]) == (first, "r1", "t", 0.5)
            assert data["grade"] == "A" and data["source_kind"] == "web"
            assert "example.org" not in warning["data"] and "Pat" not in warning["data"]
            assert breach["event"] == "sla_breached"  # the reassignment that follows is not an SLA event
            assert json.loads(breach["data"])["lead_id"] == first
            assert int(breach["id"]) > int(warning["id"])

            # Missed while disconnected: a new lead is routed, then both running clocks warn. Resuming with every
            # kind also brings the reassignment that followed the breach, which the SLA-only stream left out.
            second = await route(routing)
            clock.advance(minutes=2.5)
            await routing.fire()
            resume = {**OPS, "Last-Event-ID": breach["id"]}
            async with client.stream("GET", "/v1/sla/stream?kinds=all", headers=resume) as response:
                frames = Frames(response)
                missed = [await frames.next() for _ in range(4)]
            kinds = [(f["event"], json.loads(f["data"])["lead_id"]) for f in missed]
            assert kinds[:2] == [("reassigned", first), ("assigned", second)]
            assert sorted(kinds[2:]) == sorted([("sla_warning", first), ("sla_warning", second)])
            assert all(int(f["id"]) > int(breach["id"]) for f in missed)

            narrowed = await client.get("/v1/sla/stream", params={"kinds": "assigned,bogus"}, headers=OPS)
            assert narrowed.status_code == 422


async def test_ops_queries_are_bounded_to_a_window_and_name_the_parameter_beyond_it(database_url: str) -> None:
    clock = Clock(_start())
    async with routing_on(database_url, clock, sla_minutes=FIVE) as routing, client_for(routing) as client:
        until = datetime.now(UTC)
        for path in ("/v1/sla/breaches", "/v1/sla/summary"):
            month = {"since": (until - timedelta(days=31)).isoformat(), "until": until.isoformat()}
            assert (await client.get(path, params=month, headers=OPS)).status_code == 200
            quarter = {"since": (until - timedelta(days=92)).isoformat(), "until": until.isoformat()}
            refused = await client.get(path, params=quarter, headers=OPS)
            assert refused.status_code == 422, refused.text
            assert refused.json()["detail"] == [{"field": "since", "reason": "the window is at most 31 days"}]
    async with routing_on(database_url, clock) as routing:
        transport = httpx.ASGITransport(app=ops_app(routing, ops_max_window_days=2))
        async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
            three = {"since": (until - timedelta(days=3)).isoformat(), "until": until.isoformat()}
            assert (await client.get("/v1/sla/breaches", params=three, headers=OPS)).status_code == 422


async def test_live_streams_are_limited_per_token_and_a_closed_one_frees_its_place(database_url: str) -> None:
    clock = Clock(_start())
    async with (
        routing_on(database_url, clock, sla_minutes=FIVE) as routing,
        served(routing, ops_max_streams_per_credential=2) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        contextlib.AsyncExitStack() as streams,
    ):
        opened = [await streams.enter_async_context(client.stream("GET", "/v1/sla/stream", headers=OPS)) for _ in "ab"]
        assert [r.status_code for r in opened] == [200, 200]
        third = await client.get("/v1/sla/stream", headers=OPS)
        assert third.status_code == 429 and third.headers["Retry-After"] == "30", third.text
        assert third.json()["error"] == "too_many_requests"
        # Another credential has places of its own.
        async with client.stream("GET", "/v1/sla/stream", headers=ADMIN) as admin:
            assert admin.status_code == 200

        await opened[0].aclose()

        async def reopened() -> bool:
            async with client.stream("GET", "/v1/sla/stream", headers=OPS) as response:
                return response.status_code == 200

        await wait_until_async(reopened, timeout=10, interval=0.2, what="the closed stream's place freed")
