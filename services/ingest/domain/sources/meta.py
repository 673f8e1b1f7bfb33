"""Meta (Facebook/Instagram) Lead Ads: webhook verification, leadgen notifications, Graph lead -> raw."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.domain.dates import parse_datetime
from ingest.domain.errors import FieldError, LeadValidationError, SignatureError
from ingest.domain.sources._common import check_hex, hmac_sha256, platform_key, require_secret
from ingest.domain.sources.platform import (
    KIB,
    Delivery,
    FetchNeeds,
    Normalize,
    Platform,
    Secret,
    SignedRequest,
    require_object,
)

SIGNATURE_HEADER = "X-Hub-Signature-256"
_CHALLENGE = re.compile(r"[A-Za-z0-9_\-]{1,256}")


@dataclass(frozen=True)
class MetaLeadRef:
    """One leadgen notification: the lead must still be fetched from the Graph API by ``leadgen_id``."""

    leadgen_id: str
    form_id: str | None = None
    page_id: str | None = None
    ad_id: str | None = None
    created_time: datetime | None = None


def verify_meta_signature(app_secret: str, body: bytes, header: str | None) -> None:
    """Check ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>``."""
    require_secret(app_secret)
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER}")
    algorithm, _, digest = header.strip().partition("=")
    if algorithm.lower() != "sha256" or not digest:
        raise SignatureError(f"malformed {SIGNATURE_HEADER}")
    check_hex(hmac_sha256(app_secret, body), digest)


def meta_verify_challenge(verify_token: str, params: Mapping[str, str]) -> str:
    """Answer the subscription handshake: return ``hub.challenge`` when mode and token match."""
    require_secret(verify_token)
    if params.get("hub.mode") != "subscribe":
        raise SignatureError("hub.mode must be 'subscribe'")
    token = params.get("hub.verify_token") or ""
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        raise SignatureError("hub.verify_token does not match")
    challenge = params.get("hub.challenge") or ""
    # Meta sends a number; the API echoes it as the response body, so anything else (markup,
    # megabytes) is refused rather than reflected.
    if not _CHALLENGE.fullmatch(challenge):
        raise SignatureError("missing or malformed hub.challenge")
    return challenge


def _opt_id(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def parse_meta_notification(payload: Mapping[str, Any]) -> list[MetaLeadRef]:
    """All leadgen changes in a (possibly batched) ``{"object": "page", "entry": [...]}`` notification."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("entry"), list):
        raise LeadValidationError([FieldError("entry", "expected a list")])
    if payload.get("object") not in (None, "page"):
        raise LeadValidationError([FieldError("object", "expected 'page'")])
    refs: list[MetaLeadRef] = []
    errors: list[FieldError] = []
    for i, entry in enumerate(payload["entry"]):
        changes = entry.get("changes") if isinstance(entry, Mapping) else None
        for j, change in enumerate(changes or []):
            if not isinstance(change, Mapping) or change.get("field") != "leadgen":
                continue  # other page fields share the subscription; they are not leads
            value = change.get("value")
            path = f"entry.{i}.changes.{j}.value"
            if not isinstance(value, Mapping) or _opt_id(value.get("leadgen_id")) is None:
                errors.append(FieldError(f"{path}.leadgen_id", "required"))
                continue
            created = value.get("created_time")
            try:
                created_time = parse_datetime(created) if created not in (None, "") else None
            except (ValueError, OverflowError, OSError):
                errors.append(FieldError(f"{path}.created_time", "not a timestamp"))
                continue
            refs.append(
                MetaLeadRef(
                    leadgen_id=str(value["leadgen_id"]),
                    form_id=_opt_id(value.get("form_id")),
                    page_id=_opt_id(value.get("page_id") or entry.get("id")),
                    ad_id=_opt_id(value.get("ad_id")),
                    created_time=created_time,
                )
            )
    if errors:
        raise LeadValidationError(errors)
    return refs


def meta_lead_to_raw(graph_lead: Mapping[str, Any]) -> dict[str, Any]:
    """Graph API lead ``{"id", "created_time", "field_data": [{"name", "values"}]}`` -> raw lead dict."""
    field_data = graph_lead.get("field_data") if isinstance(graph_lead, Mapping) else None
    if not isinstance(field_data, list):
        raise LeadValidationError([FieldError("field_data", "expected a list")])
    raw: dict[str, Any] = {}
    for item in field_data:
        if not isinstance(item, Mapping) or not item.get("name"):
            continue
        values = item.get("values") or []
        if not isinstance(values, list):
            values = [values]
        # Field names are the form's own keys (standard ones like "full_name", "phone_number", or
        # custom question keys); single answers become plain strings, multi-selects stay lists.
        raw[platform_key(str(item["name"]))] = values[0] if len(values) == 1 else (values or None)
    if graph_lead.get("created_time"):
        raw.setdefault("submitted_at", graph_lead["created_time"])
    if graph_lead.get("form_id"):
        raw.setdefault("form_id", str(graph_lead["form_id"]))
    for key in ("ad_id", "adset_id", "campaign_id", "platform"):
        if graph_lead.get(key):
            raw.setdefault(f"meta_{key}", str(graph_lead[key]))
    if graph_lead.get("is_organic") is not None:
        raw.setdefault("meta_is_organic", bool(graph_lead["is_organic"]))
    return raw


def _verify(request: SignedRequest) -> None:
    verify_meta_signature(request.secret("app_secret"), request.body, request.headers.get(SIGNATURE_HEADER))


def _handshake(secret: Secret, params: Mapping[str, str]) -> str:
    return meta_verify_challenge(secret("verify_token"), params)


def _delivery(payload: Any, _normalize: Normalize) -> Delivery:
    out = Delivery()
    for ref in parse_meta_notification(require_object(payload)):
        notification = {
            "platform": "meta",
            "leadgen_id": ref.leadgen_id,
            "form_id": ref.form_id,
            "page_id": ref.page_id,
            "ad_id": ref.ad_id,
            "created_time": ref.created_time.isoformat() if ref.created_time else None,
        }
        out.fetches.append((ref.leadgen_id, notification))
    return out


# A notification batches up to 1,000 changes: 1 MiB leaves a wide margin.
PLATFORM = Platform(
    kind="meta",
    config_keys=frozenset({"app_secret", "verify_token", "access_token", "graph_base_url"}),
    secret_keys=frozenset({"app_secret", "verify_token", "access_token"}),
    url_keys=frozenset({"graph_base_url"}),
    body_limit=1024 * KIB,
    signature_header=SIGNATURE_HEADER,
    verify=_verify,
    parse=_delivery,
    handshake=_handshake,
    fetch=FetchNeeds(api="meta", base_url_key="graph_base_url"),
)
