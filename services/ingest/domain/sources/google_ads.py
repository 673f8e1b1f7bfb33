"""Google Ads lead form webhooks: the shared ``google_key`` and ``user_column_data`` columns."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from ingest.domain.errors import SignatureError
from ingest.domain.sources._common import (
    PlatformLead,
    platform_key,
    platform_time,
    require_secret,
    require_str,
)
from ingest.domain.sources.platform import KIB, Platform, SignedRequest, one_lead

# Google's predefined column ids -> our field names. Custom questions arrive with their own
# column_id and a column_name, and end up in `custom`.
COLUMN_FIELDS = {
    "FULL_NAME": "full_name",
    "FIRST_NAME": "first_name",
    "LAST_NAME": "last_name",
    "EMAIL": "email",
    "WORK_EMAIL": "work_email",
    "PHONE_NUMBER": "phone",
    "WORK_PHONE": "work_phone",
    "COMPANY_NAME": "company",
    "JOB_TITLE": "job_title",
    "CITY": "city",
    "REGION": "region",
    "COUNTRY": "country",
    "POSTAL_CODE": "postal_code",
    "STREET_ADDRESS": "street_address",
}


def verify_google_key(expected: str, payload: Mapping[str, Any]) -> None:
    """Check the body's ``google_key`` (Google's only authentication for lead form webhooks)."""
    require_secret(expected)
    given = payload.get("google_key") if isinstance(payload, Mapping) else None
    if not isinstance(given, str) or not given:
        raise SignatureError("missing google_key")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise SignatureError("google_key does not match")


def parse_google_ads(payload: Mapping[str, Any]) -> PlatformLead:
    """Lead form webhook body -> PlatformLead keyed by ``lead_id`` (columns mapped by ``column_id``)."""
    lead_id = require_str(payload, "lead_id")
    raw: dict[str, Any] = {}
    for column in payload.get("user_column_data") or []:
        if not isinstance(column, Mapping):
            continue
        column_id = str(column.get("column_id") or "")
        value = column.get("string_value")
        if not column_id or value is None:
            continue
        # Custom questions: the column_id is stable and short, the column_name a free-text question.
        raw[COLUMN_FIELDS.get(column_id.upper()) or platform_key(column_id)] = value
    if payload.get("lead_submit_time"):
        submitted = platform_time(payload["lead_submit_time"])
        if submitted:
            raw["submitted_at"] = submitted
        else:
            raw["google_lead_submit_time"] = str(payload["lead_submit_time"])
    if payload.get("gcl_id"):
        raw["gclid"] = payload["gcl_id"]
    if payload.get("form_id") is not None:
        raw["form_id"] = str(payload["form_id"])
    for key in ("campaign_id", "adgroup_id", "creative_id", "asset_group_id", "api_version"):
        if payload.get(key) is not None:
            raw[f"google_{key}"] = str(payload[key])
    is_test = payload.get("is_test") is True or str(payload.get("is_test")).lower() == "true"
    return PlatformLead(external_id=lead_id, raw=raw, is_test=is_test)


def _verify_payload(request: SignedRequest, payload: Any) -> None:
    # Google signs nothing: the shared key in the body is its only authentication.
    verify_google_key(request.secret("google_key"), payload)


# One submission per request.
PLATFORM = Platform(
    kind="google_ads",
    config_keys=frozenset({"google_key"}),
    secret_keys=frozenset({"google_key"}),
    body_limit=256 * KIB,
    signature_header="google_key",
    verify_payload=_verify_payload,
    parse=one_lead(parse_google_ads),
)
