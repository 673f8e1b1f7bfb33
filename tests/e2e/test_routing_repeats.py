"""A person who submits again while their lead is open joins that lead end to end (issue 11 item 6): ingest marks
the repeat, scoring scores it, routing records it on the open lead and publishes lead.resubmitted, no second
assignment is made."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from common.envelope import Event
from tests.support.contracts import validate_record
from tests.support.stack import Stack, post_lead, read_topic, routed, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def test_the_same_email_again_with_a_demo_request_joins_the_open_lead(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack().start()
    routing = stack["routing"]
    lead = sample_lead(1)
    with httpx.Client(timeout=10) as client:
        first = post_lead(client, stack["ingest"], lead)
        assert first.status_code == 202, first.text
        first_id = first.json()["lead_id"]
        wait_until(lambda: routed(client, routing, [first_id]), timeout=60, interval=0.2, what="the first lead routed")

        again = post_lead(client, stack["ingest"], {**lead, "message": "Could we book a demo next week?"})
        assert again.status_code == 202 and again.json()["duplicate_of"] == first_id, again.text
        repeat_id = again.json()["lead_id"]
        records = wait_until(
            lambda: (r := routed(client, routing, [first_id, repeat_id])).get(repeat_id) and r,
            timeout=60,
            interval=0.2,
            what="the repeat recorded",
        )

    repeat, joined = records[repeat_id], records[first_id]
    assert (repeat["status"], repeat["merged_into"]) == ("merged", first_id)
    assert repeat["assignments"] == [] and len(joined["assignments"]) == 1
    (entry,) = [t for t in joined["timeline"] if t["kind"] == "resubmitted"]
    assert entry["detail"]["repeat_lead_id"] == repeat_id
    assert entry["detail"]["lead"]["message"] == "Could we book a demo next week?"
    assert entry["detail"]["rep_id"] == joined["current_assignment"]["rep_id"]

    topic = stack.topic("leads.assigned.v1")

    def published() -> list[tuple[Any, Event]]:
        records = asyncio.run(read_topic(stack.bootstrap, topic))
        found = [(record, Event.from_record(record.key, record.value, record.headers)) for record in records]
        return found if any(e.type == "lead.resubmitted" for _, e in found) else []

    # The outbox relay publishes just after the commit the timeline showed.
    events = wait_until(published, timeout=60, interval=0.5, what="lead.resubmitted on the topic")
    assigned = [e for _, e in events if e.type in ("lead.assigned", "lead.reassigned")]
    assert [e.subject for e in assigned] == [first_id]  # one assignment, for the open lead only
    (resubmitted,) = [(r, e) for r, e in events if e.type == "lead.resubmitted"]
    record, event = resubmitted
    assert validate_record(record.topic, record.key, record.value, record.headers, namespace=stack.namespace) == []
    assert (event.subject, event.data["repeat_lead_id"]) == (first_id, repeat_id)
