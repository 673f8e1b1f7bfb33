"""The platform registry: each platform's facts in its own module, and everything else derived from the registry.

Signatures are computed here from the published recipes, as in test_ingest_sources, so the registry's wiring
(which secret, which header, which parser) is checked against the platforms, not against itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.api.webhooks import PLATFORM_BODY_LIMITS
from ingest.domain import PlatformLead, SignatureError, normalize_lead
from ingest.domain.model import NormalizedLead
from ingest.domain.sources.platform import HandshakeMalformed, SignedRequest
from ingest.domain.sources.registry import PLATFORMS, SECRET_CONFIG_KEYS, SOURCE_KINDS, WEBHOOK_KINDS, platform
from ingest.handlers.sources import config_problems

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SECRETS = {"app_secret": "meta-secret", "client_secret": "li-secret", "secret": "wf-secret", "google_key": "gk"}


def _secret(key: str) -> str:
    return SECRETS.get(key, "")


def _signed(body: bytes, headers: Mapping[str, str]) -> SignedRequest:
    return SignedRequest(body=body, headers=headers, method="POST", uri="https://x/hook", now=NOW, secret=_secret)


def _normalize(lead: PlatformLead, require_contact: bool) -> NormalizedLead:
    return normalize_lead(lead.raw, now=NOW, strict=False, require_contact=require_contact)


def test_every_kind_a_source_may_have_is_a_registered_platform_and_only_web_has_no_webhook() -> None:
    assert SOURCE_KINDS == ("web", "meta", "google_ads", "linkedin", "typeform", "webflow", "hubspot")
    assert set(SOURCE_KINDS) - WEBHOOK_KINDS == {"web"}
    assert PLATFORM_BODY_LIMITS == {
        "meta": 1024 * 1024,
        "typeform": 1024 * 1024,
        "hubspot": 1024 * 1024,
        "google_ads": 256 * 1024,
        "webflow": 256 * 1024,
        "linkedin": 64 * 1024,
    }


@pytest.mark.parametrize("kind", sorted(WEBHOOK_KINDS))
def test_a_webhook_platform_checks_its_requests_parses_them_and_keeps_its_secrets_encrypted(kind: str) -> None:
    spec = platform(kind)
    assert spec.verify is not None or spec.verify_payload is not None
    assert spec.parse is not None and spec.signature_header
    assert spec.secret_keys | spec.url_keys | spec.list_keys <= spec.config_keys
    assert spec.secret_keys <= SECRET_CONFIG_KEYS
    if spec.fetch is not None:
        assert spec.fetch.base_url_key in spec.url_keys


def test_a_config_key_of_another_platform_is_refused_naming_this_platforms_keys() -> None:
    problems = config_problems("typeform", {"app_secret": "x"}, lambda url: url)
    assert problems == [{"field": "config.app_secret", "reason": "not a setting of typeform sources (known: secret)"}]
    assert config_problems("hubspot", {"properties": "email"}, lambda url: url) == [
        {"field": "config.properties", "reason": "must be a list of strings"}
    ]


def test_meta_through_the_registry_verifies_the_raw_body_and_queues_the_lead_for_fetching() -> None:
    body = b'{"object":"page","entry":[{"changes":[{"field":"leadgen","value":{"leadgen_id":"77"}}]}]}'
    digest = hmac.new(b"meta-secret", body, hashlib.sha256).hexdigest()
    spec = PLATFORMS["meta"]
    assert spec.verify is not None and spec.parse is not None
    spec.verify(_signed(body, {"X-Hub-Signature-256": f"sha256={digest}"}))
    with pytest.raises(SignatureError):
        spec.verify(_signed(body + b" ", {"X-Hub-Signature-256": f"sha256={digest}"}))
    delivery = spec.parse(
        {"object": "page", "entry": [{"changes": [{"field": "leadgen", "value": {"leadgen_id": "77"}}]}]}, _normalize
    )
    assert [external_id for external_id, _ in delivery.fetches] == ["77"]
    assert delivery.fetches[0][1]["platform"] == "meta" and not delivery.leads


def test_a_stale_webflow_timestamp_is_refused_naming_the_timestamp_header() -> None:
    spec = PLATFORMS["webflow"]
    stale = str(int(NOW.timestamp() * 1000) - 10 * 60 * 1000)
    body = b'{"payload":{"data":{"email":"a@example.com"}}}'
    signature = hmac.new(b"wf-secret", stale.encode() + b":" + body, hashlib.sha256).hexdigest()
    assert spec.verify is not None
    with pytest.raises(SignatureError) as refused:
        spec.verify(_signed(body, {"x-webflow-timestamp": stale, "x-webflow-signature": signature}))
    assert spec.rejected_header(refused.value) == "x-webflow-timestamp"
    assert spec.rejected_header(SignatureError("signature mismatch")) == "x-webflow-signature"


def test_hubspot_stores_a_workflow_contact_that_names_a_person_and_fetches_an_event() -> None:
    parse = PLATFORMS["hubspot"].parse
    assert parse is not None
    contact: dict[str, Any] = {"vid": 5, "properties": {"email": {"value": "ana@example.com"}}}
    stored = parse(contact, _normalize)
    assert [(lead.external_id, normalized.email) for lead, normalized in stored.leads] == [("5", "ana@example.com")]
    event = [{"subscriptionType": "contact.creation", "objectId": 6}]
    assert parse(event, _normalize).fetches == [("6", {"platform": "hubspot", "contact_id": "6"})]


def test_linkedin_handshake_without_a_code_is_malformed_and_meta_answers_its_challenge() -> None:
    linkedin = PLATFORMS["linkedin"].handshake
    meta = PLATFORMS["meta"].handshake
    assert linkedin is not None and meta is not None and PLATFORMS["typeform"].handshake is None
    with pytest.raises(HandshakeMalformed) as malformed:
        linkedin(_secret, {})
    assert malformed.value.detail == "challengeCode is required"
    params = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "123"}
    assert meta(lambda key: "tok" if key == "verify_token" else "", params) == "123"
