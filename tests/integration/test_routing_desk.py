"""The desk (issue 15 items 4 and 5) in-process on SQLite and PostgreSQL: claims from a team queue, a manager's
reassignment, a rep's hand-over, capacity that counts untouched leads, self-service availability and out-of-office
read from an iCalendar feed served by a loopback HTTP server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from common.envelope import Event
from routing.access import links
from routing.app import create_app
from routing.handlers import Router
from tests.support.contracts import validate_event
from tests.support.routing import outbox_events, scored, service_settings
from tests.support.stack import ADMIN, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

RULES = """
fallback_team: t
rules:
  - id: everyone
    action: {team: t, method: round_robin}
"""


@dataclass
class Desk:
    app: FastAPI
    client: httpx.AsyncClient
    bootstrap: str
    namespace: str

    @property
    def router(self) -> Router:
        router: Router = self.app.state.router
        return router

    async def route(self, **lead: Any) -> str:
        event = scored(**lead)
        async with self.app.state.runtime.db.transaction() as session:
            await self.router.on_scored(session, event)
        return event.subject

    async def lead(self, lead_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/leads/{lead_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def patch_rep(self, rep_id: str, **changes: Any) -> None:
        response = await self.client.patch(f"/v1/reps/{rep_id}", json=changes, headers=ADMIN)
        assert response.status_code == 200, response.text

    async def token(self, rep_id: str) -> dict[str, str]:
        response = await self.client.post(f"/v1/reps/{rep_id}/tokens", json={"name": "phone"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    async def reassigned(self, lead_id: str, count: int = 1) -> list[dict[str, Any]]:
        """The lead's lead.reassigned events, oldest first: still in the outbox, or on the topic once the relay
        published them (waits, with a deadline, until `count` are found)."""
        deadline = time.monotonic() + 20
        while True:
            found: dict[str, Event] = {}
            for record in await read_topic(self.bootstrap, f"{self.namespace}leads.assigned.v1", timeout=1):
                event = Event.from_record(record.key, record.value, record.headers)
                found[event.id] = event
            found.update({e.id: e for e in await outbox_events(self.app.state.runtime.db)})
            events = sorted(
                (e for e in found.values() if e.type == "lead.reassigned" and e.subject == lead_id),
                key=lambda e: e.data["assignment_id"],
            )
            if len(events) >= count or time.monotonic() > deadline:
                return [dict(e.data) for e in events]


@pytest.fixture
async def desk(database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path) -> AsyncIterator[Desk]:
    settings = service_settings(
        database_url,
        tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        rules=RULES,
        webhook_allow_loopback=True,  # the calendar feeds are served on loopback
        calendar_refresh_s=3600,  # the tests refresh by hand
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
            yield Desk(app, client, kafka_bootstrap, namespace)


def _fits_contract(data: dict[str, Any]) -> bool:
    """lead.reassigned fits its schema (the tests' scored leads carry only the lead fields routing reads)."""
    problems = validate_event("lead.reassigned", {**data, "lead": None, "score": None})
    assert problems == []
    return True


async def _queued_lead(desk: Desk) -> str:
    for rep in ("r1", "r2", "r3"):
        await desk.patch_rep(rep, status="away")
    lead_id = await desk.route()
    assert (await desk.lead(lead_id))["status"] == "queued"
    for rep in ("r1", "r2", "r3"):
        await desk.patch_rep(rep, status="active")
    return lead_id


# -- claim ------------------------------------------------------------------------------------------------------


async def test_two_reps_claiming_a_queued_lead_at_once_one_wins_the_other_hears_who(desk: Desk) -> None:
    lead_id = await _queued_lead(desk)
    r1, r2 = await desk.token("r1"), await desk.token("r2")

    answers = await asyncio.gather(
        desk.client.post(f"/v1/leads/{lead_id}/claim", headers=r1),
        desk.client.post(f"/v1/leads/{lead_id}/claim", headers=r2),
    )

    assert sorted(a.status_code for a in answers) == [200, 409]
    won = next(a for a in answers if a.status_code == 200).json()
    lost = next(a for a in answers if a.status_code == 409).json()
    assert lost["detail"] == f"already claimed by {won['rep_id']}"
    lead = await desk.lead(lead_id)
    assert lead["status"] == "assigned" and lead["current_assignment"]["rep_id"] == won["rep_id"]
    queue, claimed = lead["assignments"]
    assert queue["end_reason"] == "claimed" and claimed["assignment_id"] == lead["current_assignment"]["assignment_id"]
    # The queue's clock stopped; the rep's started on the rules' SLA for the grade (A: 5 minutes).
    assert claimed["sla"]["minutes"] == 5 and claimed["sla"]["due_at"] != queue["sla"]["due_at"]
    events = await desk.reassigned(lead_id)
    assert len(events) == 1, events
    assert events[0]["reassign_reason"] == "claimed" and events[0]["reassigned_by"] == won["rep_id"]
    assert events[0]["rep"]["id"] == won["rep_id"] and _fits_contract(events[0])


async def test_a_rep_s_signed_link_claims_a_queued_lead_exactly_once(desk: Desk) -> None:
    lead_id = await _queued_lead(desk)
    settings = desk.app.state.settings
    keys = links.link_keys(settings.secret_key.get_secret_value() if settings.secret_key else None)
    expires = datetime.now(UTC) + timedelta(hours=1)
    mine, theirs = (links.sign(keys, lead_id, "claim", rep, expires) for rep in ("r1", "r2"))

    answers = await asyncio.gather(
        desk.client.post(f"/v1/links/{mine}"),
        desk.client.post(f"/v1/links/{mine}"),
        desk.client.post(f"/v1/links/{theirs}"),
    )

    assert sorted(a.status_code for a in answers) == [200, 409, 409], [a.text for a in answers]
    lead = await desk.lead(lead_id)
    winner = lead["current_assignment"]["rep_id"]
    assert winner in ("r1", "r2") and lead["assignments"][0]["end_reason"] == "claimed"
    assert len(lead["assignments"]) == 2  # claimed once: one assignment after the queue's
    events = await desk.reassigned(lead_id)
    assert [e["reassigned_by"] for e in events] == [winner]
    # Each link acts once, and a used one says so; the losing rep's link hears who claimed it.
    refused = [a.json()["detail"] for a in answers if a.status_code == 409]
    assert any("already" in detail for detail in refused)


async def test_a_claim_is_made_as_the_token_s_own_rep_and_only_from_the_rep_s_team_queue(desk: Desk) -> None:
    lead_id = await _queued_lead(desk)
    r1 = await desk.token("r1")

    as_other = await desk.client.post(f"/v1/leads/{lead_id}/claim", json={"rep_id": "r2"}, headers=r1)
    assert as_other.status_code == 403 and as_other.json()["detail"][0]["field"] == "rep_id"
    nobody = await desk.client.post(f"/v1/leads/{lead_id}/claim", headers=ADMIN)
    assert nobody.status_code == 422 and nobody.json()["detail"][0]["field"] == "rep_id"
    outsider = await desk.client.post(f"/v1/leads/{lead_id}/claim", json={"rep_id": "m"}, headers=ADMIN)
    assert outsider.status_code == 409 and "not on team 't'" in outsider.json()["detail"]

    by_admin = await desk.client.post(f"/v1/leads/{lead_id}/claim", json={"rep_id": "r3"}, headers=ADMIN)
    assert by_admin.status_code == 200 and by_admin.json()["rep_id"] == "r3"
    assigned = await desk.route()
    again = await desk.client.post(f"/v1/leads/{assigned}/claim", headers=r1)
    assert again.status_code == 409

    # claim is an action like the others: a rep token claims through the actions route too.
    queued = await _queued_lead(desk)
    r2 = await desk.token("r2")
    action = await desk.client.post(f"/v1/leads/{queued}/actions", json={"action": "claim"}, headers=r2)
    assert action.status_code == 200 and action.json()["rep_id"] == "r2"
    taken = await desk.client.post(f"/v1/leads/{queued}/actions", json={"action": "claim"}, headers=r1)
    assert taken.status_code == 409 and taken.json()["detail"] == "already claimed by r2"


# -- reassign and hand-over ----------------------------------------------------------------------------------------


async def test_a_manager_reassigns_to_a_named_rep_or_a_team_and_the_event_says_who_and_why(desk: Desk) -> None:
    lead_id = await desk.route()
    first = (await desk.lead(lead_id))["current_assignment"]["rep_id"]
    other = next(r for r in ("r1", "r2", "r3") if r != first)

    moved = await desk.client.post(
        f"/v1/leads/{lead_id}/reassign", json={"rep_id": other, "reason": "speaks German"}, headers=ADMIN
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["rep_id"] == other and moved.json()["previous_rep_id"] == first
    event = (await desk.reassigned(lead_id, 1))[-1]
    assert (event["reassigned_by"], event["reassign_note"], event["reassign_reason"]) == (
        "admin",
        "speaks German",
        "reassigned",
    )
    assert event["previous_rep_id"] == first and event["method"] == "manager"
    assert _fits_contract(event)

    to_team = await desk.client.post(
        f"/v1/leads/{lead_id}/reassign", json={"team_id": "t", "reason": "rebalance"}, headers=ADMIN
    )
    assert to_team.status_code == 200 and to_team.json()["rep_id"] not in (other, None)

    bad = [
        ({"rep_id": "nobody", "reason": "x"}, 422, "rep_id"),
        ({"team_id": "nowhere", "reason": "x"}, 422, "team_id"),
        ({"rep_id": "r1", "team_id": "t", "reason": "x"}, 422, None),
        ({"rep_id": "r1"}, 422, "reason"),
    ]
    for body, status, field in bad:
        answer = await desk.client.post(f"/v1/leads/{lead_id}/reassign", json=body, headers=ADMIN)
        assert answer.status_code == status, (body, answer.text)
        if field:
            assert field in answer.text
    rep_token = await desk.token("r1")
    refused = await desk.client.post(
        f"/v1/leads/{lead_id}/reassign", json={"rep_id": "r1", "reason": "mine"}, headers=rep_token
    )
    assert refused.status_code == 403


async def test_a_hand_over_reroutes_every_open_lead_of_the_rep_once(desk: Desk) -> None:
    leads = [await desk.route() for _ in range(6)]
    held = [lead for lead in leads if (await desk.lead(lead))["current_assignment"]["rep_id"] == "r1"]
    assert len(held) == 2
    touched = held[0]
    assert (
        await desk.client.post(f"/v1/leads/{touched}/actions", json={"action": "touch"}, headers=ADMIN)
    ).status_code == 200

    answer = await desk.client.post("/v1/reps/r1/handover", headers=ADMIN)

    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["moved"] == 2 and {m["lead_id"] for m in result["leads"]} == set(held)
    for moved in result["leads"]:
        assert moved["rep_id"] in ("r2", "r3")
        lead = await desk.lead(moved["lead_id"])
        assert lead["current_assignment"]["rep_id"] == moved["rep_id"]
        assert lead["assignments"][-2]["end_reason"] == "handover"
        event = (await desk.reassigned(moved["lead_id"]))[-1]
        assert event["reassign_reason"] == "handover" and event["reassigned_by"] == "admin"
        assert _fits_contract(event)
    again = (await desk.client.post("/v1/reps/r1/handover", headers=ADMIN)).json()
    assert again == {"rep_id": "r1", "moved": 0, "leads": []}
    assert (await desk.client.post("/v1/reps/ghost/handover", headers=ADMIN)).status_code == 404


# -- capacity ----------------------------------------------------------------------------------------------------


async def test_worked_leads_stop_filling_max_open_unless_the_team_counts_every_open_lead(desk: Desk) -> None:
    await desk.patch_rep("r1", status="away")
    await desk.patch_rep("r2", status="away")
    await desk.patch_rep("r3", max_open=1)
    first = await desk.route()
    assert (await desk.lead(first))["current_assignment"]["rep_id"] == "r3"
    second = await desk.route()
    assert (await desk.lead(second))["status"] == "queued"  # r3's one open lead is untouched: full

    assert (
        await desk.client.post(f"/v1/leads/{first}/actions", json={"action": "touch"}, headers=ADMIN)
    ).status_code == 200
    third = await desk.route()
    assert (await desk.lead(third))["current_assignment"]["rep_id"] == "r3"  # the worked lead no longer counts

    team = (await desk.client.get("/v1/teams", headers=ADMIN)).json()["items"][0]
    answer = await desk.client.put("/v1/teams/t", json={**team, "capacity_counts": "open"}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    fourth = await desk.route()
    assignment = (await desk.lead(fourth))["current_assignment"]
    assert assignment["outcome"] == "queued"
    assert "over_capacity:open" in {r for c in assignment["candidates"] for r in c["excluded_because"]}
    bad = await desk.client.put("/v1/teams/t", json={**team, "capacity_counts": "some"}, headers=ADMIN)
    assert bad.status_code == 422 and "capacity_counts" in bad.text


# -- availability --------------------------------------------------------------------------------------------------


async def test_a_rep_sets_themself_away_until_a_time_and_routing_respects_it(desk: Desk) -> None:
    r1 = await desk.token("r1")
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)

    away = await desk.client.put(
        "/v1/reps/r1/availability", json={"status": "away", "until": until.isoformat()}, headers=r1
    )
    assert away.status_code == 200, away.text
    assert away.json()["available"] is False and away.json()["away_until"] == until.isoformat()
    for _ in range(3):
        lead = await desk.lead(await desk.route())
        assert lead["current_assignment"]["rep_id"] != "r1"
        excluded = {c["rep_id"]: c["excluded_because"] for c in lead["current_assignment"]["candidates"]}
        assert excluded["r1"] == ["out_of_office"]

    other = await desk.client.put("/v1/reps/r2/availability", json={"status": "away"}, headers=r1)
    assert other.status_code == 403
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    stale = await desk.client.put("/v1/reps/r1/availability", json={"status": "away", "until": past}, headers=r1)
    assert stale.status_code == 422 and stale.json()["detail"][0]["field"] == "until"
    naive = await desk.client.put(
        "/v1/reps/r1/availability", json={"status": "away", "until": "2030-01-01T00:00:00"}, headers=r1
    )
    assert naive.status_code == 422

    back = await desk.client.put("/v1/reps/r1/availability", json={"status": "available"}, headers=r1)
    assert back.status_code == 200 and back.json()["available"] is True
    routed = [(await desk.lead(await desk.route()))["current_assignment"]["rep_id"] for _ in range(3)]
    assert "r1" in routed


class CalendarServer:
    """A loopback HTTP server serving one .ics feed; the test changes its body or status."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(server.status)
                self.send_header("Content-Type", "text/calendar")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/cal/r1.ics"

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def calendar_server() -> Iterator[CalendarServer]:
    server = CalendarServer()
    yield server
    server.stop()


def _ics(*days: tuple[date, date]) -> bytes:
    events = "".join(
        f"BEGIN:VEVENT\r\nUID:{i}@test\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:{a:%Y%m%d}\r\n"
        f"DTEND;VALUE=DATE:{b:%Y%m%d}\r\nSUMMARY:Out of office\r\nEND:VEVENT\r\n"
        for i, (a, b) in enumerate(days)
    )
    meeting = (
        "BEGIN:VEVENT\r\nUID:meeting@test\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260101T090000Z\r\n"
        "DTEND:20260101T100000Z\r\nRRULE:FREQ=DAILY\r\nSUMMARY:Stand-up\r\nEND:VEVENT\r\n"
    )
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//desk//EN\r\n{events}{meeting}END:VCALENDAR\r\n".encode()


async def test_an_all_day_event_in_the_rep_s_calendar_marks_them_away_and_a_failing_feed_keeps_it(
    desk: Desk, calendar_server: CalendarServer
) -> None:
    today = datetime.now(UTC).date()
    calendar_server.body = _ics((today - timedelta(days=1), today + timedelta(days=2)))
    await desk.patch_rep("r1", calendar_url=calendar_server.url, timezone="UTC")

    await desk.app.state.calendars.refresh()

    shown = (await desk.client.get("/v1/reps/r1/availability", headers=ADMIN)).json()
    assert shown["available"] is False and shown["calendar"]["state"] == "ok"
    until = datetime.combine(today + timedelta(days=2), datetime.min.time(), UTC)
    assert shown["away_until"] == until.isoformat()
    assert shown["calendar"]["away"] == [
        {
            "from": datetime.combine(today - timedelta(days=1), datetime.min.time(), UTC).isoformat(),
            "until": until.isoformat(),
        }
    ]
    for _ in range(3):
        lead = await desk.lead(await desk.route())
        excluded = {c["rep_id"]: c["excluded_because"] for c in lead["current_assignment"]["candidates"]}
        assert excluded["r1"] == ["out_of_office"]

    calendar_server.status = 500
    await desk.app.state.calendars.refresh()
    failing = (await desk.client.get("/v1/reps/r1/availability", headers=ADMIN)).json()
    assert failing["calendar"]["state"] == "failing" and "HTTP 500" in failing["calendar"]["error"]
    assert failing["available"] is False and failing["calendar"]["away"] == shown["calendar"]["away"]
    record = (await desk.client.get("/v1/reps/r1", headers=ADMIN)).json()  # the rep record shows it too
    assert "HTTP 500" in record["calendar"]["error"] and len(record["calendar"]["away"]) == 1

    calendar_server.status, calendar_server.body = 200, _ics()  # the absence was deleted
    await desk.app.state.calendars.refresh()
    cleared = (await desk.client.get("/v1/reps/r1/availability", headers=ADMIN)).json()
    assert cleared["available"] is True and cleared["calendar"]["away"] == [] and cleared["calendar"]["error"] is None
    routed = [(await desk.lead(await desk.route()))["current_assignment"]["rep_id"] for _ in range(3)]
    assert "r1" in routed


async def test_a_feed_the_egress_policy_refuses_is_never_fetched_and_says_why(desk: Desk) -> None:
    await desk.patch_rep("r2", calendar_url="http://169.254.169.254/latest/meta-data/cal.ics")  # cloud metadata
    await desk.app.state.calendars.refresh()
    shown = (await desk.client.get("/v1/reps/r2/availability", headers=ADMIN)).json()
    assert shown["calendar"]["state"] == "failing" and "egress policy" in shown["calendar"]["error"]
    assert shown["available"] is True  # nothing known against them
    bad = await desk.client.patch("/v1/reps/r2", json={"calendar_url": "file:///etc/passwd"}, headers=ADMIN)
    assert bad.status_code == 422 and "calendar_url" in bad.text
