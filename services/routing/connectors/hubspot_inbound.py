"""HubSpot inbound: webhook subscriptions (v3-signed) become CRM signals (routing.usecases.crm.signal).

What counts: a contact's `lifecyclestage` or `hs_lead_status` changing to a mapped value (convert | disqualify,
configurable), and an engagement created (call, email, meeting, note, task; `object.creation` with its object type
id, or the legacy `engagement.creation`), read back from the API for its owner and contacts: an engagement by the
lead's owner is a touch. Each signal is idempotent on HubSpot's `eventId`. Two phases, so the API reads happen
outside any transaction: `read_events` verifies, parses and fetches; `apply` acts in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox
from common.db import Database
from common.envelope import loads
from common.hubspot import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_hubspot_v3
from routing.connectors.hubspot import SYSTEM, HubSpotConfig, load_config
from routing.connectors.hubspot_client import ENGAGEMENT_TYPES, HubSpotClient, HubSpotError
from routing.store.crm import CrmRepository
from routing.usecases import crm
from routing.usecases.context import RoutingContext

_CONTACT = "0-1"
_LEGACY_ENGAGEMENT_TYPES = {"CALL": "calls", "EMAIL": "emails", "MEETING": "meetings", "NOTE": "notes", "TASK": "tasks"}


class NotConfigured(Exception):
    """HubSpot is not set up (no connection or no client secret): nothing can verify the request."""


class BadEvents(ValueError):
    """The body is not a JSON array of HubSpot events; `field` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Signal:
    """One signal to act on: about a contact, with its kind, who made it, when, and HubSpot's reference."""

    kind: str
    contact_id: str
    source_ref: str
    owner_id: str | None
    occurred_at: datetime | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class EngagementEvent:
    """An engagement created in HubSpot, to be read back for its owner and contacts."""

    event_id: str
    object_type: str  # the API's name: calls, emails, ...
    object_id: str
    occurred_at: datetime | None


def parse_events(payload: Any, stages: Mapping[str, Mapping[str, str]]) -> tuple[list[Signal], list[EngagementEvent]]:
    """Stage changes as signals and engagements to read back; other events are ignored (pure)."""
    if not isinstance(payload, list):
        raise BadEvents("body", "expected a JSON array of HubSpot events")
    signals: list[Signal] = []
    engagements: list[EngagementEvent] = []
    for i, event in enumerate(payload):
        if not isinstance(event, Mapping):
            raise BadEvents(f"[{i}]", "expected an event object")
        kind = str(event.get("subscriptionType") or "")
        event_id, object_id = event.get("eventId"), event.get("objectId")
        if event_id is None or object_id is None or isinstance(object_id, bool):
            raise BadEvents(f"[{i}].eventId" if event_id is None else f"[{i}].objectId", "required")
        type_id = str(event.get("objectTypeId") or "")
        at = _ms_time(event.get("occurredAt"))
        if kind == "contact.propertyChange" or (kind == "object.propertyChange" and type_id == _CONTACT):
            prop, value = str(event.get("propertyName") or ""), event.get("propertyValue")
            action = (stages.get(prop) or {}).get(str(value)) if value is not None else None
            if action in crm.KINDS and action != "touch":
                detail = {"event": kind, "property": prop, "value": str(value), "reason": f"{prop} is {value}"}
                signals.append(Signal(action, str(object_id), f"event:{event_id}", None, at, detail))
        elif kind == "object.creation" and type_id in ENGAGEMENT_TYPES:
            engagements.append(EngagementEvent(str(event_id), ENGAGEMENT_TYPES[type_id], str(object_id), at))
        elif kind == "engagement.creation":
            object_type = _LEGACY_ENGAGEMENT_TYPES.get(str(event.get("engagementType") or "").upper(), "calls")
            engagements.append(EngagementEvent(str(event_id), object_type, str(object_id), at))
    return signals, engagements


def engagement_signals(event: EngagementEvent, engagement: Mapping[str, Any] | None) -> list[Signal]:
    """A read-back engagement as a touch by its owner on each contact it is associated with (pure)."""
    if engagement is None:
        return []  # deleted since: nothing to count
    props = engagement.get("properties") or {}
    owner = props.get("hubspot_owner_id")
    at = _iso_time(props.get("hs_timestamp")) or event.occurred_at
    detail = {"event": "engagement", "engagement": event.object_type, "engagement_id": event.object_id}
    return [
        Signal("touch", contact_id, f"event:{event.event_id}:{contact_id}", str(owner) if owner else None, at, detail)
        for contact_id in engagement.get("contact_ids") or []
    ]


async def read_events(
    db: Database,
    http: httpx.AsyncClient,
    box: SecretBox,
    *,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime,
) -> list[Signal]:
    """Verify the request (HubSpotSignatureError), parse it (BadEvents), read engagements back (HubSpotError);
    no transaction is held while HubSpot is called."""
    async with db.read() as session:
        config = await load_config(CrmRepository(session), box)
    if config is None or not config.client_secret:
        raise NotConfigured("HubSpot is not configured with an app client secret (PUT /v1/crm/hubspot)")
    verify_hubspot_v3(
        config.client_secret,
        "POST",
        signed_uri(config, uri),
        body,
        headers.get(TIMESTAMP_HEADER),
        headers.get(SIGNATURE_HEADER),
        now=now,
    )
    try:
        payload = loads(body)
    except ValueError as exc:
        raise BadEvents("body", "not valid JSON") from exc
    signals, engagements = parse_events(payload, config.stages)
    if engagements:
        client = HubSpotClient(http, base_url=config.base_url, access_token=config.access_token)
        for event in engagements:
            signals.extend(engagement_signals(event, await client.engagement(event.object_type, event.object_id)))
    return signals


async def apply(rt: RoutingContext, session: AsyncSession, signals: list[Signal]) -> list[dict[str, Any]]:
    """Act on each signal in the caller's transaction; what each did, in order."""
    results = []
    for signal in signals:
        result = await crm.signal(
            rt,
            session,
            SYSTEM,
            kind=signal.kind,
            source_ref=signal.source_ref,
            external_id=signal.contact_id,
            external_owner_id=signal.owner_id,
            occurred_at=signal.occurred_at,
            detail=signal.detail,
        )
        results.append({"source_ref": signal.source_ref, "kind": signal.kind, **result.to_dict()})
    return results


def signed_uri(config: HubSpotConfig, uri: str) -> str:
    """The URL HubSpot signed: the configured public origin (behind a proxy) with the path and query received."""
    if not config.public_base_url:
        return uri
    _scheme, _, rest = uri.partition("://")
    path = "/" + rest.partition("/")[2]
    return config.public_base_url.rstrip("/") + path


def _ms_time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _iso_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _ms_time(int(value)) if value.isdigit() else None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


__all__ = ["BadEvents", "HubSpotError", "NotConfigured", "apply", "parse_events", "read_events"]
