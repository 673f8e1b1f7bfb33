"""Ingest's HTTP API: thin routes that parse, authenticate, own the transaction and call handlers."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import orjson
import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from common.web import Admin, bearer_token, tokens_equal
from ingest import handlers
from ingest.domain import LeadValidationError, hash_api_key
from ingest.store import IngestRepository, Source

log = structlog.get_logger(__name__)
router = APIRouter()

SOURCE_KINDS = ("web", "meta", "google_ads", "linkedin", "typeform", "webflow", "hubspot")
HONEYPOT_FIELDS = ("_gotcha", "_honeypot", "hp_website")


def _now() -> datetime:
    return datetime.now(UTC)


def _error(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail={"error": code, "detail": detail}, headers=headers)


def _validation_response(exc: LeadValidationError) -> JSONResponse:
    return JSONResponse(
        {"error": "validation_failed", "detail": [{"field": e.field, "reason": e.reason} for e in exc.errors]},
        status_code=422,
    )


class LeadIn(BaseModel):
    """The documented shape of a web lead; any other key is kept as a bounded custom field."""

    model_config = ConfigDict(extra="allow")

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
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
    duplicate_of: str | None
    is_test: bool
    correlation_id: str | None


class _RateLimiter:
    """A per-(source, address) token bucket for browser posts on publishable keys (per process)."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))

    def allow(self, key: tuple[str, str], per_minute: int) -> float:
        """0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - last) * per_minute / 60.0)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) * 60.0 / per_minute


_limiter = _RateLimiter()


async def _parse_body(request: Request) -> tuple[bytes, str, dict[str, Any]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type in ("application/json", "") and body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _error(400, "malformed_json", f"the body is not valid JSON: {exc.msg}") from exc
        if not isinstance(parsed, dict):
            raise _error(422, "validation_failed", [{"field": "body", "reason": "must be a JSON object"}])
        return body, "application/json", parsed
    if content_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise _error(400, "bad_request", "the form body is not UTF-8") from exc
        return body, content_type, dict(pairs)
    if not body:
        raise _error(400, "bad_request", "the request has no body")
    raise _error(415, "unsupported_media_type", "send application/json or application/x-www-form-urlencoded")


async def _authenticate(request: Request, fields: dict[str, Any]) -> tuple[Source | None, str, bool]:
    """(source, principal, browser). Admin token, a source's secret key, or a publishable key from an allowed origin."""
    runtime = request.app.state.runtime
    settings = request.app.state.settings
    token = bearer_token(request)
    if token and tokens_equal(token, settings.admin_token.get_secret_value()):
        return None, "admin", False
    async with runtime.db.read() as session:
        repo = IngestRepository(session)
        if token:
            # The lookup is by hash of the presented key, so no secret is compared byte by byte.
            source = await repo.source_by_key_hash(hash_api_key(token))
            if source is not None and source.enabled:
                return source, f"source:{source.id}", False
            raise _error(401, "unauthorized", "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
        publishable = request.headers.get("x-handoff-key") or fields.pop("_key", None)
        if publishable:
            source = await repo.source_by_publishable_key(str(publishable))
            if source is not None and source.enabled:
                origin = request.headers.get("origin")
                # A publishable key is public by design: only the source's own web pages may use it.
                if origin is None or origin not in (source.allowed_origins or []):
                    raise _error(403, "forbidden", "this origin is not allowed for the publishable key")
                return source, f"source:{source.id}", True
    raise _error(401, "unauthorized", "a source API key or publishable key is required", {"WWW-Authenticate": "Bearer"})


@router.post(
    "/v1/leads",
    status_code=202,
    response_model=None,
    summary="Submit a lead from a web form or a back end",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": LeadIn.model_json_schema()},
                "application/x-www-form-urlencoded": {"schema": LeadIn.model_json_schema()},
            },
        }
    },
    responses={
        202: {"model": AcceptedOut, "description": "Stored durably; events follow"},
        200: {"model": AcceptedOut, "description": "Already received (platform redelivery)"},
        303: {"description": "Browser form: redirect to the source's thank-you page"},
        400: {"description": "Malformed body"},
        401: {"description": "No valid key"},
        409: {"description": "Idempotency-Key reused with another body"},
        413: {"description": "Body over the limit"},
        415: {"description": "Unsupported content type"},
        422: {"description": "Invalid fields, each named"},
        429: {"description": "Too many requests"},
        503: {"description": "The store could not commit; retry"},
    },
)
async def post_lead(request: Request) -> Response:
    settings = request.app.state.settings
    runtime = request.app.state.runtime
    raw_body, content_type, fields = await _parse_body(request)
    source, principal, browser = await _authenticate(request, fields)
    is_form = content_type == "application/x-www-form-urlencoded"

    if browser:
        client = request.client.host if request.client else "unknown"
        wait = _limiter.allow((principal, client), settings.public_rate_limit_per_minute)
        if wait > 0:
            raise _error(429, "too_many_requests", "slow down", {"Retry-After": str(max(1, round(wait)))})
        if any(fields.get(name) for name in HONEYPOT_FIELDS):
            # A bot filled the hidden field: answer as if accepted, store nothing.
            log.info("lead_honeypot_triggered", source_id=source.id if source else None)
            return _thank_you(source) if is_form else JSONResponse({"status": "accepted"}, status_code=202)
    for name in HONEYPOT_FIELDS:
        fields.pop(name, None)

    correlation_id = request.scope.get("state", {}).get("correlation_id")
    idem_key = request.headers.get("idempotency-key")
    if idem_key is not None and not (0 < len(idem_key) <= 255):
        raise _error(422, "validation_failed", [{"field": "Idempotency-Key", "reason": "must be 1 to 255 characters"}])
    scope_key = handlers.idempotency_scope(principal, idem_key) if idem_key else None
    fingerprint = handlers.request_fingerprint(raw_body, content_type)
    now = _now()

    for attempt in range(3):
        try:
            async with runtime.db.transaction() as session:
                if scope_key:
                    replay = await handlers.replay_idempotent(session, settings, scope_key, fingerprint, now)
                    if replay is not None:
                        status, body = replay
                        return JSONResponse(body, status_code=status, headers={"Idempotent-Replayed": "true"})
                accepted = await handlers.accept_lead(
                    session, settings, raw=fields, source=source, now=now, correlation_id=correlation_id
                )
                status = 202 if accepted.status == "accepted" else 200
                body = accepted.body(correlation_id)
                if scope_key:
                    handlers.remember_idempotent(session, scope_key, fingerprint, status, body, now)
            break
        except handlers.IdempotencyConflict as exc:
            raise _error(
                409, "idempotency_key_reused", "this Idempotency-Key was used with a different request body"
            ) from exc
        except LeadValidationError as exc:
            return _validation_response(exc)
        except IntegrityError:
            # A concurrent request with the same key committed first: the next attempt replays its response.
            if attempt == 2:
                raise _error(503, "unavailable", "could not store the lead; retry", {"Retry-After": "1"}) from None
        except (OperationalError, SQLAlchemyError, OSError) as exc:
            log.error("lead_store_failed", error=type(exc).__name__)
            raise _error(503, "unavailable", "could not store the lead; retry", {"Retry-After": "1"}) from exc
    log.info("lead_accepted", lead_id=accepted.lead_id, status=accepted.status, source_kind=source.kind if source else "api")
    response = _thank_you(source) if is_form and browser else JSONResponse(body, status_code=status)
    if browser:
        response.headers["Access-Control-Allow-Origin"] = request.headers["origin"]
        response.headers["Vary"] = "Origin"
    return response


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


def _thank_you(source: Source | None) -> Response:
    if source is not None and source.thank_you_url:
        return RedirectResponse(source.thank_you_url, status_code=303)
    return JSONResponse({"status": "accepted"}, status_code=202)


@router.get("/v1/leads/{lead_id}", summary="A stored lead, normalized")
async def get_lead(lead_id: str, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        repo = IngestRepository(session)
        lead = await repo.lead(lead_id)
        if lead is None:
            raise _error(404, "not_found", "no lead with this id")
        source = await repo.source(lead.source_id) if lead.source_id else None
        return handlers.lead_view(lead, source)


@router.get("/v1/leads", summary="Leads, newest first, paginated")
async def list_leads(
    request: Request,
    _admin: Admin,
    source_id: str | None = None,
    since: datetime | None = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    before = None
    if cursor:
        at, _, lead_id = cursor.partition("|")
        try:
            before = (datetime.fromisoformat(at), lead_id)
        except ValueError as exc:
            raise _error(422, "validation_failed", [{"field": "cursor", "reason": "not a cursor from this API"}]) from exc
    async with request.app.state.runtime.db.read() as session:
        repo = IngestRepository(session)
        leads = await repo.leads(source_id=source_id, since=since, before=before, limit=limit + 1)
        items = [handlers.lead_view(lead, None) for lead in leads[:limit]]
    next_cursor = None
    if len(leads) > limit:
        last = leads[limit - 1]
        next_cursor = f"{handlers.lead_view(last, None)['received_at']}|{last.id}"
    return {"items": items, "next_cursor": next_cursor}


@router.delete("/v1/leads/{lead_id}", status_code=202, summary="Erase a lead's personal data everywhere")
async def delete_lead(lead_id: str, request: Request, _admin: Admin) -> dict[str, Any]:
    runtime = request.app.state.runtime
    async with runtime.db.transaction() as session:
        lead = await IngestRepository(session).lead(lead_id)
        if lead is None:
            raise _error(404, "not_found", "no lead with this id")
        await handlers.erase_lead(
            session, request.app.state.settings, lead, _now(), request.scope.get("state", {}).get("correlation_id")
        )
    return {"lead_id": lead_id, "status": "erased"}


# -- sources ----------------------------------------------------------------------------------------------------


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["web", "meta", "google_ads", "linkedin", "typeform", "webflow", "hubspot"]
    name: str = Field(min_length=1, max_length=200)
    default_region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    field_mapping: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    allowed_origins: list[str] = Field(default_factory=list)
    thank_you_url: str | None = Field(default=None, max_length=2000)


class SourcePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
    default_region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    field_mapping: dict[str, str] | None = None
    config: dict[str, Any] | None = None
    allowed_origins: list[str] | None = None
    thank_you_url: str | None = Field(default=None, max_length=2000)


def source_out(source: Source, request: Request) -> dict[str, Any]:
    return {
        "id": source.id,
        "kind": source.kind,
        "name": source.name,
        "enabled": source.enabled,
        "default_region": source.default_region,
        "field_mapping": source.field_mapping,
        # Secrets are write-only: say which are set, never echo them.
        "config_keys": sorted((source.config or {}).keys()),
        "api_key_prefix": source.api_key_prefix,
        "publishable_key": source.publishable_key,
        "allowed_origins": source.allowed_origins,
        "thank_you_url": source.thank_you_url,
        "webhook_url": str(request.url_for("source_webhook", source_id=source.id)) if source.kind != "web" else None,
        "created_at": source.created_at.isoformat(),
    }


@router.post("/v1/sources", status_code=201, summary="Create a lead source")
async def create_source(body: SourceIn, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.transaction() as session:
        created = await handlers.create_source(session, body.model_dump(), _now())
        out = source_out(created.source, request)
    if created.api_key:
        out["api_key"] = created.api_key  # shown once; only its hash is stored
    return out


@router.get("/v1/sources", summary="List lead sources")
async def list_sources(request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        return {"items": [source_out(s, request) for s in await IngestRepository(session).sources()]}


@router.get("/v1/sources/{source_id}", summary="One lead source")
async def get_source(source_id: str, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        source = await IngestRepository(session).source(source_id)
        if source is None:
            raise _error(404, "not_found", "no source with this id")
        return source_out(source, request)


@router.patch("/v1/sources/{source_id}", summary="Change or disable a lead source")
async def patch_source(source_id: str, body: SourcePatch, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.transaction() as session:
        source = await IngestRepository(session).source(source_id)
        if source is None:
            raise _error(404, "not_found", "no source with this id")
        handlers.update_source(source, body.model_dump(exclude_unset=True), _now())
        await session.flush()
        return source_out(source, request)


@router.post("/v1/sources/{source_id}/rotate-key", summary="Issue a new API key; the old one stops working")
async def rotate_key(source_id: str, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.transaction() as session:
        source = await IngestRepository(session).source(source_id)
        if source is None or source.kind != "web":
            raise _error(404, "not_found", "no web source with this id")
        key = await handlers.rotate_source_key(session, source, _now())
        out = source_out(source, request)
    out["api_key"] = key
    return out
