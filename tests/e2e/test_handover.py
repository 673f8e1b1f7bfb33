"""A rep's hand-over end to end: leads posted to ingest, scored and routed by the real processes on the real broker;
the leaving rep's open leads (one of them already worked) all go to other reps through the rules, each published as
lead.reassigned (reassign_reason handover) on the topic; a second hand-over moves nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from common.envelope import Event
from tests.support.contracts import validate_event
from tests.support.stack import ADMIN, Stack, post_lead, read_topic, routed, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

LEADS = 8  # round robin over four reps: two each


def test_a_hand_over_reroutes_every_open_lead_of_the_rep(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack().start()
    routing = stack["routing"].url
    with httpx.Client(timeout=10) as client:
        lead_ids = []
        for i in range(LEADS):
            response = post_lead(client, stack["ingest"], sample_lead(i))
            assert response.status_code == 202, response.text
            lead_ids.append(str(response.json()["lead_id"]))
        records: dict[str, dict[str, Any]] = wait_until(
            lambda: (found := routed(client, stack["routing"], lead_ids)) and len(found) == LEADS and found,
            timeout=60,
            interval=0.2,
            what="every lead routed",
        )
        held = sorted(lead for lead, r in records.items() if r["current_assignment"]["rep_id"] == "r1")
        assert len(held) == 2
        touched = client.post(f"{routing}/v1/leads/{held[0]}/actions", json={"action": "touch"}, headers=ADMIN)
        assert touched.status_code == 200, touched.text
        # The rep leaves for good: away first, so nothing new reaches them while their leads move.
        away = client.put(f"{routing}/v1/reps/r1/availability", json={"status": "away"}, headers=ADMIN)
        assert away.status_code == 200 and away.json()["available"] is False

        answer = client.post(f"{routing}/v1/reps/r1/handover", headers=ADMIN)

        assert answer.status_code == 200, answer.text
        moves = {m["lead_id"]: m for m in answer.json()["leads"]}
        assert set(moves) == set(held)
        after = routed(client, stack["routing"], held)
        for lead_id in held:
            lead = after[lead_id]
            assert lead["current_assignment"]["rep_id"] in ("r2", "r3", "r4")
            assert lead["current_assignment"]["rep_id"] == moves[lead_id]["rep_id"]
            assert lead["assignments"][-2]["rep_id"] == "r1" and lead["assignments"][-2]["end_reason"] == "handover"
            assert lead["timeline"][-1]["kind"] == "reassigned"
            assert lead["timeline"][-1]["detail"]["reassigned_by"] == "admin"
        rep = client.get(f"{routing}/v1/reps/r1", headers=ADMIN).json()
        assert rep["load"]["open_leads"] == 0
        again = client.post(f"{routing}/v1/reps/r1/handover", headers=ADMIN)
        assert again.status_code == 200 and again.json()["moved"] == 0

        def published() -> list[Event]:
            records = asyncio.run(read_topic(stack.bootstrap, stack.topic("leads.assigned.v1")))
            events = (Event.from_record(r.key, r.value, r.headers) for r in records)
            return [e for e in events if e.type == "lead.reassigned" and e.subject in held]

        events = wait_until(lambda: len(found := published()) >= 2 and found, timeout=30, what="two lead.reassigned")
    assert sorted(e.subject for e in events) == held
    for event in events:
        assert event.data["reassign_reason"] == "handover" and event.data["previous_rep_id"] == "r1"
        assert event.data["rep"]["id"] == moves[event.subject]["rep_id"]
        assert validate_event("lead.reassigned", event.data) == []
