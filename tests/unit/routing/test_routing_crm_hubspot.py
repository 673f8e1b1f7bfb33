"""HubSpot's pure parts: the v3 signature (common.hubspot), webhook events into signals, an assignment into contact
properties, the stage mapping's checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from common.hubspot import HubSpotSignatureError, hubspot_v3_signature, verify_hubspot_v3
from routing.connectors.hubspot import HubSpotConfig, contact_properties
from routing.connectors.hubspot_inbound import BadEvents, EngagementEvent, engagement_signals, parse_events, signed_uri
from routing.connectors.hubspot_setup import check_stages

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
STAGES = {"lifecyclestage": {"customer": "convert"}, "hs_lead_status": {"UNQUALIFIED": "disqualify"}}
URL = "https://hooks.example.com/v1/crm/hubspot/events"


def _ms(at: datetime) -> str:
    return str(int(at.timestamp() * 1000))


# -- the signature ------------------------------------------------------------------------------------------------


def test_a_v3_signature_verifies_and_any_change_to_the_body_or_a_stale_timestamp_does_not() -> None:
    body = b'[{"eventId": 1}]'
    signature = hubspot_v3_signature("secret", "POST", URL, body, _ms(NOW))
    verify_hubspot_v3("secret", "POST", URL, body, _ms(NOW), signature, now=NOW)
    with pytest.raises(HubSpotSignatureError, match="mismatch"):
        verify_hubspot_v3("secret", "POST", URL, body + b" ", _ms(NOW), signature, now=NOW)
    old = NOW - timedelta(minutes=6)
    stale = hubspot_v3_signature("secret", "POST", URL, body, _ms(old))
    with pytest.raises(HubSpotSignatureError, match="5 minutes"):
        verify_hubspot_v3("secret", "POST", URL, body, _ms(old), stale, now=NOW)
    with pytest.raises(HubSpotSignatureError, match="no signing secret"):
        verify_hubspot_v3("", "POST", URL, body, _ms(NOW), signature, now=NOW)
    with pytest.raises(HubSpotSignatureError, match="Timestamp"):
        verify_hubspot_v3("secret", "POST", URL, body, "١٢٣", signature, now=NOW)


def test_the_signed_uri_decodes_only_hubspots_listed_escapes() -> None:
    sent = URL + "?next=a%3Ab%20c"
    signature = hubspot_v3_signature("s", "POST", URL + "?next=a:b%20c", b"", _ms(NOW))
    verify_hubspot_v3("s", "POST", sent, b"", _ms(NOW), signature, now=NOW)


def test_behind_a_proxy_the_configured_public_origin_is_what_was_signed() -> None:
    config = HubSpotConfig(public_base_url="https://hooks.example.com")
    assert signed_uri(config, "http://10.0.0.5:8002/v1/crm/hubspot/events?x=1") == URL + "?x=1"
    assert signed_uri(HubSpotConfig(), "http://routing:8002/v1/a") == "http://routing:8002/v1/a"


# -- events into signals ------------------------------------------------------------------------------------------


def _event(**fields: object) -> dict[str, object]:
    return {"eventId": 11, "objectId": 501, "occurredAt": int(NOW.timestamp() * 1000), "portalId": 1, **fields}


def test_a_mapped_stage_change_is_a_signal_and_an_unmapped_one_or_another_property_is_not() -> None:
    events = [
        _event(subscriptionType="contact.propertyChange", propertyName="lifecyclestage", propertyValue="customer"),
        _event(
            eventId=12, subscriptionType="contact.propertyChange", propertyName="lifecyclestage", propertyValue="lead"
        ),
        _event(eventId=13, subscriptionType="contact.propertyChange", propertyName="firstname", propertyValue="Ada"),
        _event(
            eventId=14,
            subscriptionType="object.propertyChange",
            objectTypeId="0-1",
            propertyName="hs_lead_status",
            propertyValue="UNQUALIFIED",
        ),
    ]
    signals, engagements = parse_events(events, STAGES)
    assert [(s.kind, s.contact_id, s.source_ref) for s in signals] == [
        ("convert", "501", "event:11"),
        ("disqualify", "501", "event:14"),
    ]
    assert signals[0].occurred_at == NOW and signals[0].owner_id is None and engagements == []


def test_engagements_created_are_read_back_and_touch_each_associated_contact_by_their_owner() -> None:
    events = [
        _event(subscriptionType="object.creation", objectTypeId="0-48", objectId=900),
        _event(eventId=12, subscriptionType="object.creation", objectTypeId="0-46", objectId=901),
        _event(eventId=13, subscriptionType="engagement.creation", engagementType="MEETING", objectId=902),
        _event(eventId=14, subscriptionType="object.creation", objectTypeId="0-3", objectId=903),  # a deal
    ]
    signals, engagements = parse_events(events, STAGES)
    assert signals == []
    assert [(e.object_type, e.object_id) for e in engagements] == [
        ("calls", "900"),
        ("notes", "901"),
        ("meetings", "902"),
    ]
    read = {"properties": {"hubspot_owner_id": "77", "hs_timestamp": "2026-12-03T08:59:00Z"}, "contact_ids": ["5", "6"]}
    touches = engagement_signals(engagements[0], read)
    assert [(t.kind, t.contact_id, t.owner_id, t.source_ref) for t in touches] == [
        ("touch", "5", "77", "event:11:5"),
        ("touch", "6", "77", "event:11:6"),
    ]
    assert touches[0].occurred_at == NOW - timedelta(minutes=1)
    assert engagement_signals(EngagementEvent("1", "calls", "9", None), None) == []  # deleted since


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"eventId": 1}, "body"), ([1], "[0]"), ([{"objectId": 1}], "[0].eventId"), ([{"eventId": 1}], "[0].objectId")],
)
def test_a_body_that_is_not_hubspot_events_names_the_field(payload: object, field: str) -> None:
    with pytest.raises(BadEvents) as refused:
        parse_events(json.loads(json.dumps(payload)), STAGES)
    assert refused.value.field == field


# -- assignment into contact properties, the stage mapping -------------------------------------------------------


def _assignment(rep: dict[str, str] | None) -> dict[str, object]:
    return {
        "lead_id": "L1",
        "rep": rep,
        "lead": {"email": "ada@example.org", "first_name": "Ada", "last_name": " ", "company": "Analytical"},
        "score": {"grade": "A", "fired": [{"id": "title", "reason": "VP title"}, {"id": "size"}]},
        "sla": {"due_at": "2026-12-03T09:05:00+00:00"},
    }


def test_an_assignment_writes_the_owner_and_handoffs_context_and_a_queued_lead_clears_the_owner() -> None:
    props = contact_properties(_assignment({"id": "r1"}), "77")
    assert props == {
        "handoff_lead_id": "L1",
        "firstname": "Ada",
        "company": "Analytical",
        "hubspot_owner_id": "77",
        "handoff_grade": "A",
        "handoff_reasons": "VP title; size",
        "handoff_sla_due_at": "2026-12-03T09:05:00+00:00",
    }
    assert "email" not in props  # the upsert's id carries it
    assert contact_properties(_assignment(None), None)["hubspot_owner_id"] == ""
    assert "hubspot_owner_id" not in contact_properties(_assignment({"id": "unmapped"}), None)


def test_the_stage_mapping_accepts_only_known_properties_and_actions() -> None:
    assert check_stages(STAGES) == STAGES
    with pytest.raises(ValueError, match=r"stages\.dealstage"):
        check_stages({"dealstage": {"won": "convert"}})
    with pytest.raises(ValueError, match="'touch' is not convert or disqualify"):
        check_stages({"lifecyclestage": {"customer": "touch"}})
