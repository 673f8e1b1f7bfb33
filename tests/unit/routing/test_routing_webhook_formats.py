"""Endpoint formats: a stored Standard Webhooks body rendered for Slack (Block Kit) or Teams (an Adaptive Card)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from routing.webhooks.formats import FORMATS, UnknownFormat, check_format, render
from routing.webhooks.signing import webhook_body

pytestmark = pytest.mark.unit

AT = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


def _body(event_type: str = "lead.assigned", **data: object) -> str:
    return webhook_body(event_type, AT, {"lead_id": "L1", **data})


def test_standard_is_the_stored_body_byte_for_byte() -> None:
    body = _body(lead={"full_name": "Pat Doe"})
    assert render("standard", body, links_base_url="https://h.example.com") == body


def test_unknown_formats_are_refused_by_name() -> None:
    assert [check_format(f) for f in FORMATS] == ["standard", "slack", "teams"]
    with pytest.raises(UnknownFormat, match="discord"):
        check_format("discord")


def test_slack_always_has_a_text_fallback_and_escapes_what_a_lead_typed() -> None:
    message = orjson.loads(render("slack", _body(lead={"full_name": "<!channel> & co"}, rep={"name": "Ana"})))
    assert message["text"] == "New lead assigned: &lt;!channel&gt; &amp; co, rep Ana"
    assert "<!channel>" not in orjson.dumps(message).decode()
    # Even a body with nothing in it (a test ping, an erased lead) gives Slack a text and valid blocks.
    bare = orjson.loads(render("slack", webhook_body("webhook.test", AT, {})))
    assert bare["text"] == "Test delivery from Handoff"
    assert [b["type"] for b in bare["blocks"]] == ["header", "section", "context"]


def test_an_erased_lead_renders_without_its_person_and_no_links_without_a_base_url() -> None:
    message = orjson.loads(render("slack", _body(lead={}, rep={"name": "Ana"})))
    assert message["text"] == "New lead assigned: lead L1, rep Ana"
    assert "actions" not in {b["type"] for b in message["blocks"]}


def test_chat_messages_leave_out_contact_details() -> None:
    lead = {"full_name": "Pat Doe", "email": "pat@acme.io", "phone": "+14155550100", "company": "Acme"}
    for fmt in ("slack", "teams"):
        text = render(fmt, _body(lead=lead))
        assert "Pat Doe" in text and "Acme" in text
        assert "pat@acme.io" not in text and "+14155550100" not in text


def test_teams_gets_an_adaptive_card_in_a_message_with_links_back() -> None:
    body = _body("lead.sla_breached", rep_id="ana", due_at="2026-12-03T14:05:00Z")
    message = orjson.loads(render("teams", body, links_base_url="https://h.example.com/"))
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"], card["body"][0]["text"]) == ("AdaptiveCard", "1.4", "SLA breached")
    facts = next(b["facts"] for b in card["body"] if b["type"] == "FactSet")
    assert facts == [{"title": "Rep", "value": "ana"}, {"title": "SLA due", "value": "2026-12-03 14:05 UTC"}]
    assert [a["url"] for a in card["actions"]] == ["https://h.example.com/v1/leads/L1", "https://h.example.com/ops"]
