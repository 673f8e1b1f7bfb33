"""Salesforce both ways, end to end: the three services on the real broker, a loopback Salesforce org
(tests/support/salesforce_server.py) set up through routing's API as an admin would.

A lead posted to ingest appears in Salesforce owned by its rep's User; a Task the rep logs on it stops the clock
within seconds and shows as touched on the ops summary; a Lead Status change to a converted status records a
conversion that scoring learns from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.crm import routing_record, wait_touched_on_ops
from tests.support.salesforce_server import SalesforceServer
from tests.support.stack import ADMIN, Stack, post_lead, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

FAST_POLL = {
    "HANDOFF_SALESFORCE_POLL_INTERVAL_S": "0.5",
    "HANDOFF_SALESFORCE_POLL_OVERLAP_S": "5",
    "HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true",
}


@pytest.fixture
def org() -> Iterator[SalesforceServer]:
    server = SalesforceServer().start()
    yield server
    server.stop()


def _connect(client: httpx.Client, stack: Stack, org: SalesforceServer) -> dict[str, str]:
    """Set Salesforce up through the API and import the owners by email; returns rep id -> User Id."""
    users = {rep: org.add_user(f"{rep}@example.com", f"Rep {rep}") for rep in ("r1", "r2", "r3", "r4")}
    url = f"{stack['routing'].url}/v1/crm/salesforce"
    settings = {
        "login_url": org.url,
        "client_id": org.client_id,
        "client_secret": org.client_secret,
        "api_version": org.api_version.lstrip("v"),
        "upsert_key": "email",
        "context_fields": {"grade": "Handoff_Grade__c", "sla_due": "Handoff_SLA_Due__c"},
        "statuses": {"Closed - Converted": "convert", "Closed - Not Converted": "disqualify"},
    }
    saved = client.put(url, json=settings, headers=ADMIN)
    assert saved.status_code == 200, saved.text
    assert saved.json()["client_secret_set"] is True and org.client_secret not in saved.text
    imported = client.post(f"{url}/owners/import", headers=ADMIN)
    assert imported.status_code == 200, imported.text
    assert imported.json()["imported"] == users
    return users


def _post(client: httpx.Client, stack: Stack, email: str) -> str:
    response = post_lead(client, stack["ingest"], sample_lead(1, email=email, last_name="Nguyen"))
    assert response.status_code == 202, response.text
    return str(response.json()["lead_id"])


def test_a_lead_reaches_salesforce_with_its_owner_and_a_task_there_stops_the_clock(
    make_stack: Callable[..., Stack], org: SalesforceServer
) -> None:
    stack = make_stack(env=FAST_POLL).start()
    with httpx.Client(timeout=10) as client:
        users = _connect(client, stack, org)
        lead_id = _post(client, stack, "ana.nguyen@example.org")
        lead = wait_until(lambda: org.lead_by("Email", "ana.nguyen@example.org"), timeout=60, what="lead in Salesforce")
        record = routing_record(client, stack, lead_id)
        rep = record["current_assignment"]["rep_id"]
        assert lead["OwnerId"] == users[rep]
        assert (lead["LastName"], lead["Company"], lead["LeadSource"]) == ("Nguyen", "Example Org", "Handoff")
        assert lead["Handoff_SLA_Due__c"] == record["current_assignment"]["sla"]["due_at"]
        assert record["status"] == "assigned"

        org.log_task(lead["Id"], users[rep], "Call")
        wait_touched_on_ops(client, stack, lead_id, what="the Task stopped the clock")


def test_a_status_change_to_converted_records_a_conversion_scoring_learns_from(
    make_stack: Callable[..., Stack], org: SalesforceServer
) -> None:
    stack = make_stack(env=FAST_POLL).start()
    with httpx.Client(timeout=10) as client:
        users = _connect(client, stack, org)
        lead_id = _post(client, stack, "won.deal@example.org")
        lead = wait_until(lambda: org.lead_by("Email", "won.deal@example.org"), timeout=60, what="lead in Salesforce")
        org.set_lead_status(lead["Id"], "Closed - Converted", users["r1"])
        wait_until(
            lambda: routing_record(client, stack, lead_id).get("status") == "converted",
            timeout=15,
            interval=0.2,
            what="the status change converted the lead",
        )

        def outcome() -> Any:
            return client.get(f"{stack['scoring'].url}/v1/scores/{lead_id}", headers=ADMIN).json().get("outcome")

        assert wait_until(outcome, timeout=60, what="scoring learned the outcome") == "won"
