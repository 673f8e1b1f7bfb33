"""HubSpot both ways, end to end: the three services on the real broker and a loopback HubSpot account
(tests/support/hubspot_server.py) connected through routing's API as an admin would.

A lead posted to ingest appears in HubSpot as a contact owned by its rep's owner; a call the rep logs there (the
loopback HubSpot sends its signed webhook to routing) stops the clock within seconds and shows as touched on /ops;
a lifecycle stage change to customer records a conversion that scoring learns from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.crm import routing_record, wait_touched_on_ops
from tests.support.hubspot_server import HubSpotServer
from tests.support.stack import ADMIN, Stack, post_lead, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

LOOPBACK = {"HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true"}


@pytest.fixture
def hubspot() -> Iterator[HubSpotServer]:
    server = HubSpotServer().start()
    yield server
    server.stop()


def _connect(client: httpx.Client, stack: Stack, hubspot: HubSpotServer) -> dict[str, str]:
    """Connect HubSpot through the API and import the owners by email; returns rep id -> owner id."""
    owners = {rep: hubspot.add_owner(f"{rep}@example.com", "Rep", rep) for rep in ("r1", "r2", "r3", "r4")}
    url = f"{stack['routing'].url}/v1/crm/hubspot"
    body = {"access_token": hubspot.token, "client_secret": hubspot.client_secret, "base_url": hubspot.url}
    saved = client.put(url, json=body, headers=ADMIN)
    assert saved.status_code == 200, saved.text
    assert saved.json()["access_token_set"] is True and hubspot.token not in saved.text
    imported = client.post(f"{url}/owners/import", headers=ADMIN)
    assert imported.status_code == 200, imported.text
    assert imported.json()["mapped"] == owners
    return owners


def _post(client: httpx.Client, stack: Stack, email: str) -> str:
    response = post_lead(client, stack["ingest"], sample_lead(1, email=email, first_name="Ana", last_name="Nguyen"))
    assert response.status_code == 202, response.text
    return str(response.json()["lead_id"])


def _contact(hubspot: HubSpotServer, email: str, lead_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        contact = hubspot.contact_by_email(email)
        return contact if contact and contact["properties"].get("handoff_lead_id") == lead_id else None

    contact: dict[str, Any] = wait_until(found, timeout=60, what="the contact in HubSpot")
    return contact


def test_a_lead_reaches_hubspot_with_its_owner_and_a_call_there_stops_the_clock(
    make_stack: Callable[..., Stack], hubspot: HubSpotServer
) -> None:
    stack = make_stack(env=LOOPBACK).start()
    events_url = f"{stack['routing'].url}/v1/crm/hubspot/events"
    with httpx.Client(timeout=10) as client:
        owners = _connect(client, stack, hubspot)
        lead_id = _post(client, stack, "ana.nguyen@example.org")
        contact = _contact(hubspot, "ana.nguyen@example.org", lead_id)
        record = routing_record(client, stack, lead_id)
        rep = record["current_assignment"]["rep_id"]
        props = contact["properties"]
        assert props["hubspot_owner_id"] == owners[rep]
        assert (props["firstname"], props["lastname"], props["company"]) == ("Ana", "Nguyen", "Example Org")
        assert props["handoff_sla_due_at"] == record["current_assignment"]["sla"]["due_at"]
        assert record["status"] == "assigned"

        def settled() -> bool:  # the upsert's link to the lead is written before its attempt is recorded
            board = client.get(f"{stack['routing'].url}/v1/ops/board", headers=ADMIN).json()
            return not board["webhook_failures"] and lead_id in [c["lead_id"] for c in board["open"]]

        wait_until(settled, timeout=15, what="the lead open on the board, no delivery failing")
        assert hubspot.log_call(events_url, contact["id"], owners[rep]) == 200
        wait_touched_on_ops(client, stack, lead_id, what="the call stopped the clock")


def test_a_stage_change_to_customer_records_a_conversion_scoring_learns_from(
    make_stack: Callable[..., Stack], hubspot: HubSpotServer
) -> None:
    stack = make_stack(env=LOOPBACK).start()
    events_url = f"{stack['routing'].url}/v1/crm/hubspot/events"
    with httpx.Client(timeout=10) as client:
        _connect(client, stack, hubspot)
        like_it = {"lead": sample_lead(2, email="someone.like.it@example.org")}
        preview_url = f"{stack['scoring'].url}/v1/score/preview"

        def outcomes_seen() -> int:
            answer = client.post(preview_url, json=like_it, headers=ADMIN)
            assert answer.status_code == 200, answer.text
            return int(answer.json()["conversion"]["outcomes_seen"])

        before = outcomes_seen()
        lead_id = _post(client, stack, "won.deal@example.org")
        contact = _contact(hubspot, "won.deal@example.org", lead_id)

        def changed() -> bool:
            # Until the upsert's link is committed the event names no lead; HubSpot would redeliver, so do we.
            hubspot.change_property(events_url, contact["id"], "lifecyclestage", "customer")
            return routing_record(client, stack, lead_id).get("status") == "converted"

        wait_until(changed, timeout=15, interval=0.5, what="the stage change converted the lead")
        assert hubspot.webhook_answers[-1][0] == 200

        def outcome() -> Any:
            return client.get(f"{stack['scoring'].url}/v1/scores/{lead_id}", headers=ADMIN).json().get("outcome")

        assert wait_until(outcome, timeout=60, what="scoring learned the outcome") == "won"
        # The model counts it: a lead like this one is now scored with one more outcome behind it.
        assert wait_until(lambda: outcomes_seen() > before, timeout=30, what="the outcome counted")
