"""The SLA clock end to end: a short SLA is missed, warned, breached and reassigned to another rep, and the
lead's timeline explains it; a touch stops the clock; rep outcomes reach scoring."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from common.envelope import Event
from tests.support.contracts import validate_event
from tests.support.stack import ADMIN, Stack, post_lead, read_topic, routed, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

SLA_S = 6.0
# Every grade gets a 6 s first-contact SLA counted on the wall clock; the reps work around the clock.
SHORT_SLA = {
    "HANDOFF_SLA_MINUTES": json.dumps(dict.fromkeys("ABCD", SLA_S / 60)),
    "HANDOFF_SLA_BUSINESS_HOURS": "false",
}


def _post(client: httpx.Client, stack: Stack, i: int) -> str:
    response = post_lead(client, stack["ingest"], sample_lead(i))
    assert response.status_code == 202, response.text
    return str(response.json()["lead_id"])


def _record(client: httpx.Client, stack: Stack, lead_id: str) -> dict[str, Any]:
    return routed(client, stack["routing"], [lead_id]).get(lead_id, {})


def _kinds(record: dict[str, Any]) -> list[str]:
    return [entry["kind"] for entry in record.get("timeline", [])]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_missed_sla_is_warned_breached_and_reassigned_to_another_rep_and_the_timeline_explains_it(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(env=SHORT_SLA).start()
    with httpx.Client(timeout=10) as client:
        lead_id = _post(client, stack, 1)
        record = wait_until(
            lambda: (r := _record(client, stack, lead_id)) and "reassigned" in _kinds(r) and r,
            timeout=90,
            interval=0.2,
            what="a breach and a reassignment",
        )
        # Touch at once, on the new rep's fresh clock: no second breach follows.
        touch = client.post(
            f"{stack['routing'].url}/v1/leads/{lead_id}/actions", json={"action": "touch"}, headers=ADMIN
        )
        assert touch.status_code == 200, touch.text

        first, second = record["assignments"][:2]
        assert first["rep_id"] and second["rep_id"] and second["rep_id"] != first["rep_id"]
        assert first["end_reason"] == "sla_breach"
        # A fresh clock: the new deadline is a full SLA after the reassignment.
        assert _at(second["sla"]["due_at"]) - _at(second["assigned_at"]) == timedelta(seconds=SLA_S)
        assert _at(second["sla"]["due_at"]) > _at(first["sla"]["due_at"])

        timeline = record["timeline"]
        assert _kinds(record)[:4] == ["assigned", "sla_warning", "sla_breached", "reassigned"]
        assigned, warning, breach, reassigned = timeline[:4]
        assert assigned["detail"]["rep_id"] == first["rep_id"] and assigned["detail"]["reason"]
        assert {c["rep_id"] for c in assigned["detail"]["candidates"]} == {"r1", "r2", "r3", "r4"}
        assert warning["detail"]["fraction"] == 0.5 and warning["detail"]["assignment_id"] == first["assignment_id"]
        assert breach["detail"]["assignment_id"] == first["assignment_id"]
        assert breach["detail"]["late_ms"] < 1000, "the breach fired more than a second after its deadline"
        detail = reassigned["detail"]
        assert (detail["previous_rep_id"], detail["end_reason"], detail["rep_id"]) == (
            first["rep_id"],
            "sla_breach",
            second["rep_id"],
        )
        excluded = {c["rep_id"]: c["excluded_because"] for c in detail["candidates"]}
        assert excluded[first["rep_id"]] == ["already_tried"]
        assert second["rep_id"] in detail["reason"]

        # Well past the second deadline: still the second rep, and no new breach.
        due = _at(second["sla"]["due_at"])
        wait_until(lambda: datetime.now(due.tzinfo) > due + timedelta(seconds=2), timeout=30, what="past due")
        final = _record(client, stack, lead_id)
        assert Counter(_kinds(final))["sla_breached"] == 1
        assert final["current_assignment"]["assignment_id"] == second["assignment_id"]
        assert final["status"] == "touched" and final["time_to_first_touch"]["seconds"] > SLA_S

    events = [
        Event.from_record(r.key, r.value, r.headers)
        for r in asyncio.run(read_topic(stack.bootstrap, stack.topic("leads.sla.v1")))
    ]
    breaches = [e for e in events if e.type == "lead.sla_breached" and e.subject == lead_id]
    assert len({e.id for e in breaches}) == 1
    for event in events:
        assert validate_event(event.type, event.data) == []


def test_a_touch_stops_the_clock_and_records_time_to_first_touch(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(env=SHORT_SLA).start()
    with httpx.Client(timeout=10) as client:
        lead_id = _post(client, stack, 2)
        record = wait_until(lambda: _record(client, stack, lead_id), timeout=60, interval=0.1, what="routed")
        touch = client.post(
            f"{stack['routing'].url}/v1/leads/{lead_id}/actions", json={"action": "touch"}, headers=ADMIN
        )
        assert touch.status_code == 200, touch.text
        facts = touch.json()
        assert facts["within_sla"] is True and 0 <= facts["time_to_first_touch_s"] < SLA_S
        # The reps work around the clock, so working time is wall time.
        assert facts["working_minutes"] == pytest.approx(facts["time_to_first_touch_s"] / 60, abs=0.01)

        due = _at(record["current_assignment"]["sla"]["due_at"])
        wait_until(lambda: datetime.now(due.tzinfo) > due + timedelta(seconds=2), timeout=30, what="past due")
        final = _record(client, stack, lead_id)
    assert "sla_breached" not in _kinds(final) and len(final["assignments"]) == 1
    assert final["time_to_first_touch"]["seconds"] == facts["time_to_first_touch_s"]
    assert final["time_to_first_touch"]["working_minutes"] == facts["working_minutes"]


def test_rep_outcomes_are_published_and_scoring_learns_from_them(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack().start()
    with httpx.Client(timeout=10) as client:
        won, lost = _post(client, stack, 3), _post(client, stack, 4)
        wait_until(lambda: len(routed(client, stack["routing"], [won, lost])) == 2, timeout=60, what="routed")
        url = stack["routing"].url
        assert (
            client.post(
                f"{url}/v1/leads/{won}/actions", json={"action": "convert", "reason": "signed"}, headers=ADMIN
            ).status_code
            == 200
        )
        refused = client.post(f"{url}/v1/leads/{lost}/actions", json={"action": "disqualify"}, headers=ADMIN)
        assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "reason"
        assert (
            client.post(
                f"{url}/v1/leads/{lost}/actions", json={"action": "disqualify", "reason": "student"}, headers=ADMIN
            ).status_code
            == 200
        )

        def outcomes() -> dict[str, Any]:
            scores = {
                lead: client.get(f"{stack['scoring'].url}/v1/scores/{lead}", headers=ADMIN).json()
                for lead in (won, lost)
            }
            return {lead: s.get("outcome") for lead, s in scores.items() if s.get("outcome")}

        assert wait_until(lambda: len(outcomes()) == 2 and outcomes(), timeout=60, what="scoring learned") == {
            won: "won",
            lost: "lost",
        }
    records = asyncio.run(read_topic(stack.bootstrap, stack.topic("leads.outcomes.v1")))
    events = {(e.type, e.subject): e for e in (Event.from_record(r.key, r.value, r.headers) for r in records)}
    assert events[("lead.converted", won)].data["reason"] == "signed"
    assert events[("lead.disqualified", lost)].data["reason"] == "student"
    for event in events.values():
        assert validate_event(event.type, event.data) == []
