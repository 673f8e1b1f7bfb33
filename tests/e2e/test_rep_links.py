"""A rep acts from the email end to end (issue 15 item 3): a lead posted to ingest is scored and routed by real
processes, the assigned rep's email arrives at a loopback SMTP server, its link shows a page on GET (acting on
nothing), acts once on POST and refuses the second use; a rep token cannot act on another rep's lead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.smtp_server import smtp_server
from tests.support.stack import ADMIN, Stack, post_lead, routed, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def _links(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if "/v1/links/" in line)


def test_a_reps_emailed_link_acts_exactly_once_and_another_reps_token_is_refused(
    make_stack: Callable[..., Stack],
) -> None:
    with smtp_server() as mailbox:
        stack = make_stack(
            env={
                "HANDOFF_SMTP_HOST": mailbox.host,
                "HANDOFF_SMTP_PORT": str(mailbox.port),
                "HANDOFF_SMTP_FROM": "handoff@example.com",
            }
        )
        routing = stack["routing"]
        routing.env["HANDOFF_WEBHOOK_LINKS_BASE_URL"] = routing.url
        stack.start()
        with httpx.Client(timeout=10) as client:
            posted = post_lead(client, stack["ingest"], sample_lead(1))
            assert posted.status_code == 202, posted.text
            lead_id = posted.json()["lead_id"]
            record: dict[str, Any] = wait_until(
                lambda: routed(client, routing, [lead_id]).get(lead_id), timeout=60, interval=0.2, what="routed"
            )
            owner = record["current_assignment"]["rep_id"]
            [message] = wait_until(mailbox.received, timeout=60, interval=0.2, what="the assignment email")
            assert message["To"] == f"{owner}@example.com"
            accept = _links(message.get_content())["Accept"]
            assert accept.startswith(f"{routing.url}/v1/links/")

            # Another rep's token: refused, and the lead is as it was.
            other = "r2" if owner == "r1" else "r1"
            issued = client.post(f"{routing.url}/v1/reps/{other}/tokens", json={"name": "e2e"}, headers=ADMIN)
            assert issued.status_code == 201, issued.text
            foreign = {"Authorization": f"Bearer {issued.json()['token']}"}
            refused = client.post(
                f"{routing.url}/v1/leads/{lead_id}/actions", json={"action": "touch"}, headers=foreign
            )
            assert refused.status_code == 403, refused.text

            page = client.get(accept)  # what a mail scanner does
            assert page.status_code == 200 and "<form method='post'>" in page.text
            assert routed(client, routing, [lead_id])[lead_id]["status"] == "assigned"

            assert client.post(accept).status_code == 200
            again = client.post(accept)
            assert again.status_code == 409 and "already used" in again.json()["detail"]
            after = routed(client, routing, [lead_id])[lead_id]
            assert after["status"] == "accepted"
            assert [t["kind"] for t in after["timeline"]].count("accepted") == 1
        # The rep's address went to the SMTP server only, never into a log line.
        assert f"{owner}@example.com" not in stack.all_logs()
