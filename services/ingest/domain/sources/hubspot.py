"""HubSpot: v3 request signatures, webhook event batches and workflow contact payloads."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from common.hubspot import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HubSpotSignatureError,
    hubspot_signed_uri,
)
from common.hubspot import verify_hubspot_v3 as _verify_v3
from ingest.domain.errors import FieldError, LeadValidationError, SignatureError
from ingest.domain.sources._common import PlatformLead, platform_key
from ingest.domain.sources.platform import KIB, Delivery, FetchNeeds, Normalize, Platform, SignedRequest

__all__ = ["PLATFORM", "hubspot_signed_uri", "parse_hubspot", "verify_hubspot_v3"]

_ERASE_TYPES = frozenset({"contact.deletion", "contact.privacyDeletion", "object.deletion", "object.privacyDeletion"})
_CONTACT_OBJECT_TYPE = "0-1"
_ID_KEYS = ("vid", "objectId", "hs_object_id", "id")


def verify_hubspot_v3(
    client_secret: str,
    method: str,
    uri: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: datetime,
) -> None:
    """HubSpot's v3 signature, checked by the one implementation in `common.hubspot` (routing's CRM events use
    it too); raises ingest's SignatureError (401).

    ``uri`` is the full URL HubSpot called (``https://host/path?query``) exactly as received.
    """
    try:
        _verify_v3(client_secret, method, uri, body, timestamp, signature, now=now)
    except HubSpotSignatureError as exc:
        raise SignatureError(str(exc)) from None


def _is_contact_event(event: Mapping[str, Any]) -> bool:
    kind = str(event.get("subscriptionType") or "")
    if kind.startswith("contact."):
        return True
    return kind.startswith("object.") and str(event.get("objectTypeId")) == _CONTACT_OBJECT_TYPE


def _from_events(events: list[Any]) -> list[PlatformLead]:
    # A batch can hold several events for one contact (creation + property changes): merge them so
    # the handler fetches and ingests each contact once.
    merged: dict[str, dict[str, Any]] = {}
    erased: set[str] = set()
    errors: list[FieldError] = []
    for i, event in enumerate(events):
        if not isinstance(event, Mapping) or not _is_contact_event(event):
            continue
        object_id = event.get("objectId")
        if object_id is None or isinstance(object_id, bool):
            errors.append(FieldError(f"{i}.objectId", "required"))
            continue
        contact_id = str(object_id)
        raw = merged.setdefault(contact_id, {"hubspot_contact_id": contact_id})
        if event.get("subscriptionType") in _ERASE_TYPES:
            erased.add(contact_id)
        if event.get("propertyName"):
            raw[platform_key(str(event["propertyName"]))] = event.get("propertyValue")
        if event.get("portalId") is not None:
            raw.setdefault("hubspot_portal_id", str(event["portalId"]))
        if event.get("occurredAt") is not None:
            raw.setdefault("submitted_at", event["occurredAt"])
    if errors:
        raise LeadValidationError(errors)
    return [PlatformLead(external_id=cid, raw=raw, erased=cid in erased) for cid, raw in merged.items()]


def _from_contact(contact: Mapping[str, Any]) -> PlatformLead:
    contact_id = next((contact[k] for k in _ID_KEYS if contact.get(k) not in (None, "")), None)
    properties = contact.get("properties")
    if contact_id is None and isinstance(properties, Mapping):
        contact_id = properties.get("hs_object_id")
    if contact_id is None:
        raise LeadValidationError([FieldError("objectId", "required")])
    if isinstance(contact_id, Mapping):  # v1 shape: {"value": ...}
        contact_id = contact_id.get("value")
    source = properties if isinstance(properties, Mapping) else contact
    raw: dict[str, Any] = {"hubspot_contact_id": str(contact_id)}
    for key, value in source.items():
        if key in _ID_KEYS:
            continue
        # Legacy v1 contact records wrap every property as {"value": ..., "versions": [...]}.
        raw[platform_key(str(key))] = value.get("value") if isinstance(value, Mapping) and "value" in value else value
    return PlatformLead(external_id=str(contact_id), raw=raw, erased=bool(contact.get("archived")))


def parse_hubspot(payload: Any) -> list[PlatformLead]:
    """Webhook event batch (a JSON array) or one workflow contact object -> leads keyed by contact id."""
    if isinstance(payload, list):
        return _from_events(payload)
    if isinstance(payload, Mapping):
        return [_from_contact(payload)]
    raise LeadValidationError([FieldError("body", "expected a JSON array of events or a contact object")])


def _verify(request: SignedRequest) -> None:
    headers = request.headers
    verify_hubspot_v3(
        request.secret("client_secret"),
        request.method,
        request.uri,
        request.body,
        headers.get(TIMESTAMP_HEADER),
        headers.get(SIGNATURE_HEADER),
        now=request.now,
    )


def _delivery(payload: Any, normalize: Normalize) -> Delivery:
    out = Delivery()
    for lead in parse_hubspot(payload):
        if lead.erased:
            out.erasures.append(lead.external_id)
            continue
        if isinstance(payload, dict):
            # A workflow sends the contact itself: store it now when it already names a person.
            try:
                out.leads.append((lead, normalize(lead, True)))
                continue
            except LeadValidationError:
                pass
        # Events carry ids and one changed property each: fetch the whole contact.
        out.fetches.append((lead.external_id, {"platform": "hubspot", "contact_id": lead.external_id}))
    return out


# Up to 100 events in one request: 1 MiB.
PLATFORM = Platform(
    kind="hubspot",
    config_keys=frozenset({"client_secret", "access_token", "api_base_url", "properties"}),
    secret_keys=frozenset({"client_secret", "access_token"}),
    url_keys=frozenset({"api_base_url"}),
    list_keys=frozenset({"properties"}),
    body_limit=1024 * KIB,
    signature_header=SIGNATURE_HEADER,
    timestamp_header=TIMESTAMP_HEADER,
    verify=_verify,
    parse=_delivery,
    fetch=FetchNeeds(api="hubspot", base_url_key="api_base_url"),
)
