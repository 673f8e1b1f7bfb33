"""Keep-and-flag end to end (issue 11 item 1): leads with a phone typed `(415) 555-2671` or `n/a`, posted as the README
shows on a web source with the shipped defaults, are accepted, flagged, scored and assigned, and routing's timeline
shows the flags."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.support.stack import ADMIN, Stack, routed, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def test_leads_with_an_unreadable_or_regionless_phone_are_accepted_flagged_scored_and_assigned(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack().start()
    ingest, routing = stack["ingest"], stack["routing"]
    with httpx.Client(timeout=10) as client:
        created = client.post(f"{ingest.url}/v1/sources", json={"kind": "web", "name": "Website"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        key = {"Authorization": f"Bearer {created.json()['api_key']}"}
        phones = {"(415) 555-2671": ["phone_region_assumed"], "n/a": ["phone_unparsed"]}
        lead_ids: dict[str, str] = {}
        for phone in phones:
            # The README's curl: a back end posting JSON with the source's API key.
            lead = {
                "first_name": "Jane",
                "last_name": "Doe",
                "email": f"jane-{uuid.uuid4().hex[:8]}@acme-widgets.com",
                "phone": phone,
                "company": "Acme Widgets",
                "job_title": "VP Sales",
                "message": "Please call me back about pricing",
            }
            response = client.post(f"{ingest.url}/v1/leads", json=lead, headers=key)
            assert response.status_code == 202, (phone, response.text)
            lead_ids[phone] = response.json()["lead_id"]

        found: dict[str, dict] = {}

        def all_routed() -> bool:
            found.update(routed(client, routing, [i for i in lead_ids.values() if i not in found]))
            return len(found) == len(lead_ids)

        wait_until(all_routed, timeout=120, interval=0.5, what="both flagged leads routed")
        for phone, flags in phones.items():
            record = found[lead_ids[phone]]
            assert record["grade"], record  # scored
            current = record["current_assignment"]
            assert current is not None and current["outcome"] == "assigned" and current["rep_id"], record
            assert record["quality"] == {"flags": flags}
            assert record["timeline"][0]["detail"]["quality_flags"] == flags  # what the rep sees first
            stored = client.get(f"{ingest.url}/v1/leads/{lead_ids[phone]}", headers=ADMIN).json()["lead"]
            assert stored["quality"] == {"flags": flags, "raw": {"phone": phone}}
        assert found[lead_ids["(415) 555-2671"]]["timeline"][0]["kind"] == "assigned"
        nanp = client.get(f"{ingest.url}/v1/leads/{lead_ids['(415) 555-2671']}", headers=ADMIN).json()["lead"]
        assert nanp["phone"] == "+14155552671"
