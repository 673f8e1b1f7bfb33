"""Ingest's HTTP API: thin routes that parse, authenticate, own the transaction and call handlers."""

from __future__ import annotations

import base64
import binascii
import html
import ipaddress
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
import structlog
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import SQLAlchemyError

from common.crypto import SecretKeyError
from common.egress import UnsafeUrl, vet_url
from common.web import Admin, HandoffRoute, bearer_token, client_address, refuse_deep_json, tokens_equal
from ingest import handlers
from ingest.domain import LeadValidationError, NotALead, hash_api_key, lookup_country, normalize_lead, normalize_url
from ingest.domain.keys import PUBLISHABLE_PREFIX
from ingest.domain.lead import subject_identity_keys
from ingest.settings import IngestSettings
from ingest.store import IngestRepository, Source
from ingest.writer import IngestWriter, WriterBusy, WriterUnavailable

log = structlog.get_logger(__name__)
router = APIRouter(route_class=HandoffRoute)

SourceKind = Literal["web", "meta", "google_ads", "linkedin", "typeform", "webflow", "hubspot"]
SOURCE_KINDS: tuple[str, ...] = SourceKind.__args__  # type: ignore[attr-defined]
HONEYPOT_FIELDS = ("_gotcha", "_honeypot", "hp_website")
PUBLISHABLE_KEY_FIELD = "_key"
IDEMPOTENCY_KEY_MAX = 255

# Each platform's settings under the platform's own names; anything else is a typo that would silently break
# signature checks, so it is refused when the source is saved rather than discovered at the first webhook.
CONFIG_KEYS: dict[str, frozenset[str]] = {
    "web": frozenset(),
    "meta": frozenset({"app_secret", "verify_token", "access_token", "graph_base_url"}),
    "google_ads": frozenset({"google_key"}),
    "linkedin": frozenset({"client_secret", "access_token", "api_base_url"}),
    "typeform": frozenset({"secret"}),
    "webflow": frozenset({"secret"}),
    "hubspot": frozenset({"client_secret", "access_token", "api_base_url", "properties"}),
}
URL_CONFIG_KEYS = frozenset({"graph_base_url", "api_base_url"})
LIST_CONFIG_KEYS = frozenset({"properties"})

ADMIN_SECURITY: dict[str, Any] = {"security": [{"adminToken": []}]}


def _now(request: Request) -> datetime:
    clock = request.app.state.clock
    now: datetime = clock()
    return now


def _error(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail={"error": code, "detail": detail}, headers=headers)


def _unavailable(exc: BaseException | None = None) -> HTTPException:
    if exc is not None:
        log.error("ingest_store_failed", error=type(exc).__name__)
    return _error(503, "unavailable", "the store could not commit; retry", {"Retry-After": "1"})


# -- documented shapes ------------------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    """Every error: a stable code, and what went wrong (for 422, one {field, reason} per bad field)."""

    error: str
    detail: Any = None


_ERROR_DESCRIPTIONS = {
    400: "Malformed body (not JSON, not UTF-8, empty) or header",
    401: "No valid key or token",
    403: "The publishable key was used from an origin the source does not allow",
    404: "Not found",
    409: "Idempotency-Key reused with a different body",
    413: "Body over the limit (64 KiB by default)",
    415: "Unsupported content type",
    422: "Invalid fields, each named with the reason",
    429: "Too many requests from this address",
    503: "The store could not commit; nothing was kept, retry",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}, "required": True}}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorOut, "description": _ERROR_DESCRIPTIONS[code]}
        if code in (429, 503):
            out[code]["headers"] = _RETRY_AFTER
    return out


def _date_time(description: str | None = None) -> Any:
    return Field(json_schema_extra={"format": "date-time"}, description=description)


class LeadIn(BaseModel):
    """The documented shape of a web lead; any other key is kept as a bounded custom field."""

    model_config = ConfigDict(extra="allow")

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = Field(default=None, description="Split into first and last when those are missing")
    email: str | None = Field(default=None, description="Required unless phone is given")
    phone: str | None = Field(default=None, description="Any format; normalized to E.164 with the source's region")
    company: str | None = None
    job_title: str | None = None
    website: str | None = None
    country: str | None = Field(default=None, description="Name or ISO 3166 code; stored as alpha-2")
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    language: str | None = None
    message: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    gclid: str | None = None
    fbclid: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    form_id: str | None = None
    submitted_at: datetime | None = None


class AcceptedOut(BaseModel):
    lead_id: str
    status: Literal["accepted", "duplicate"]
    duplicate_of: str | None = Field(
        default=None,
        description=(
            "The earlier lead of the same person within the repeat window; left out for publishable-key (browser) "
            "callers, since anyone can hold that key and would learn who was a lead"
        ),
    )
    is_test: bool
    correlation_id: str | None


class LeadData(BaseModel):
    """A lead after normalization, the same for every source."""

    model_config = ConfigDict(extra="allow")

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    email: str | None = None
    phone: str | None = Field(default=None, description="E.164")
    company: str | None = None
    job_title: str | None = None
    website: str | None = None
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2")
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    language: str | None = None
    message: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    form_id: str | None = None
    consent: dict[str, bool] = Field(default_factory=dict)
    utm: dict[str, str] = Field(default_factory=dict)
    click_ids: dict[str, str] = Field(default_factory=dict)
    submitted_at: str | None = _date_time()
    custom: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class SourceRef(BaseModel):
    id: str | None
    kind: str | None = None
    name: str | None = None


class LeadOut(BaseModel):
    lead_id: str
    source: SourceRef
    external_id: str | None
    is_test: bool
    duplicate_of: str | None
    received_at: str = _date_time()
    erased_at: str | None = _date_time("Set once the personal data was erased; `lead` is then null")
    lead: LeadData | None


class LeadPage(BaseModel):
    items: list[LeadOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class ErasedOut(BaseModel):
    lead_id: str
    status: Literal["erased"]


# -- browser forms: rate limit --------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per (source, client address) for browser posts on publishable keys, in this process."""

    def __init__(self, per_minute: int, max_addresses: int) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def wait(self, key: tuple[str, str], now: float | None = None) -> float:
        """0 when the request may go ahead (and is counted), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_addresses:
            # The least recently seen address goes first; at worst it gets a fresh bucket later.
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / rate


class AuthFailureLimiter:
    """Failed authentications per client address in fixed windows, in this process.

    After `limit` failures within a window the address is refused until the window ends: guessing keys gets slow,
    and a refused guess costs no body parsing and no key look-up.
    """

    def __init__(self, limit: int, window_s: float, max_addresses: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def retry_after(self, address: str, now: float | None = None) -> float:
        """0 when the address may try, else the seconds until its window ends."""
        now = time.monotonic() if now is None else now
        entry = self._windows.get(_address_group(address))
        if entry is None:
            return 0.0
        started, failures = entry
        left = started + self.window_s - now
        return left if left > 0 and failures >= self.limit else 0.0

    def failed(self, address: str, now: float | None = None) -> None:
        """Count one failure against the address."""
        now = time.monotonic() if now is None else now
        key = _address_group(address)
        started, failures = self._windows.pop(key, (now, 0))
        if now - started >= self.window_s:
            started, failures = now, 0
        self._windows[key] = (started, failures + 1)
        while len(self._windows) > self.max_addresses:
            self._windows.popitem(last=False)  # the least recently failing address first


def _address_group(address: str) -> str:
    """IPv6 clients count by /64, the block one subscriber gets: walking through it does not reset the count."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _client_address(request: Request) -> str:
    settings: IngestSettings = request.app.state.settings
    return client_address(request, settings.trusted_proxies)


# -- POST /v1/leads -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Caller:
    source: Source | None  # None for the admin token
    principal: str  # scopes Idempotency-Keys
    origin: str | None = None  # set for a browser on a publishable key


async def _parse_body(request: Request) -> tuple[bytes, str, dict[str, Any]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("", "application/json", "application/x-www-form-urlencoded"):
        raise _error(415, "unsupported_media_type", "send application/json or application/x-www-form-urlencoded")
    body = await request.body()  # the body limit middleware stops this at the limit, mid-stream
    if not body:
        raise _error(400, "bad_request", "the request has no body")
    if content_type == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _error(400, "bad_request", "the form body is not UTF-8") from None
        try:
            fields = form_fields(text)
        except UnicodeDecodeError:
            # Malformed, not merely unreadable: refused, so it is neither a flagged lead nor quarantined.
            problem = [{"field": "body", "reason": "a %-escaped form value is not UTF-8"}]
            raise _error(422, "validation_failed", problem) from None
        return body, content_type, fields
    refuse_deep_json(body)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _error(400, "malformed_json", f"the body is not valid JSON: {exc.msg}") from None
    if not isinstance(parsed, dict):
        raise _error(422, "validation_failed", [{"field": "body", "reason": "must be a JSON object"}])
    return body, "application/json", parsed


def form_fields(text: str) -> dict[str, Any]:
    """A form-urlencoded body as fields; a repeated name (a group of checkboxes) keeps every value."""
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True, errors="strict"):
        if key in fields:
            previous = fields[key]
            fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[key] = value
    return fields


async def _authenticate(request: Request, fields: dict[str, Any]) -> _Caller:
    """The admin token, a source's secret key, or a publishable key used from one of the source's origins."""
    runtime = request.app.state.runtime
    settings: IngestSettings = request.app.state.settings
    token = bearer_token(request)
    in_body = fields.pop(PUBLISHABLE_KEY_FIELD, None)
    if token and tokens_equal(token, settings.admin_token.get_secret_value()):
        return _Caller(None, "admin")
    publishable = request.headers.get("x-handoff-key") or in_body
    if token and token.startswith(PUBLISHABLE_PREFIX + "_"):
        publishable, token = token, None
    async with runtime.db.read() as session:
        repo = IngestRepository(session)
        if token:
            # The lookup is by hash of the presented key, so no secret is compared byte by byte.
            source = await repo.source_by_key_hash(hash_api_key(token))
            if source is not None and source.enabled:
                return _Caller(source, f"source:{source.id}")
            raise _error(401, "unauthorized", "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
        if isinstance(publishable, str) and publishable:
            source = await repo.source_by_publishable_key(publishable)
            if source is not None and source.enabled:
                origin = request.headers.get("origin")
                # A publishable key is public by design: only the source's own web pages may use it.
                if origin is None or origin.lower() not in (source.allowed_origins or []):
                    raise _OriginNotAllowed(source, origin)
                # Its own scope: a page holding the public key cannot pre-claim the back end's Idempotency-Keys.
                return _Caller(source, f"publishable:{source.id}", origin)
    raise _error(401, "unauthorized", "a source API key or publishable key is required", {"WWW-Authenticate": "Bearer"})


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
        **_errors(400, 401, 403, 409, 413, 415, 422, 429, 503),
    },
)
async def post_lead(request: Request) -> Response:
    """Parse, authenticate, then store the lead (and its event) in one transaction; 202 only after commit."""
    address = _client_address(request)
    failures: AuthFailureLimiter = request.app.state.auth_failures
    blocked = failures.retry_after(address)
    if blocked > 0:
        raise _error(
            429,
            "too_many_requests",
            "too many failed authentications from this address",
            {"Retry-After": str(math.ceil(blocked))},
        )
    raw_body, content_type, fields = await _parse_body(request)
    try:
        caller = await _authenticate(request, fields)
    except _OriginNotAllowed as exc:
        return await _quarantine_unlisted_origin(request, exc, raw_body, content_type)
    except HTTPException as exc:
        if exc.status_code == 401:
            failures.failed(address)
        raise
    if caller.origin is None:
        return await _accept_post(request, caller, raw_body, content_type, fields)
    try:
        response = await _accept_post(request, caller, raw_body, content_type, fields)
    except HTTPException as exc:
        if content_type == "application/x-www-form-urlencoded":
            # A person at a browser form reads the answer: a page, never raw JSON.
            response = _form_page(exc.status_code, exc.detail, exc.headers)
        else:
            response = JSONResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    # The page may read the answer, errors included, only from the source's own origins (checked above).
    response.headers["Access-Control-Allow-Origin"] = caller.origin
    response.headers["Vary"] = "Origin"
    return response


async def _accept_post(
    request: Request, caller: _Caller, raw_body: bytes, content_type: str, fields: dict[str, Any]
) -> Response:
    runtime = request.app.state.runtime
    source = caller.source
    browser_form = caller.origin is not None and content_type == "application/x-www-form-urlencoded"
    correlation_id = request.scope.get("state", {}).get("correlation_id")

    if caller.origin is not None:
        wait = request.app.state.rate_limiter.wait((caller.principal, _client_address(request)))
        if wait > 0:
            raise _error(429, "too_many_requests", "slow down", {"Retry-After": str(max(1, round(wait + 0.5)))})
        trapped = [name for name in HONEYPOT_FIELDS if fields.get(name)]
        if trapped:
            # A bot filled the hidden field: answer exactly as if accepted; keep it in quarantine, not as a lead
            # (a person whose browser auto-filled the field can still be released).
            log.info("lead_honeypot_triggered", source_id=source.id if source else None)
            problems = [{"field": name, "reason": "hidden honeypot field filled"} for name in trapped]
            await _quarantine(request, source, "honeypot", problems, raw_body, content_type, caller.origin, quiet=True)
            fake = _for_browser(handlers.Accepted(str(uuid.uuid4()), "accepted", None, False).body(correlation_id))
            thank_you = (_thank_you(source) or _form_page(202, None)) if browser_form else None
            return thank_you or JSONResponse(fake, status_code=202)
    for name in HONEYPOT_FIELDS:
        fields.pop(name, None)

    idem_key = request.headers.get("idempotency-key")
    if idem_key is not None and not (0 < len(idem_key) <= IDEMPOTENCY_KEY_MAX):
        raise _error(
            422,
            "validation_failed",
            [{"field": "Idempotency-Key", "reason": f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters"}],
        )
    scope_key = handlers.idempotency_scope(caller.principal, idem_key) if idem_key else None
    fingerprint = handlers.request_fingerprint(raw_body, content_type)
    now = _now(request)

    try:
        lead = normalize_lead(
            fields,
            default_region=source.default_region if source else None,
            field_mapping=source.field_mapping if source else None,
            now=now,
        )
    except LeadValidationError as exc:
        if scope_key and await _key_used_for_another_body(runtime, scope_key, fingerprint):
            raise _conflict() from None
        problems = [{"field": e.field, "reason": e.reason} for e in exc.errors]
        if not isinstance(exc, NotALead):
            raise _error(422, "validation_failed", problems) from None
        # Well-formed, but no way to reach anyone: not a lead, and not lost either.
        quarantine_id = await _quarantine(
            request, source, "no_contact", problems, raw_body, content_type, caller.origin
        )
        if browser_form:
            return _form_page(422, {"error": "not_a_lead", "detail": problems})
        body = {"error": "not_a_lead", "detail": problems, "quarantine_id": quarantine_id}
        return JSONResponse(body, status_code=422)
    prepared = handlers.PreparedLead(lead, source, now, correlation_id, scope_key=scope_key, fingerprint=fingerprint)
    writer: IngestWriter = request.app.state.writer
    try:
        # Returns only once the lead's own transaction has committed: the 202 below is a durable promise.
        stored = await writer.submit(prepared)
    except handlers.IdempotencyConflict:
        raise _conflict() from None
    except WriterBusy:
        # Overload, not a fault: no log line per refusal (that would add load); the 503 says when to come back.
        raise _error(503, "unavailable", "ingest is overloaded; retry", {"Retry-After": "1"}) from None
    except (SQLAlchemyError, OSError, WriterUnavailable) as exc:
        raise _unavailable(exc) from None
    status, body, replayed = stored.status, stored.body, stored.replayed
    if caller.origin is not None:
        body = _for_browser(body)

    if replayed:
        response: Response = JSONResponse(body, status_code=status, headers={"Idempotent-Replayed": "true"})
    else:
        log.info(
            "lead_accepted",
            lead_id=body["lead_id"],
            duplicate_of=stored.body["duplicate_of"],
            source_kind=source.kind if source else "api",
        )
        response = JSONResponse(body, status_code=status)
    return (_thank_you(source) or _form_page(status, None)) if browser_form else response


def _for_browser(body: dict[str, Any]) -> dict[str, Any]:
    """The 202 as a publishable-key caller sees it: without `duplicate_of`, which would tell anyone holding the
    public key whether an email was a lead lately, and its id (back ends and the events keep it)."""
    return {key: value for key, value in body.items() if key != "duplicate_of"}


class _OriginNotAllowed(HTTPException):
    """A publishable key used from a page not (yet) in the source's allowed origins."""

    def __init__(self, source: Source, origin: str | None) -> None:
        super().__init__(403, {"error": "forbidden", "detail": "this origin is not allowed for the publishable key"})
        self.source = source
        self.origin = origin


async def _quarantine(
    request: Request,
    source: Source | None,
    reason: str,
    problems: list[dict[str, str]],
    raw_body: bytes,
    content_type: str,
    origin: str | None,
    *,
    quiet: bool = False,
) -> str | None:
    """Keep a submission that is not a lead; its id. `quiet` (honeypot) answers as usual even if the store fails."""
    try:
        async with request.app.state.runtime.db.transaction() as session:
            quarantine_id = await handlers.quarantine_submission(
                session,
                source=source,
                reason=reason,
                problems=problems,
                content_type=content_type,
                body=raw_body,
                origin=origin,
                now=_now(request),
                correlation_id=request.scope.get("state", {}).get("correlation_id"),
            )
    except (SQLAlchemyError, OSError) as exc:
        if quiet:
            log.error("quarantine_store_failed", reason=reason, error=type(exc).__name__)
            return None
        raise _unavailable(exc) from None
    # Never the body or the problems (they quote what the person typed): ids and the reason only.
    log.info(
        "submission_quarantined", quarantine_id=quarantine_id, source_id=source.id if source else None, reason=reason
    )
    return quarantine_id


async def _quarantine_unlisted_origin(
    request: Request, exc: _OriginNotAllowed, raw_body: bytes, content_type: str
) -> Response:
    """A landing page not yet in allowed_origins: its leads wait in quarantine for the origin to be added."""
    source = exc.source
    browser_form = content_type == "application/x-www-form-urlencoded"
    wait = request.app.state.rate_limiter.wait((f"publishable:{source.id}", _client_address(request)))
    if wait > 0:
        error = _error(429, "too_many_requests", "slow down", {"Retry-After": str(max(1, round(wait + 0.5)))})
        if browser_form:
            return _form_page(error.status_code, error.detail, error.headers)
        raise error
    problems = [{"field": "Origin", "reason": "not in the source's allowed_origins"}]
    await _quarantine(request, source, "origin_not_allowed", problems, raw_body, content_type, exc.origin)
    if browser_form:
        # The person did everything right; the page's owner has to list it. Thank them as usual.
        return _thank_you(source) or _form_page(202, None)
    raise exc


_PAGES: dict[str, tuple[str, str]] = {
    "not_a_lead": (
        "Please tell us how to reach you",
        "We could not read an email address or a phone number in your form. Please go back and check them.",
    ),
    "too_many_requests": ("Please wait a moment", "Too many forms were sent from here. Please try again shortly."),
    "validation_failed": ("Please check the form", "Some fields could not be read. Please go back and check them."),
}


def _form_page(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """A short readable page for a person at a browser form; names fields, never echoes what was typed."""
    code = detail.get("error") if isinstance(detail, dict) else None
    if status < 300:
        title, text = "Thank you", "We received your request and will be in touch."
    else:
        title, text = _PAGES.get(str(code), ("Sorry, that did not work", "Please try again later."))
    fields = [
        str(problem.get("field"))
        for problem in (detail.get("detail") if isinstance(detail, dict) else None) or []
        if isinstance(problem, dict) and problem.get("field")
    ]
    named = f"<p>Fields: {html.escape(', '.join(fields))}</p>" if fields and status == 422 else ""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family: system-ui, sans-serif; max-width: 36em; margin: 3em auto; padding: 0 1em">'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{named}</body></html>"
    )
    return HTMLResponse(page, status_code=status, headers=dict(headers) if headers else None)


def _conflict() -> HTTPException:
    return _error(409, "idempotency_key_reused", "this Idempotency-Key was used with a different request body")


async def _key_used_for_another_body(runtime: Any, scope_key: str, fingerprint: str) -> bool:
    """Whether a stored response holds this key for another body (a reused key is a 409 before it is a 422)."""
    try:
        async with runtime.db.read() as session:
            record = await IngestRepository(session).idempotency(scope_key)
    except (SQLAlchemyError, OSError):
        return False  # the 422 stands on its own; the key check is a courtesy
    return record is not None and record.request_hash != fingerprint


def _thank_you(source: Source | None) -> Response | None:
    if source is not None and source.thank_you_url:
        return RedirectResponse(source.thank_you_url, status_code=303)
    return None


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


# -- reading and erasing leads ----------------------------------------------------------------------------------

LeadId = Annotated[uuid.UUID, Path(description="The lead_id returned when the lead was accepted")]


@router.get(
    "/v1/leads/{lead_id}",
    summary="A stored lead, normalized, with its source",
    response_model=LeadOut,
    responses=_errors(401, 404, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def get_lead(lead_id: LeadId, request: Request, _admin: Admin) -> dict[str, Any]:
    """The normalized lead and its source; `lead` is null once erased."""
    async with request.app.state.runtime.db.read() as session:
        repo = IngestRepository(session)
        lead = await repo.lead(str(lead_id))
        if lead is None:
            raise _error(404, "not_found", "no lead with this id")
        source = await repo.source(lead.source_id) if lead.source_id else None
        return handlers.lead_view(lead, source)


def _encode_cursor(received_at: str, lead_id: str) -> str:
    return base64.urlsafe_b64encode(f"{received_at}|{lead_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, lead_id = text.partition("|")
        if not sep or not lead_id:
            raise ValueError(cursor)
        return _utc(datetime.fromisoformat(at)), lead_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise _error(
            422, "validation_failed", [{"field": "cursor", "reason": "not a cursor from this API"}]
        ) from None


def _utc(value: datetime) -> datetime:
    # Naive times are UTC; others are converted, so SQLite (which stores no offset) compares like PostgreSQL.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get(
    "/v1/leads",
    summary="Leads, newest first, paginated",
    response_model=LeadPage,
    responses=_errors(401, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def list_leads(
    request: Request,
    _admin: Admin,
    source_id: Annotated[uuid.UUID | None, Query(description="Only this source's leads")] = None,
    since: Annotated[datetime | None, Query(description="Only leads received at or after this time")] = None,
    cursor: Annotated[str | None, Query(max_length=1000, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    email: Annotated[str | None, Query(max_length=320, description="Subject access: this person's leads")] = None,
    phone: Annotated[str | None, Query(max_length=64, description="Subject access: this person's leads")] = None,
    region: Annotated[str | None, Query(max_length=2, description="Country of a phone without +")] = None,
) -> dict[str, Any]:
    """Leads newest first; pass `next_cursor` back as `cursor` for the next page. With `email` or `phone`, every
    lead of that person (a subject-access request), matched on the normalized identity, in one page."""
    if email or phone:
        return await _subject_leads(request, email, phone, region)
    before = _decode_cursor(cursor) if cursor else None
    try:
        since_utc = _utc(since) if since else None
    except OverflowError:
        raise _error(422, "validation_failed", [{"field": "since", "reason": "out of range"}]) from None
    async with request.app.state.runtime.db.read() as session:
        repo = IngestRepository(session)
        leads = await repo.leads(
            source_id=str(source_id) if source_id else None, since=since_utc, before=before, limit=limit + 1
        )
        page = leads[:limit]
        sources = await repo.sources_by_id(lead.source_id for lead in page if lead.source_id)
        items = [handlers.lead_view(lead, sources.get(lead.source_id or "")) for lead in page]
    next_cursor = None
    if len(leads) > limit:
        next_cursor = _encode_cursor(items[-1]["received_at"], items[-1]["lead_id"])
    return {"items": items, "next_cursor": next_cursor}


def _subject_keys(email: str | None, phone: str | None, region: str | None) -> list[str]:
    try:
        return subject_identity_keys(email, phone, region.upper() if region else None)
    except LeadValidationError as exc:
        detail = [{"field": e.field, "reason": e.reason} for e in exc.errors]
        raise _error(422, "validation_failed", detail) from None


async def _subject_leads(request: Request, email: str | None, phone: str | None, region: str | None) -> dict[str, Any]:
    keys = _subject_keys(email, phone, region)
    async with request.app.state.runtime.db.read() as session:
        leads = await handlers.subject_leads(session, keys)
        sources = await IngestRepository(session).sources_by_id(lead.source_id for lead in leads if lead.source_id)
        items = [handlers.lead_view(lead, sources.get(lead.source_id or "")) for lead in leads]
    # The person is not logged: the request's id ties the answer to the caller's records.
    log.info("subject_access", leads=len(items))
    return {"items": items, "next_cursor": None}


class SubjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=64)
    region: str | None = Field(None, min_length=2, max_length=2, description="Country of a phone without +")


class SubjectErasedOut(BaseModel):
    erased: list[str] = Field(description="The ids of the leads erased now (each gets its own lead.erased)")
    count: int


@router.post(
    "/v1/subjects/erase",
    status_code=202,
    summary="Erase every lead of one person (by email or phone), here and through lead.erased everywhere",
    response_model=SubjectErasedOut,
    responses=_errors(401, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def erase_subject(body: SubjectIn, request: Request, _admin: Admin) -> dict[str, Any]:
    """Each of the person's leads goes through the normal erasure; calling again finds nothing more to erase."""
    keys = _subject_keys(body.email, body.phone, body.region)
    async with request.app.state.runtime.db.transaction() as session:
        erased = await handlers.erase_subject(
            session,
            request.app.state.settings,
            keys,
            _now(request),
            request.scope.get("state", {}).get("correlation_id"),
            mentions=[value for value in (body.email, body.phone) if value],
        )
    log.info("subject_erased", leads=len(erased), lead_ids=erased[:50])
    return {"erased": erased, "count": len(erased)}


@router.delete(
    "/v1/leads/{lead_id}",
    status_code=202,
    summary="Erase a lead's personal data here, and (through lead.erased) in the other services",
    response_model=ErasedOut,
    responses=_errors(401, 404, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def delete_lead(lead_id: LeadId, request: Request, _admin: Admin) -> dict[str, Any]:
    """Erase the personal data and emit lead.erased; erasing again changes nothing."""
    runtime = request.app.state.runtime
    async with runtime.db.transaction() as session:
        lead = await IngestRepository(session).lead(str(lead_id))
        if lead is None:
            raise _error(404, "not_found", "no lead with this id")
        await handlers.erase_lead(
            session,
            request.app.state.settings,
            lead,
            _now(request),
            request.scope.get("state", {}).get("correlation_id"),
        )
    log.info("lead_erased", lead_id=lead.id)
    return {"lead_id": lead.id, "status": "erased"}


# -- sources ----------------------------------------------------------------------------------------------------


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


def _region(value: str) -> str:
    if lookup_country(value) != value:
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return value


def _origin(value: str) -> str:
    parts = urlsplit(value.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError("an origin is scheme://host[:port], e.g. https://www.example.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("an origin is scheme://host[:port], e.g. https://www.example.com")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port is not a number") from None
    # Browsers send the origin without a default port and without a trailing slash.
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port not in (None, default) else "")


def _url(value: str) -> str:
    if "://" not in value:
        raise ValueError("must be an absolute http or https URL")
    return normalize_url(value)


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
Region = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"), AfterValidator(_region)]
MappingKey = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
MappingTarget = Annotated[
    str,
    Field(max_length=200, description="Our field, utm.x, consent.x, click_ids.x or custom.x; '' drops the key"),
    AfterValidator(_printable),
]
Origin = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_origin)]
Url = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_url)]
Secret = Annotated[str, Field(max_length=4096), AfterValidator(_printable)]
PropertyName = Annotated[str, Field(max_length=200), AfterValidator(_printable)]
ConfigValue = Secret | Annotated[list[PropertyName], Field(max_length=200)]


def _config_problems(kind: str, config: dict[str, Any]) -> list[dict[str, str]]:
    """What is wrong with a source's config for its kind (unknown keys, a URL that is not one)."""
    problems = []
    allowed = CONFIG_KEYS[kind]
    for key, value in config.items():
        field = f"config.{key}"
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append({"field": field, "reason": f"not a setting of {kind} sources (known: {known})"})
        elif (key in LIST_CONFIG_KEYS) != isinstance(value, list):
            problems.append({"field": field, "reason": "must be a list of strings" if key in LIST_CONFIG_KEYS
                             else "must be a string"})
        elif key in URL_CONFIG_KEYS:
            try:
                config[key] = _url(value)
            except ValueError as exc:
                problems.append({"field": field, "reason": str(exc)})
    return problems


def _check_config(kind: str, config: dict[str, Any]) -> None:
    problems = _config_problems(kind, config)
    if problems:
        raise _error(422, "validation_failed", problems)


async def _vet_config_urls(request: Request, config: dict[str, Any] | None) -> None:
    """Refuse upstream base URLs the fetcher must not call (internal addresses; http in production): 422.

    Runs outside any transaction, since it resolves host names; the fetcher checks again at every connect.
    """
    policy = request.app.state.settings.platform_address_policy
    problems = []
    for key in sorted(URL_CONFIG_KEYS & set(config or {})):
        value = (config or {})[key]
        if isinstance(value, str):
            try:
                await vet_url(value, policy)
            except UnsafeUrl as exc:
                problems.append({"field": f"config.{key}", "reason": str(exc)})
    if problems:
        raise _error(422, "validation_failed", problems)


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SourceKind
    name: Name
    default_region: Region | None = Field(default=None, description="Region assumed for national phone numbers")
    field_mapping: dict[MappingKey, MappingTarget] = Field(default_factory=dict, max_length=200)
    config: dict[str, ConfigValue] = Field(
        default_factory=dict,
        max_length=20,
        description="Platform settings under the platform's own names (write-only: never echoed)",
    )
    allowed_origins: list[Origin] = Field(
        default_factory=list, max_length=50, description="Web pages that may use the publishable key"
    )
    thank_you_url: Url | None = Field(default=None, description="Where a browser form is sent after a post")


_NOT_NULL = ("name", "enabled", "field_mapping", "config", "allowed_origins")


def _document_not_null(schema: dict[str, Any]) -> None:
    # Left out means unchanged, but these may not be set to null: the document says so too.
    for name in _NOT_NULL:
        prop = schema["properties"][name]
        options = [option for option in prop.pop("anyOf", []) if option.get("type") != "null"]
        prop.update(options[0] if options else {})
        prop.pop("default", None)


class SourcePatch(BaseModel):
    """Only the fields sent change; `config` is merged key by key, and a null value removes that key."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_not_null)

    name: Name | None = None
    enabled: bool | None = None
    default_region: Region | None = None
    field_mapping: dict[MappingKey, MappingTarget] | None = Field(default=None, max_length=200)
    config: dict[str, ConfigValue | None] | None = Field(default=None, max_length=20)
    allowed_origins: list[Origin] | None = Field(default=None, max_length=50)
    thank_you_url: Url | None = None

    @field_validator(*_NOT_NULL)
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class SourceOut(BaseModel):
    id: str
    kind: SourceKind
    name: str
    enabled: bool
    default_region: str | None
    field_mapping: dict[str, str]
    config_keys: list[str] = Field(description="Which settings are set; their values are never echoed")
    api_key_prefix: str | None = Field(description="The start of the API key, to recognise it (web sources)")
    publishable_key: str | None = Field(description="For browser forms on the allowed origins (web sources)")
    allowed_origins: list[str]
    thank_you_url: str | None
    webhook_url: str | None = Field(description="Where the platform posts (platform sources)")
    created_at: str = _date_time()
    updated_at: str = _date_time()


class SourceWithKeyOut(SourceOut):
    api_key: str | None = Field(description="Shown only in this answer; only its hash is stored")


class SourceList(BaseModel):
    items: list[SourceOut]


def source_out(source: Source, request: Request) -> dict[str, Any]:
    """A source as the admin API shows it: secrets are write-only, only which ones are set is shown."""
    webhook_url = None
    if source.kind != "web":
        base = request.app.state.settings.public_base_url
        path = request.app.url_path_for("source_webhook", source_id=source.id)
        webhook_url = (
            f"{base.rstrip('/')}{path}" if base else str(request.url_for("source_webhook", source_id=source.id))
        )
    return {
        "id": source.id,
        "kind": source.kind,
        "name": source.name,
        "enabled": source.enabled,
        "default_region": source.default_region,
        "field_mapping": source.field_mapping or {},
        "config_keys": sorted((source.config or {}).keys()),
        "api_key_prefix": source.api_key_prefix,
        "publishable_key": source.publishable_key,
        "allowed_origins": source.allowed_origins or [],
        "thank_you_url": source.thank_you_url,
        "webhook_url": webhook_url,
        "created_at": handlers.as_utc(source.created_at).isoformat(),
        "updated_at": handlers.as_utc(source.updated_at).isoformat(),
    }


SourceId = Annotated[uuid.UUID, Path(description="The source's id")]


@router.post(
    "/v1/sources",
    status_code=201,
    summary="Create a lead source (a web source's API key is shown once, here)",
    response_model=SourceWithKeyOut,
    responses=_errors(400, 401, 413, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def create_source(body: SourceIn, request: Request, _admin: Admin) -> dict[str, Any]:
    """A new source; a web source's API key is in this answer only."""
    fields = body.model_dump()
    _check_config(body.kind, fields["config"])
    await _vet_config_urls(request, fields["config"])
    fields["config"] = handlers.sealed_config(request.app.state.secrets, fields["config"])
    async with request.app.state.runtime.db.transaction() as session:
        created = await handlers.create_source(session, fields, _now(request))
        out = source_out(created.source, request)
    log.info("source_created", source_id=created.source.id, kind=created.source.kind)
    return {**out, "api_key": created.api_key}


@router.get(
    "/v1/sources",
    summary="List lead sources",
    response_model=SourceList,
    responses=_errors(401, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def list_sources(request: Request, _admin: Admin) -> dict[str, Any]:
    """Every source, oldest first, without secrets."""
    async with request.app.state.runtime.db.read() as session:
        return {"items": [source_out(s, request) for s in await IngestRepository(session).sources()]}


@router.get(
    "/v1/sources/{source_id}",
    summary="One lead source",
    response_model=SourceOut,
    responses=_errors(401, 404, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def get_source(source_id: SourceId, request: Request, _admin: Admin) -> dict[str, Any]:
    """One source, without secrets."""
    async with request.app.state.runtime.db.read() as session:
        source = await IngestRepository(session).source(str(source_id))
        if source is None:
            raise _error(404, "not_found", "no source with this id")
        return source_out(source, request)


@router.patch(
    "/v1/sources/{source_id}",
    summary="Change or disable a lead source",
    response_model=SourceOut,
    responses=_errors(400, 401, 404, 413, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def patch_source(source_id: SourceId, body: SourcePatch, request: Request, _admin: Admin) -> dict[str, Any]:
    """Change the fields sent; config is merged and checked against the source's kind."""
    changes = body.model_dump(exclude_unset=True)
    await _vet_config_urls(request, changes.get("config"))
    async with request.app.state.runtime.db.transaction() as session:
        source = await IngestRepository(session).source(str(source_id))
        if source is None:
            raise _error(404, "not_found", "no source with this id")
        if "config" in changes:
            sealed = handlers.sealed_config(request.app.state.secrets, changes["config"])
            changes["config"] = handlers.merged_config(source.config, sealed)
            _check_config(source.kind, changes["config"])
        handlers.update_source(source, changes, _now(request))
        await session.flush()
        out = source_out(source, request)
    log.info("source_changed", source_id=out["id"], fields=sorted(changes))
    return out


@router.post(
    "/v1/sources/{source_id}/rotate-key",
    summary="Issue a new API key for a web source; the old one stops working at once",
    response_model=SourceWithKeyOut,
    responses=_errors(401, 404, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def rotate_key(source_id: SourceId, request: Request, _admin: Admin) -> dict[str, Any]:
    """A new API key, shown once; the old key is refused from now on."""
    async with request.app.state.runtime.db.transaction() as session:
        source = await IngestRepository(session).source(str(source_id))
        if source is None or source.kind != "web":
            raise _error(404, "not_found", "no web source with this id")
        key = await handlers.rotate_source_key(session, source, _now(request))
        out = source_out(source, request)
    log.info("source_key_rotated", source_id=out["id"])
    return {**out, "api_key": key}


@router.post(
    "/v1/admin/rotate-secrets",
    summary="Re-encrypt every stored source secret under the newest HANDOFF_SECRET_KEY (after adding a key first)",
    responses=_errors(401, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def rotate_secrets(request: Request, _admin: Admin) -> dict[str, int]:
    """Secrets under an older key, or stored in clear by an older version, are encrypted under the first key."""
    try:
        async with request.app.state.runtime.db.transaction() as session:
            count = await handlers.reencrypt_source_secrets(session, request.app.state.secrets)
    except SecretKeyError as exc:
        # A key that encrypted some secret was dropped too early: nothing changed; put it back (second) and retry.
        raise _error(409, "secret_key_missing", str(exc)) from exc
    log.info("source_secrets_reencrypted", count=count)
    return {"reencrypted": count}
