"""Typeform webhooks: base64 HMAC signature and ``form_response`` answers keyed by field ref."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.domain.errors import FieldError, LeadValidationError, SignatureError
from ingest.domain.sources._common import (
    PlatformLead,
    as_mapping,
    check_base64,
    hmac_sha256,
    platform_key,
    require_secret,
    require_str,
)
from ingest.domain.sources.platform import KIB, Platform, SignedRequest, one_lead

SIGNATURE_HEADER = "Typeform-Signature"

# Refs are free text chosen by the form author (or generated ids); when a ref is not one of our
# field names, the answer's type still tells us what an email or phone question holds.
_FIELD_BY_ANSWER_TYPE = {"email": "email", "phone_number": "phone"}


def verify_typeform_signature(secret: str, body: bytes, header: str | None) -> None:
    """Check ``Typeform-Signature: sha256=<base64 HMAC-SHA256(secret, raw body)>``."""
    require_secret(secret)
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER}")
    algorithm, _, digest = header.strip().partition("=")
    if algorithm.lower() != "sha256" or not digest:
        raise SignatureError(f"malformed {SIGNATURE_HEADER}")
    # partition() ate the first "=": base64 padding after it stays intact in `digest`.
    check_base64(hmac_sha256(secret, body), digest)


def _answer_value(answer: Mapping[str, Any]) -> Any:
    kind = answer.get("type")
    if kind == "choice":
        choice = answer.get("choice") or {}
        return choice.get("label") or choice.get("other")
    if kind == "choices":
        choices = answer.get("choices") or {}
        labels = list(choices.get("labels") or [])
        if choices.get("other"):
            labels.append(choices["other"])
        return labels
    if kind == "payment":
        payment = answer.get("payment") or {}
        return payment.get("amount")
    if isinstance(kind, str) and kind in answer:
        return answer[kind]
    return None


def parse_typeform(payload: Mapping[str, Any]) -> PlatformLead:
    """``form_response`` webhook -> PlatformLead keyed by ``event_id``; answers keyed by ``field.ref``."""
    event_id = require_str(payload, "event_id")
    if payload.get("event_type") not in (None, "form_response"):
        raise LeadValidationError([FieldError("event_type", "expected 'form_response'")])
    response = as_mapping(payload.get("form_response"), "form_response")
    raw: dict[str, Any] = {}
    by_type: dict[str, Any] = {}
    for answer in response.get("answers") or []:
        if not isinstance(answer, Mapping):
            continue
        field = answer.get("field")
        key = (field.get("ref") or field.get("id")) if isinstance(field, Mapping) else None
        value = _answer_value(answer)
        if not key or value is None:
            continue
        raw[platform_key(str(key))] = value
        typed_as = _FIELD_BY_ANSWER_TYPE.get(str(answer.get("type")))
        if typed_as:
            by_type.setdefault(typed_as, value)
    for name, value in by_type.items():
        raw.setdefault(name, value)
    hidden = response.get("hidden")
    if isinstance(hidden, Mapping) and hidden:
        raw["hidden"] = dict(hidden)
    if response.get("submitted_at"):
        raw["submitted_at"] = response["submitted_at"]
    if response.get("form_id"):
        raw["form_id"] = str(response["form_id"])
    if response.get("token"):
        raw["typeform_token"] = str(response["token"])
    return PlatformLead(external_id=event_id, raw=raw)


def _verify(request: SignedRequest) -> None:
    verify_typeform_signature(request.secret("secret"), request.body, request.headers.get(SIGNATURE_HEADER))


# A response carries every answer (long texts included) and the form's definition: 1 MiB.
PLATFORM = Platform(
    kind="typeform",
    config_keys=frozenset({"secret"}),
    secret_keys=frozenset({"secret"}),
    body_limit=1024 * KIB,
    signature_header=SIGNATURE_HEADER,
    verify=_verify,
    parse=one_lead(parse_typeform),
)
