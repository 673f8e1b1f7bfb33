"""HubSpot both ways (issue 15 item 1), in-process on SQLite and PostgreSQL against a loopback HubSpot: the contact
upserted with its owner on assignment through the delivery machinery (429 and Retry-After honoured, failures on
/ops), owners imported by email, and HubSpot's signed webhooks touching, recording, converting and refused."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from common.envelope import Event
from routing.app import create_app
from routing.connectors.hubspot_client import HANDOFF_PROPERTIES
from tests.support.hubspot_server import HubSpotServer
from tests.support.routing import scored, service_settings
from tests.support.stack import ADMIN, wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

EVENTS_URL = "http://routing.test/v1/crm/hubspot/events"


@dataclass
class App:
    app: FastAPI
    client: httpx.AsyncClient
    hubspot: HubSpotServer

    async def route(self, **lead: Any) -> str:
        """A scored lead routed as the consumer would; its id."""
        event = scored(**lead)
        async with self.app.state.runtime.db.transaction() as session:
            await self.app.state.router.on_scored(session, event)
        return event.subject

    async def lead(self, lead_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/leads/{lead_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    async def contact(self, email: str, **properties: str) -> dict[str, Any]:
        """The contact once HubSpot has it with these properties (the sender works in the background)."""

        def found() -> dict[str, Any] | None:
            contact = self.hubspot.contact_by_email(email)
            if contact and all(contact["properties"].get(k) == v for k, v in properties.items()):
                return contact
            return None

        contact: dict[str, Any] = await wait_until_async(found, timeout=20, what=f"contact with {properties}")
        await self.settled()
        return contact

    async def settled(self) -> None:
        """Every HubSpot delivery settled (the lead's link to its contact is written before its attempt is)."""
        endpoint_id = (await self.client.get("/v1/crm/hubspot", headers=ADMIN)).json()["endpoint_id"]
        path = f"/v1/webhook-endpoints/{endpoint_id}/deliveries?status=pending"

        async def none_pending() -> bool:
            return (await self.client.get(path, headers=ADMIN)).json()["items"] == []

        await wait_until_async(none_pending, timeout=20, what="no pending HubSpot delivery")

    async def send(self, events: list[dict[str, Any]], **kwargs: Any) -> httpx.Response:
        body = json.dumps(events).encode()
        headers = self.hubspot.signed_headers(EVENTS_URL, body, **kwargs)
        return await self.client.post("/v1/crm/hubspot/events", content=body, headers=headers)


@pytest.fixture
def hubspot() -> Iterator[HubSpotServer]:
    server = HubSpotServer().start()
    for n in (1, 2, 3):
        server.add_owner(f"r{n}@example.com", "Rep", str(n))
    server.add_owner("someone.else@example.com", "Some", "One")
    yield server
    server.stop()


@pytest.fixture
async def routing(
    database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path, hubspot: HubSpotServer
) -> AsyncIterator[App]:
    settings = service_settings(
        database_url,
        tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        webhook_allow_loopback=True,  # the loopback HubSpot
        webhook_retry_schedule_s=(0.2, 0.2, 0.2),
        webhook_poll_interval_s=0.1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
            yield App(app, client, hubspot)


async def _connect(routing: App) -> dict[str, Any]:
    hs = routing.hubspot
    body = {"access_token": hs.token, "client_secret": hs.client_secret, "base_url": hs.url}
    put = await routing.client.put("/v1/crm/hubspot", json=body, headers=ADMIN)
    assert put.status_code == 200, put.text
    imported = await routing.client.post("/v1/crm/hubspot/owners/import", headers=ADMIN)
    assert imported.status_code == 200, imported.text
    return dict(imported.json())


def _owner_of(hs: HubSpotServer, rep_id: str) -> str:
    return next(o["id"] for o in hs.owners if o["email"] == f"{rep_id}@example.com")


async def test_an_assigned_lead_appears_in_hubspot_with_its_reps_owner_and_handoffs_context(routing: App) -> None:
    imported = await _connect(routing)
    hs = routing.hubspot
    assert imported["mapped"] == {f"r{n}": _owner_of(hs, f"r{n}") for n in (1, 2, 3)}
    assert imported["unmatched_reps"] == ["m"] and imported["owners_seen"] == 4
    shown = (await routing.client.get("/v1/crm/hubspot", headers=ADMIN)).json()
    assert shown["access_token_set"] and shown["client_secret_set"]
    assert hs.token not in json.dumps(shown) and hs.client_secret not in json.dumps(shown)

    lead_id = await routing.route(email="Ada.Lovelace@Example.org", first_name="Ada", last_name="Lovelace")
    rep_id = (await routing.lead(lead_id))["current_assignment"]["rep_id"]
    contact = await routing.contact("ada.lovelace@example.org", hubspot_owner_id=_owner_of(hs, rep_id))
    props = contact["properties"]
    assert props["firstname"] == "Ada" and props["handoff_lead_id"] == lead_id and props["handoff_grade"] == "A"
    assert props["handoff_sla_due_at"]
    # Handoff's context properties were created on the way, once.
    assert {"handoff_grade", "handoff_reasons", "handoff_sla_due_at", "handoff_lead_id"} <= hs.properties
    assert sum(1 for m, p, _ in hs.requests if m == "POST" and p == "/crm/v3/properties/contacts") == 4


async def test_a_429_is_retried_after_its_retry_after_and_shows_on_ops_meanwhile(routing: App) -> None:
    await _connect(routing)
    hs = routing.hubspot
    hs.throttle(1, retry_after="2")
    lead_id = await routing.route(email="grace@example.org")

    async def failure() -> dict[str, Any] | None:
        board = (await routing.client.get("/v1/ops/board", headers=ADMIN)).json()
        return next((f for f in board["webhook_failures"] if f["last_status_code"] == 429), None)

    shown = await wait_until_async(failure, timeout=20, what="the 429 on the ops board")
    assert shown["state"] == "retrying" and shown["event_type"] == "lead.assigned"
    assert shown["endpoint_host"] == "127.0.0.1" and "HubSpot" in shown["endpoint_description"]
    await routing.contact("grace@example.org", handoff_lead_id=lead_id)
    statuses = [s for m, p, s in hs.requests if p == "/crm/v3/objects/contacts/batch/upsert"]
    assert statuses == [200]  # the 429 came on the first call (a property check); the upsert went after
    endpoint_id = (await routing.client.get("/v1/crm/hubspot", headers=ADMIN)).json()["endpoint_id"]
    log = await routing.client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=ADMIN)
    (delivery,) = log.json()["items"]
    first, second = delivery["attempts"]
    assert first["status_code"] == 429 and second["result"] == "success"
    # The schedule says 0.2 s; HubSpot's Retry-After (2 s) wins.
    waited = _at(first["next_attempt_at"]) - _at(first["started_at"])
    assert waited >= 2.0


def _at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def test_a_call_by_the_owner_stops_the_clock_once_and_one_by_someone_else_is_only_recorded(routing: App) -> None:
    await _connect(routing)
    hs = routing.hubspot
    lead_id = await routing.route(email="alan@example.org")
    rep_id = (await routing.lead(lead_id))["current_assignment"]["rep_id"]
    contact = await routing.contact("alan@example.org", handoff_lead_id=lead_id)

    colleague = "r2" if rep_id == "r1" else "r1"
    stranger = next(o["id"] for o in hs.owners if o["email"] == "someone.else@example.com")  # mapped to no rep
    calls = [hs.record_call(contact["id"], _owner_of(hs, colleague)), hs.record_call(contact["id"], stranger)]
    other = await routing.send(calls)
    assert other.status_code == 200, other.text
    assert [r["result"] for r in other.json()["results"]] == ["recorded", "recorded"]
    story = await routing.lead(lead_id)
    assert story["status"] == "assigned" and story["first_touch_at"] is None
    assert any(t["kind"] == "crm_activity" for t in story["timeline"])

    call = hs.record_call(contact["id"], _owner_of(hs, rep_id))
    touched = await routing.send([call])
    assert [r["result"] for r in touched.json()["results"]] == ["touched"]
    story = await routing.lead(lead_id)
    assert story["status"] == "touched" and story["first_touch_at"] is not None
    again = await routing.send([call])  # HubSpot redelivers: the same eventId acts once
    assert [r["result"] for r in again.json()["results"]] == ["duplicate"]
    assert [t["kind"] for t in (await routing.lead(lead_id))["timeline"]].count("touched") == 1


async def test_a_stage_change_to_customer_converts_and_unqualified_disqualifies(routing: App) -> None:
    await _connect(routing)
    hs = routing.hubspot
    won, lost = await routing.route(email="won@example.org"), await routing.route(email="lost@example.org")
    won_contact = await routing.contact("won@example.org", handoff_lead_id=won)
    lost_contact = await routing.contact("lost@example.org", handoff_lead_id=lost)
    ignored = await routing.send([hs.record_property(won_contact["id"], "lifecyclestage", "opportunity")])
    assert ignored.json()["results"] == []
    answer = await routing.send(
        [
            hs.record_property(won_contact["id"], "lifecyclestage", "customer"),
            hs.record_property(lost_contact["id"], "hs_lead_status", "UNQUALIFIED"),
        ]
    )
    assert [r["result"] for r in answer.json()["results"]] == ["converted", "disqualified"]
    won_story, lost_story = await routing.lead(won), await routing.lead(lost)
    assert won_story["status"] == "converted" and lost_story["status"] == "disqualified"
    (entry,) = [t for t in won_story["timeline"] if t["kind"] == "converted"]
    assert entry["detail"]["reason"] == "hubspot: lifecyclestage is customer"


async def test_the_stage_mapping_is_configurable_and_checked(routing: App) -> None:
    await _connect(routing)
    bad = await routing.client.put(
        "/v1/crm/hubspot", json={"stages": {"lifecyclestage": {"customer": "celebrate"}}}, headers=ADMIN
    )
    assert bad.status_code == 422 and "celebrate" in bad.text
    hs = routing.hubspot
    good = {"stages": {"lifecyclestage": {"salesqualifiedlead": "convert"}}}
    assert (await routing.client.put("/v1/crm/hubspot", json=good, headers=ADMIN)).status_code == 200
    lead_id = await routing.route(email="sql@example.org")
    contact = await routing.contact("sql@example.org", handoff_lead_id=lead_id)
    answer = await routing.send([hs.record_property(contact["id"], "lifecyclestage", "salesqualifiedlead")])
    assert [r["result"] for r in answer.json()["results"]] == ["converted"]


async def test_webhooks_not_signed_by_hubspot_are_refused_and_bad_bodies_name_the_field(routing: App) -> None:
    await _connect(routing)
    hs = routing.hubspot
    event = hs.record_call("1", None)
    forged = await routing.send([event], secret="not-the-app-secret")
    assert forged.status_code == 401 and "signature" in forged.text
    stale = await routing.send([event], at_ms=int((time.time() - 600) * 1000))
    assert stale.status_code == 401 and "5 minutes" in forged.text + stale.text
    unsigned = await routing.client.post("/v1/crm/hubspot/events", json=[event])
    assert unsigned.status_code == 401
    bad = await routing.send([{"subscriptionType": "object.creation", "objectId": 5}])
    assert bad.status_code == 400 and "[0].eventId" in bad.text
    ops_only = await routing.client.put("/v1/crm/hubspot", json={"enabled": False})
    assert ops_only.status_code == 401


async def test_a_reassignment_moves_the_contact_to_the_new_reps_owner(routing: App) -> None:
    await _connect(routing)
    hs = routing.hubspot
    lead_id = await routing.route(email="moved@example.org")
    first = (await routing.lead(lead_id))["current_assignment"]["rep_id"]
    await routing.contact("moved@example.org", hubspot_owner_id=_owner_of(hs, first))
    async with routing.app.state.runtime.db.transaction() as session:
        await routing.app.state.router.act(
            session, lead_id, "reject", rep_id=first, reason="not my territory", correlation_id=None
        )
    second = (await routing.lead(lead_id))["current_assignment"]["rep_id"]
    assert second != first
    await routing.contact("moved@example.org", hubspot_owner_id=_owner_of(hs, second))


async def test_properties_are_set_up_ahead_once_and_a_refused_token_is_named(routing: App) -> None:
    hs = routing.hubspot
    wrong = {"access_token": "pat-wrong", "client_secret": hs.client_secret, "base_url": hs.url}
    assert (await routing.client.put("/v1/crm/hubspot", json=wrong, headers=ADMIN)).status_code == 200
    refused = await routing.client.post("/v1/crm/hubspot/properties", headers=ADMIN)
    assert refused.status_code == 502 and "HTTP 401" in refused.text
    assert "pat-wrong" not in refused.text
    await _connect(routing)
    created = await routing.client.post("/v1/crm/hubspot/properties", headers=ADMIN)
    assert created.status_code == 200, created.text
    assert sorted(created.json()["created"]) == sorted(HANDOFF_PROPERTIES)
    again = await routing.client.post("/v1/crm/hubspot/properties", headers=ADMIN)
    assert again.json()["created"] == []


async def test_an_older_assignment_retried_after_a_newer_one_does_not_give_the_contact_back_its_old_owner(
    routing: App,
) -> None:
    await _connect(routing)
    hs = routing.hubspot
    hs.throttle(2, retry_after="2")  # both deliveries fail first and are retried after the reassignment
    lead_id = await routing.route(email="raced@example.org")
    first = (await routing.lead(lead_id))["current_assignment"]["rep_id"]
    async with routing.app.state.runtime.db.transaction() as session:
        await routing.app.state.router.act(session, lead_id, "reject", rep_id=first, reason=None, correlation_id=None)
    second = (await routing.lead(lead_id))["current_assignment"]["rep_id"]
    await routing.contact("raced@example.org", hubspot_owner_id=_owner_of(hs, second))
    upserts = [s for m, p, s in hs.requests if p == "/crm/v3/objects/contacts/batch/upsert" and s == 200]
    assert len(upserts) == 1  # the older assignment was not written at all
    assert hs.contact_by_email("raced@example.org")["properties"]["hubspot_owner_id"] == _owner_of(hs, second)  # type: ignore[index]


async def test_owners_are_imported_across_pages(routing: App) -> None:
    hs = routing.hubspot
    for n in range(150):
        hs.add_owner(f"owner{n}@example.net")
    hs.add_owner("R3@Example.com")  # the last page; emails match whatever their case
    imported = await _connect(routing)
    assert imported["owners_seen"] == 155 and imported["mapped"]["r3"] == hs.owners[-1]["id"]
    assert [p for m, p, _ in hs.requests if p == "/crm/v3/owners"] == ["/crm/v3/owners"] * 2


async def test_an_erased_lead_loses_its_link_to_the_contact_and_hubspot_events_about_it_act_no_more(
    routing: App,
) -> None:
    await _connect(routing)
    hs = routing.hubspot
    lead_id = await routing.route(email="forget.me@example.org")
    contact = await routing.contact("forget.me@example.org", handoff_lead_id=lead_id)
    erased = Event(type="lead.erased", source="/tests", subject=lead_id, data={"lead_id": lead_id})
    async with routing.app.state.runtime.db.transaction() as session:
        await routing.app.state.router.on_erased(session, erased)
    answer = await routing.send([hs.record_property(contact["id"], "lifecyclestage", "customer")])
    assert [r["result"] for r in answer.json()["results"]] == ["unknown_lead"]
    assert (await routing.lead(lead_id))["status"] == "assigned"
