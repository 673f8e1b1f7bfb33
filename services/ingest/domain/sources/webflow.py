"""Webflow ``form_submission`` webhooks: timestamped hex HMAC signature and the form's data fields."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ingest.domain.errors import FieldError, LeadValidationError, SignatureError
from ingest.domain.sources._common import (
    PlatformLead,
    as_mapping,
    check_fresh,
    check_hex,
    hmac_sha256,
    parse_ms_timestamp,
    platform_key,
    require_secret,
    require_str,
)
from ingest.domain.sources.platform import KIB, Platform, SignedRequest, one_lead

TIMESTAMP_HEADER = "x-webflow-timestamp"
SIGNATURE_HEADER = "x-webflow-signature"


def verify_webflow_signature(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, *, now: datetime
) -> None:
    """Check hex HMAC-SHA256(secret, f"{timestamp}:{raw body}") and that the ms timestamp is <= 5 min old."""
    require_secret(secret)
    if not signature:
        raise SignatureError(f"missing {SIGNATURE_HEADER}")
    ts, sent_at = parse_ms_timestamp(timestamp, label=TIMESTAMP_HEADER)
    # Signature first, then freshness: a stale but genuine request and a forged one both fail,
    # and the order leaks nothing an attacker can use.
    check_hex(hmac_sha256(secret, ts.encode() + b":" + body), signature)
    check_fresh(sent_at, now, label=TIMESTAMP_HEADER)


def parse_webflow(payload: Mapping[str, Any]) -> PlatformLead:
    """``form_submission`` webhook -> PlatformLead keyed by submission id, fields from ``payload.data``."""
    trigger = payload.get("triggerType") if isinstance(payload, Mapping) else None
    if trigger not in (None, "form_submission"):
        raise LeadValidationError([FieldError("triggerType", "expected 'form_submission'")])
    # Webhooks created with the v2 API wrap the submission in `payload`; legacy v1 ones send it flat.
    body = as_mapping(payload.get("payload"), "payload") if "payload" in payload else payload
    submission_id = require_str(body, "id", "payload.id")
    data = as_mapping(body.get("data"), "payload.data")
    raw: dict[str, Any] = {platform_key(str(k)): v for k, v in data.items()}
    if body.get("submittedAt") or body.get("d"):
        raw["submitted_at"] = body.get("submittedAt") or body.get("d")
    form_id = body.get("formId") or body.get("formElementId")
    if form_id:
        raw["form_id"] = str(form_id)
    if body.get("name"):
        raw["webflow_form_name"] = str(body["name"])
    if body.get("siteId") or body.get("site"):
        raw["webflow_site_id"] = str(body.get("siteId") or body.get("site"))
    return PlatformLead(external_id=submission_id, raw=raw)


def _verify(request: SignedRequest) -> None:
    headers = request.headers
    verify_webflow_signature(
        request.secret("secret"),
        request.body,
        headers.get(TIMESTAMP_HEADER),
        headers.get(SIGNATURE_HEADER),
        now=request.now,
    )


# One submission per request.
PLATFORM = Platform(
    kind="webflow",
    config_keys=frozenset({"secret"}),
    secret_keys=frozenset({"secret"}),
    body_limit=256 * KIB,
    signature_header=SIGNATURE_HEADER,
    timestamp_header=TIMESTAMP_HEADER,
    verify=_verify,
    parse=one_lead(parse_webflow),
)
