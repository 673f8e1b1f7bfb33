"""LinkedIn Lead Sync: endpoint validation, signed notifications, and lead form responses -> raw."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.domain.dates import parse_datetime
from ingest.domain.errors import FieldError, LeadValidationError, SignatureError
from ingest.domain.sources._common import check_hex, hmac_sha256, platform_key, require_secret, require_str
from ingest.domain.sources.platform import (
    KIB,
    Delivery,
    FetchNeeds,
    HandshakeMalformed,
    Normalize,
    Platform,
    Secret,
    SignedRequest,
    require_object,
)

SIGNATURE_HEADER = "X-LI-Signature"
# LinkedIn's validation codes are UUIDs. Anything else is refused unsigned: answering arbitrary text would make
# the handshake an HMAC oracle under the client secret, from which anyone could forge signed notifications.
CHALLENGE_CODE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Predefined lead form fields -> our field names. Anything else (custom questions) keeps the
# question's `name` from the form definition, or `question_<id>` when no definition is given.
PREDEFINED_FIELDS = {
    "FIRST_NAME": "first_name",
    "LAST_NAME": "last_name",
    "EMAIL": "email",
    "PHONE_NUMBER": "phone",
    "WORK_PHONE_NUMBER": "work_phone",
    "COMPANY_NAME": "company",
    "JOB_TITLE": "job_title",
    "CITY": "city",
    "STATE": "region",
    "COUNTRY": "country",
    "POSTAL_CODE": "postal_code",
    "WORK_EMAIL": "work_email",
    "COMPANY_WEBSITE": "website",
    "LINKEDIN_PROFILE_LINK": "linkedin_profile",
    "SENIORITY": "seniority",
    "INDUSTRY": "industry",
    "COMPANY_SIZE": "company_size",
    "JOB_FUNCTION": "job_function",
    "GENDER": "gender",
    "ADDRESS": "street_address",
}


@dataclass(frozen=True)
class LinkedInNotification:
    """A Lead Sync notification; the lead itself must be fetched by ``urn`` (unless action is DELETED)."""

    urn: str
    action: str  # CREATED or DELETED
    form_urn: str | None = None
    occurred_at: datetime | None = None


def linkedin_challenge(client_secret: str, challenge_code: str) -> dict[str, str]:
    """Answer the endpoint validation GET: echo the code with hex HMAC-SHA256(client_secret, code).

    Raises LeadValidationError (naming challengeCode) for a code that is not a UUID, and signs nothing.
    """
    if not CHALLENGE_CODE.fullmatch(challenge_code):
        raise LeadValidationError([FieldError("challengeCode", "must be a UUID, as LinkedIn sends")])
    require_secret(client_secret)
    return {
        "challengeCode": challenge_code,
        "challengeResponse": hmac_sha256(client_secret, challenge_code.encode()).hex(),
    }


def verify_linkedin_signature(client_secret: str, body: bytes, header: str | None) -> None:
    """Check ``X-LI-Signature`` = hex HMAC-SHA256(client_secret, b"hmacsha256=" + raw body)."""
    require_secret(client_secret)
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER}")
    # The "hmacsha256=" prefix is part of the signed message, not of the header value.
    check_hex(hmac_sha256(client_secret, b"hmacsha256=" + body), header)


def parse_linkedin_notification(payload: Mapping[str, Any]) -> LinkedInNotification:
    """Lead Sync notification body -> the form response URN to fetch, and CREATED/DELETED."""
    urn = require_str(payload, "leadGenFormResponse")
    action = str(payload.get("leadAction") or "CREATED").upper()
    if action not in ("CREATED", "DELETED"):
        raise LeadValidationError([FieldError("leadAction", f"unknown action {action!r}")])
    occurred = payload.get("occurredAt")
    try:
        occurred_at = parse_datetime(occurred) if occurred not in (None, "") else None
    except (ValueError, OverflowError, OSError) as exc:
        raise LeadValidationError([FieldError("occurredAt", "not a timestamp")]) from exc
    form = payload.get("leadGenForm")
    return LinkedInNotification(urn=urn, action=action, form_urn=str(form) if form else None, occurred_at=occurred_at)


def _question_keys(form: Mapping[str, Any] | None) -> dict[str, str]:
    """questionId -> raw key, from a lead form definition (``content.questions``)."""
    if not form:
        return {}
    nested = form.get("content")
    content: Mapping[str, Any] = nested if isinstance(nested, Mapping) else form
    keys: dict[str, str] = {}
    for question in content.get("questions") or []:
        if not isinstance(question, Mapping) or question.get("questionId") is None:
            continue
        predefined = question.get("predefinedField")
        key = PREDEFINED_FIELDS.get(str(predefined)) if predefined else None
        keys[str(question["questionId"])] = key or platform_key(
            str(question.get("name") or f"question_{question['questionId']}")
        )
    return keys


def _answer_value(details: Mapping[str, Any]) -> Any:
    if isinstance(details.get("textQuestionAnswer"), Mapping):
        return details["textQuestionAnswer"].get("answer")
    if isinstance(details.get("multipleChoiceAnswer"), Mapping):
        return [str(option) for option in details["multipleChoiceAnswer"].get("options") or []]
    return None


def linkedin_lead_to_raw(form_response: Mapping[str, Any], *, form: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``leadFormResponses`` record -> raw lead dict (answers keyed via the form's questions).

    Answers only carry a ``questionId``; which one is FIRST_NAME, EMAIL, ... is in the lead form
    definition, passed as ``form``. Predefined fields are keyed first so they win over custom keys.
    """
    response = form_response.get("formResponse") if isinstance(form_response, Mapping) else None
    if not isinstance(response, Mapping):
        raise LeadValidationError([FieldError("formResponse", "expected an object")])
    keys = _question_keys(form)
    answers: list[tuple[str, Any]] = []
    for answer in response.get("answers") or []:
        if not isinstance(answer, Mapping) or answer.get("questionId") is None:
            continue
        details = answer.get("answerDetails")
        value = _answer_value(details) if isinstance(details, Mapping) else None
        if value is None:
            continue
        question_id = str(answer["questionId"])
        answers.append((keys.get(question_id, f"question_{question_id}"), value))
    predefined = set(PREDEFINED_FIELDS.values())
    raw: dict[str, Any] = dict(sorted(answers, key=lambda kv: kv[0] not in predefined))
    for consent in response.get("consentResponses") or []:
        if isinstance(consent, Mapping) and consent.get("consentId") is not None:
            raw[f"consent_{consent['consentId']}"] = bool(consent.get("accepted"))
    if form_response.get("submittedAt") is not None:
        raw["submitted_at"] = form_response["submittedAt"]
    form_urn = form_response.get("versionedLeadGenFormUrn") or form_response.get("form")
    if form_urn:
        raw["form_id"] = str(form_urn)
    if form_response.get("leadType"):
        raw["linkedin_lead_type"] = str(form_response["leadType"])
    return raw


def linkedin_is_test(form_response: Mapping[str, Any]) -> bool:
    """True for test leads created from Campaign Manager's preview."""
    return form_response.get("testLead") is True


def _verify(request: SignedRequest) -> None:
    verify_linkedin_signature(request.secret("client_secret"), request.body, request.headers.get(SIGNATURE_HEADER))


def _handshake(secret: Secret, params: Mapping[str, str]) -> dict[str, str]:
    code = params.get("challengeCode")
    if not code:
        raise HandshakeMalformed("challengeCode is required")
    try:
        return linkedin_challenge(secret("client_secret"), code)
    except LeadValidationError as exc:
        raise HandshakeMalformed([{"field": e.field, "reason": e.reason} for e in exc.errors]) from None


def _delivery(payload: Any, _normalize: Normalize) -> Delivery:
    note = parse_linkedin_notification(require_object(payload))
    if note.action == "DELETED":
        return Delivery(erasures=[note.urn])
    notification = {
        "platform": "linkedin",
        "urn": note.urn,
        "form_urn": note.form_urn,
        "occurred_at": note.occurred_at.isoformat() if note.occurred_at else None,
    }
    return Delivery(fetches=[(note.urn, notification)])


# Notifications carry only URNs, so the web lead limit is plenty.
PLATFORM = Platform(
    kind="linkedin",
    config_keys=frozenset({"client_secret", "access_token", "api_base_url"}),
    secret_keys=frozenset({"client_secret", "access_token"}),
    url_keys=frozenset({"api_base_url"}),
    body_limit=64 * KIB,
    signature_header=SIGNATURE_HEADER,
    verify=_verify,
    parse=_delivery,
    handshake=_handshake,
    fetch=FetchNeeds(api="linkedin", base_url_key="api_base_url"),
)
