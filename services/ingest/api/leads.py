"""POST /v1/leads: parse, authenticate, and hand the lead to the group-commit writer; 202 only after commit."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from common.web import HandoffRoute, bearer_token, problem, refuse_deep_json, tokens_equal
from ingest.api.browser import (
    OriginNotAllowed,
    for_browser,
    form_page,
    quarantine,
    quarantine_unlisted_origin,
    thank_you,
)
from ingest.api.limits import AuthFailureLimiter, caller_address
from ingest.api.shapes import AcceptedOut, LeadIn
from ingest.api.shared import correlation_id, error_responses, request_time, unavailable
from ingest.domain import LeadValidationError, NotALead
from ingest.domain.forms import FORM_CONTENT_TYPE, HONEYPOT_FIELDS, PUBLISHABLE_KEY_FIELD, form_fields
from ingest.domain.keys import PUBLISHABLE_PREFIX
from ingest.handlers import leads as lead_cases
from ingest.handlers.batch import PreparedLead, Stored
from ingest.handlers.source_keys import SourceKeys
from ingest.handlers.sources import Source
from ingest.settings import IngestSettings
from ingest.writer import IngestWriter, WriterBusy, WriterUnavailable

log = structlog.get_logger(__name__)
router = APIRouter(route_class=HandoffRoute)

IDEMPOTENCY_KEY_MAX = 255


@dataclass(frozen=True)
class _Caller:
    source: Source | None  # None for the admin token
    principal: str  # scopes Idempotency-Keys
    origin: str | None = None  # set for a browser on a publishable key


async def _parse_body(request: Request) -> tuple[bytes, str, dict[str, Any]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("", "application/json", FORM_CONTENT_TYPE):
        raise problem(415, "unsupported_media_type", "send application/json or application/x-www-form-urlencoded")
    body = await request.body()  # the body limit middleware stops this at the limit, mid-stream
    if not body:
        raise problem(400, "bad_request", "the request has no body")
    if content_type == FORM_CONTENT_TYPE:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise problem(400, "bad_request", "the form body is not UTF-8") from None
        try:
            fields = form_fields(text)
        except UnicodeDecodeError:
            # Malformed, not merely unreadable: refused, so it is neither a flagged lead nor quarantined.
            bad = [{"field": "body", "reason": "a %-escaped form value is not UTF-8"}]
            raise problem(422, "validation_failed", bad) from None
        return body, content_type, fields
    refuse_deep_json(body)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise problem(400, "malformed_json", f"the body is not valid JSON: {exc.msg}") from None
    if not isinstance(parsed, dict):
        raise problem(422, "validation_failed", [{"field": "body", "reason": "must be a JSON object"}])
    return body, "application/json", parsed


async def _authenticate(request: Request, fields: dict[str, Any]) -> _Caller:
    """The admin token, a source's secret key, or a publishable key used from one of the source's origins."""
    settings: IngestSettings = request.app.state.settings
    token = bearer_token(request)
    in_body = fields.pop(PUBLISHABLE_KEY_FIELD, None)
    if token and tokens_equal(token, settings.admin_token.get_secret_value()):
        return _Caller(None, "admin")
    publishable = request.headers.get("x-handoff-key") or in_body
    if token and token.startswith(PUBLISHABLE_PREFIX + "_"):
        publishable, token = token, None
    # Remembered for at most HANDOFF_SOURCE_CACHE_TTL_S (the revocation bound); a miss reads on a session of its own,
    # not a dependency's: the hot path holds none while the lead waits for the writer.
    keys: SourceKeys = request.app.state.source_keys
    if token:
        source = await keys.by_api_key(token)
        if source is not None:
            return _Caller(source, f"source:{source.id}")
        raise problem(401, "unauthorized", "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
    if isinstance(publishable, str) and publishable:
        source = await keys.by_publishable_key(publishable)
        if source is not None:
            origin = request.headers.get("origin")
            # A publishable key is public by design: only the source's own web pages may use it.
            if origin is None or origin.lower() not in (source.allowed_origins or []):
                raise OriginNotAllowed(source, origin)
            # Its own scope: a page holding the public key cannot pre-claim the back end's Idempotency-Keys.
            return _Caller(source, f"publishable:{source.id}", origin)
    raise problem(
        401, "unauthorized", "a source API key or publishable key is required", {"WWW-Authenticate": "Bearer"}
    )


@router.post(
    "/v1/leads",
    status_code=202,
    response_model=None,
    summary="Submit a lead from a web form or a back end",
    description=(
        "Authenticate with `Authorization: Bearer <source API key>` (or the admin token), or from a browser "
        "with the source's publishable key (`X-Handoff-Key` header or a `_key` form field) on one of its "
        "allowed origins. A browser form (form-urlencoded, publishable key) is answered with a 303 to the "
        "source's thank-you page. `Idempotency-Key` makes retries safe."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": LeadIn.model_json_schema()},
                "application/x-www-form-urlencoded": {"schema": LeadIn.model_json_schema()},
            },
        },
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "The same key and body give the same response; another body gives 409",
                "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
            }
        ],
        "security": [{"adminToken": []}, {"publishableKey": []}],
    },
    responses={
        202: {"model": AcceptedOut, "description": "Stored durably; lead.received follows"},
        303: {"description": "Browser form: redirect to the source's thank-you page"},
        **error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    },
)
async def post_lead(request: Request) -> Response:
    """Parse, authenticate, then store the lead (and its event) in one transaction; 202 only after commit."""
    failures: AuthFailureLimiter = request.app.state.auth_failures
    # No failure on record anywhere (the usual case): no address to work out before the key is checked.
    blocked = failures.retry_after(caller_address(request)) if failures.counting else 0.0
    if blocked > 0:
        raise problem(
            429,
            "too_many_requests",
            "too many failed authentications from this address",
            {"Retry-After": str(math.ceil(blocked))},
        )
    raw_body, content_type, fields = await _parse_body(request)
    try:
        caller = await _authenticate(request, fields)
    except OriginNotAllowed as exc:
        return await quarantine_unlisted_origin(request, exc, raw_body, content_type)
    except HTTPException as exc:
        if exc.status_code == 401:
            failures.failed(caller_address(request))
        raise
    if caller.origin is None:
        return await _accept_post(request, caller, raw_body, content_type, fields)
    try:
        response = await _accept_post(request, caller, raw_body, content_type, fields)
    except HTTPException as exc:
        if content_type == FORM_CONTENT_TYPE:
            # A person at a browser form reads the answer: a page, never raw JSON.
            response = form_page(exc.status_code, exc.detail, exc.headers)
        else:
            response = JSONResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    # The page may read the answer, errors included, only from the source's own origins (checked above).
    response.headers["Access-Control-Allow-Origin"] = caller.origin
    response.headers["Vary"] = "Origin"
    return response


async def _accept_post(
    request: Request, caller: _Caller, raw_body: bytes, content_type: str, fields: dict[str, Any]
) -> Response:
    source = caller.source
    browser_form = caller.origin is not None and content_type == FORM_CONTENT_TYPE
    cid = correlation_id(request)

    if caller.origin is not None:
        wait = request.app.state.rate_limiter.wait((caller.principal, caller_address(request)))
        if wait > 0:
            raise problem(429, "too_many_requests", "slow down", {"Retry-After": str(max(1, round(wait + 0.5)))})
        trapped = [name for name in HONEYPOT_FIELDS if fields.get(name)]
        if trapped:
            # A bot filled the hidden field: answer exactly as if accepted; keep it in quarantine, not as a lead
            # (a person whose browser auto-filled the field can still be released).
            log.info("lead_honeypot_triggered", source_id=source.id if source else None)
            problems = [{"field": name, "reason": "hidden honeypot field filled"} for name in trapped]
            await quarantine(request, source, "honeypot", problems, raw_body, content_type, caller.origin, quiet=True)
            fake = for_browser(lead_cases.Accepted(str(uuid.uuid4()), "accepted", None, False).body(cid))
            page = (thank_you(source) or form_page(202, None)) if browser_form else None
            return page or JSONResponse(fake, status_code=202)
    idem_key = request.headers.get("idempotency-key")
    if idem_key is not None and not (0 < len(idem_key) <= IDEMPOTENCY_KEY_MAX):
        raise problem(
            422,
            "validation_failed",
            [{"field": "Idempotency-Key", "reason": f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters"}],
        )
    try:
        prepared = lead_cases.prepare_lead(
            fields,
            source,
            caller.principal,
            body=raw_body,
            content_type=content_type,
            idempotency_key=idem_key,
            now=request_time(request),
            correlation_id=cid,
        )
    except LeadValidationError as exc:
        if idem_key:
            scope_key = lead_cases.idempotency_scope(caller.principal, idem_key)
            fingerprint = lead_cases.request_fingerprint(raw_body, content_type)
            if await _key_used_for_another_body(request, scope_key, fingerprint):
                raise _conflict() from None
        problems = [{"field": e.field, "reason": e.reason} for e in exc.errors]
        if not isinstance(exc, NotALead):
            raise problem(422, "validation_failed", problems) from None
        # Well-formed, but no way to reach anyone: not a lead, and not lost either.
        quarantine_id = await quarantine(request, source, "no_contact", problems, raw_body, content_type, caller.origin)
        if browser_form:
            return form_page(422, {"error": "not_a_lead", "detail": problems})
        body = {"error": "not_a_lead", "detail": problems, "quarantine_id": quarantine_id}
        return JSONResponse(body, status_code=422)
    stored = await store_lead(request.app.state.writer, prepared)
    status, body, replayed = stored.status, stored.body, stored.replayed
    if caller.origin is not None:
        body = for_browser(body)

    # No log line per accepted lead (it cost more than the lead's validation): handoff_leads_received_total counts
    # them by source kind once committed; warnings and errors are still logged.
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    # orjson renders the same compact UTF-8 JSON as JSONResponse, several times faster.
    response = Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")
    return (thank_you(source) or form_page(status, None)) if browser_form else response


async def store_lead(writer: IngestWriter, prepared: PreparedLead) -> Stored:
    """Hand the lead to the group-commit writer; returns once its transaction committed, its failures as the HTTP
    errors the caller sees (409, 503)."""
    try:
        # The hot path takes no Transaction dependency: the group-commit writer stores many requests' leads in one
        # transaction (one commit per batch, not per lead), which is what lets ingest take bursts.
        # Returns only once the lead's own transaction has committed: the 202 is a durable promise.
        return await writer.submit(prepared)
    except lead_cases.IdempotencyConflict:
        raise _conflict() from None
    except WriterBusy:
        # Overload, not a fault: no log line per refusal (that would add load); the 503 says when to come back.
        raise problem(503, "unavailable", "ingest is overloaded; retry", {"Retry-After": "1"}) from None
    except (SQLAlchemyError, OSError, WriterUnavailable) as exc:
        raise unavailable(exc) from None


def _conflict() -> HTTPException:
    return problem(409, "idempotency_key_reused", "this Idempotency-Key was used with a different request body")


async def _key_used_for_another_body(request: Request, scope_key: str, fingerprint: str) -> bool:
    """Whether a stored response holds this key for another body (a reused key is a 409 before it is a 422)."""
    try:
        # Its own read session: a store failure here must not turn the 422 into a 503.
        async with request.app.state.runtime.db.read() as session:
            return await lead_cases.key_used_for_another_body(session, scope_key, fingerprint)
    except (SQLAlchemyError, OSError):
        return False  # the 422 stands on its own; the key check is a courtesy


@router.options("/v1/leads", include_in_schema=False)
async def preflight_lead(request: Request) -> Response:
    """CORS preflight for browser forms; the origin itself is checked against the source on the POST."""
    origin = request.headers.get("origin")
    if not origin:
        return Response(status_code=204)
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "content-type, idempotency-key, x-handoff-key",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )
