"""Canary personal data sent through the whole system must never reach a log line or a metric.

A unique email, phone, name, company and message go in through every door (JSON, form, a source's key, a browser's
publishable key, a refused body, previews), are scored, routed, breach their SLA, are acted on (with a reason in the
rep's words), delivered to a sales tool that is down, and erased. One more event makes a store error whose statement
carries the canary as a parameter, so it fails, is logged and is dead-lettered. Then every service's log (at DEBUG),
every /metrics output and every dead-letter header is searched for them, as typed, lower-cased and in E.164.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import phonenumbers
import pytest

from common.envelope import Event
from common.topics import LEADS_RECEIVED, dead_letter_topic
from tests.support.stack import ADMIN, Stack, free_port, post_lead, produce_raw, read_topic, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

CANARY_ENV = {
    "HANDOFF_LOG_LEVEL": "DEBUG",
    # Breaches within seconds, so the SLA path (timers, escalation, SLA events) runs with the canary lead.
    "HANDOFF_SLA_MINUTES": json.dumps({"A": 0.05, "B": 0.05, "C": 0.05, "D": 0.05}),
    "HANDOFF_SLA_BUSINESS_HOURS": "false",
    "HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true",
}


class Canary:
    """Values that occur nowhere else: any sighting of one in a log or a metric is a leak."""

    def __init__(self) -> None:
        letters = "".join(random.choices(string.ascii_lowercase, k=8))
        self.first_name = f"Canarina{letters.capitalize()}"
        self.last_name = f"Vogelsang{letters[::-1].capitalize()}"
        self.email = f"Kanarien.{letters}@Canary-{letters}.example.com"
        while True:
            number = phonenumbers.parse(f"+49 151 {random.randint(10_000_000, 99_999_999)}")
            if phonenumbers.is_valid_number(number):
                break
        self.phone_typed = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        self.phone_e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        self.phone_national = str(number.national_number)
        self.company = f"Kanarienwerk {letters.capitalize()} GmbH"
        # Free text that names no email or phone: only redaction by field, not by pattern, keeps it out.
        self.words = f"Zaunkoenig{letters}"

    def lead(self, **extra: Any) -> dict[str, Any]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "phone": self.phone_typed,
            "company": self.company,
            "job_title": "Head of Sales",
            "country": "DE",
            "message": f"Call {self.first_name} on {self.phone_typed} or write to {self.email} about {self.words}",
            **extra,
        }

    def needles(self) -> set[str]:
        values = {
            self.first_name,
            self.last_name,
            f"{self.first_name} {self.last_name}",
            self.email,
            self.email.split("@")[0],
            self.phone_typed,
            self.phone_e164,
            self.phone_national,
            self.company,
            self.words,
        }
        return values | {v.lower() for v in values}


def leaks(text: str, needles: set[str]) -> dict[str, list[str]]:
    """Each needle found, with the lines it was found in (shortened)."""
    found: dict[str, list[str]] = {}
    lowered = text.lower()
    for needle in needles:
        if needle.lower() in lowered:
            found[needle] = [line[:300] for line in text.splitlines() if needle.lower() in line.lower()][:5]
    return found


def test_canary_personal_data_reaches_no_log_line_and_no_metric(make_stack: Callable[..., Stack]) -> None:
    canary = Canary()
    stack = make_stack(env=CANARY_ENV).start()
    ingest, scoring, routing = stack["ingest"], stack["scoring"], stack["routing"]
    origin = "https://www.canary-shop.example"
    with httpx.Client(timeout=10) as client:
        # A sales tool that is down: every routing event for the lead is delivered, fails and is retried.
        dead = f"http://127.0.0.1:{free_port()}/hooks"
        endpoint = client.post(
            f"{routing.url}/v1/webhook-endpoints", json={"url": dead, "event_types": ["*"]}, headers=ADMIN
        )
        assert endpoint.status_code == 201, endpoint.text
        source = client.post(
            f"{ingest.url}/v1/sources",
            json={"kind": "web", "name": "Canary form", "allowed_origins": [origin]},
            headers=ADMIN,
        ).json()
        source_key = {"Authorization": f"Bearer {source['api_key']}"}

        # In through every door.
        accepted = post_lead(client, ingest, canary.lead())
        assert accepted.status_code == 202, accepted.text
        lead_id = accepted.json()["lead_id"]
        again = client.post(f"{ingest.url}/v1/leads", json=canary.lead(company="Canary Again"), headers=source_key)
        assert again.status_code == 202 and again.json()["duplicate_of"] == lead_id, again.text
        form = client.post(
            f"{ingest.url}/v1/leads",
            data={**canary.lead(), "_key": source["publishable_key"]},
            headers={"Origin": origin},
        )
        assert form.status_code in (202, 303), form.text
        refused = post_lead(client, ingest, {**canary.lead(), "email": f"{canary.email}@@", "phone": "12"})
        assert refused.status_code == 422
        malformed = client.post(
            f"{ingest.url}/v1/leads",
            content=f'{{"email": "{canary.email}", "first_name": "{canary.first_name}"'.encode(),
            headers={**ADMIN, "Content-Type": "application/json"},
        )
        assert malformed.status_code == 400
        preview = client.post(f"{scoring.url}/v1/score/preview", json={"lead": canary.lead()}, headers=ADMIN)
        assert preview.status_code in (200, 422), preview.text
        simulated = client.post(f"{routing.url}/v1/routing/simulate", json={"lead": canary.lead()}, headers=ADMIN)
        assert simulated.status_code == 200, simulated.text

        # Scored, routed, breached and escalated; then acted on.
        def routed() -> dict[str, Any] | None:
            response = client.get(f"{routing.url}/v1/leads/{lead_id}", headers=ADMIN)
            return response.json() if response.status_code == 200 else None

        wait_until(routed, timeout=60, interval=0.2, what="the canary lead routed")
        wait_until(
            lambda: any(t["kind"] == "sla_breached" for t in (routed() or {}).get("timeline", [])),
            timeout=60,
            what="the canary lead's SLA breach",
        )
        reason = f"{canary.first_name} of {canary.company} said {canary.words}"
        for action in ({"action": "accept"}, {"action": "touch"}, {"action": "disqualify", "reason": reason}):
            response = client.post(f"{routing.url}/v1/leads/{lead_id}/actions", json=action, headers=ADMIN)
            assert response.status_code in (200, 409), response.text
        assert client.get(f"{ingest.url}/v1/leads/{lead_id}", headers=ADMIN).status_code == 200
        assert client.get(f"{scoring.url}/v1/scores/{lead_id}", headers=ADMIN).status_code == 200
        assert client.get(f"{ingest.url}/v1/leads", headers=ADMIN).status_code == 200

        # Erased everywhere.
        assert client.delete(f"{ingest.url}/v1/leads/{lead_id}", headers=ADMIN).status_code == 202
        wait_until(lambda: (routed() or {}).get("erased"), timeout=60, what="the erasure reaching routing")
        wait_until(
            lambda: (
                client.get(f"{routing.url}/v1/webhook-endpoints/{endpoint.json()['id']}/deliveries", headers=ADMIN)
                .json()
                .get("items")
            ),
            timeout=30,
            what="webhook deliveries attempted",
        )

        # A store error whose statement carries the canary: scoring looks up a repeat's first lead by
        # `duplicate_of`, here an object holding the name, which the database refuses to bind. It fails on every
        # attempt and is dead-lettered.
        poison = Event(
            type="lead.received",
            source="/handoff/ingest",
            subject=str(uuid.uuid4()),
            data={"lead_id": "x", "lead": canary.lead(), "duplicate_of": {"name": canary.first_name}},
        )
        asyncio.run(
            produce_raw(stack.bootstrap, stack.topic(LEADS_RECEIVED), poison.value(), poison.key(), poison.headers())
        )
        dead_topic = stack.topic(dead_letter_topic("scoring"))
        dead = wait_until(
            lambda: asyncio.run(read_topic(stack.bootstrap, dead_topic, timeout=2)),
            timeout=60,
            what="the poison event dead-lettered",
        )
        assert dict(dead[0].headers)["dlq_reason"] == b"handler_failed", dead[0].headers
        dead_headers = "\n".join(
            f"{name}: {value.decode('utf-8', 'replace')}"
            for service in ("scoring", "routing")
            for record in asyncio.run(read_topic(stack.bootstrap, stack.topic(dead_letter_topic(service)), timeout=1))
            for name, value in record.headers
        )

        metrics = {name: client.get(f"{s.url}/metrics").text for name, s in stack.services.items()}

    stack.stop()  # shutdown logs too
    logs = {name: s.logs() for name, s in stack.services.items()}

    # The search looks where the lead was handled: the logs name it, and the metrics count it.
    assert any(lead_id in text for text in logs.values()), "no log line mentions the lead at all"
    assert all("handoff_http_requests_total" in text for text in metrics.values())
    found = {
        f"{name} {kind}": hits
        for name in stack.services
        for kind, text in (("log", logs[name]), ("metrics", metrics[name]))
        if (hits := leaks(text, canary.needles()))
    }
    if hits := leaks(dead_headers, canary.needles()):
        found["dead-letter headers"] = hits
    assert found == {}, json.dumps(found, indent=2)
