"""Platform webhooks: each platform's handshake and signed notifications, as its module in the registry says.

`POST /v1/sources/{id}/webhook` verifies the request on its raw bytes before anything is parsed or stored.
Leads that arrive whole (Google Ads, Typeform, Webflow, HubSpot workflow contacts) are stored in the answer's
transaction. Notifications that carry only an id (Meta, LinkedIn, HubSpot events) become fetch rows in that same
transaction, which `ingest.fetcher` works through.

A disabled source answers 404 exactly like an unknown one: it takes no leads, and a leaked webhook URL does
not tell whether the source exists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from common.runtime import Runtime
from common.web import HandoffRoute, problem, read_body_limited, refuse_deep_json
from ingest.api.shared import correlation_id
from ingest.domain import LeadValidationError, NormalizedLead, PlatformLead, SignatureError, normalize_lead
from ingest.domain.sources.platform import Delivery, HandshakeMalformed, Normalize, Platform, SignedRequest
from ingest.domain.sources.registry import PLATFORMS, WEBHOOK_KINDS, WEBHOOK_MAX_BODY_BYTES, platform
from ingest.handlers import platform as platform_cases
from ingest.handlers.sources import Source, source_secret
from ingest.settings import IngestSettings

log = structlog.get_logger(__name__)
router = APIRouter(tags=["platform webhooks"], route_class=HandoffRoute)

# Body limits per platform, from the registry (each sized from what the platform documents it sends).
PLATFORM_BODY_LIMITS: dict[str, int] = {kind: p.body_limit for kind, p in PLATFORMS.items() if p.body_limit is not None}
WEBHOOK_PATH_PATTERN = r"/v1/sources/[^/]+/webhook"
__all__ = ["PLATFORM_BODY_LIMITS", "WEBHOOK_MAX_BODY_BYTES", "WEBHOOK_PATH_PATTERN", "router"]


def _now() -> datetime:
    return datetime.now(UTC)


async def _webhook_source(request: Request, source_id: str) -> Source:
    # A read session of its own: the POST stores in a transaction opened only after the body is verified, and
    # retried on a concurrent redelivery, so no request-long transaction is held while the body streams in.
    async with request.app.state.runtime.db.read() as session:
        source = await platform_cases.webhook_source(session, source_id, WEBHOOK_KINDS)
    if source is None:
        raise problem(404, "not_found", "no webhook for this source")
    return source


@router.get(
    "/v1/sources/{source_id}/webhook",
    name="source_webhook_handshake",
    summary="Platform endpoint verification (Meta hub.challenge, LinkedIn challengeCode)",
    response_model=None,
    responses={
        200: {"description": "Meta: the challenge as text/plain; LinkedIn: {challengeCode, challengeResponse}"},
        400: {"description": "LinkedIn: no challengeCode, or one that is not a UUID (nothing is signed)"},
        403: {"description": "Wrong verify token, or no secret configured"},
        404: {"description": "Unknown or disabled source"},
        405: {"description": "This platform has no verification handshake"},
    },
)
async def source_webhook_handshake(source_id: str, request: Request) -> Response:
    source = await _webhook_source(request, source_id)
    handshake = platform(source.kind).handshake
    if handshake is None:
        raise problem(405, "method_not_allowed", f"{source.kind} webhooks have no GET handshake", {"Allow": "POST"})
    try:
        answer = handshake(lambda key: source_secret(source, key, request.app.state.secrets), request.query_params)
    except HandshakeMalformed as exc:
        raise problem(400, "bad_request", exc.detail) from None
    except SignatureError as exc:
        log.warning("webhook_handshake_refused", source_id=source.id, kind=source.kind, reason=str(exc))
        raise problem(403, "forbidden", str(exc)) from None
    return PlainTextResponse(answer) if isinstance(answer, str) else JSONResponse(answer)


class _SignatureRejected(Exception):
    def __init__(self, header: str, exc: SignatureError) -> None:
        self.header = header
        super().__init__(str(exc))


def _signed_uri(request: Request, public_base_url: str) -> str:
    """The URL as the platform called it: the public origin when configured, the path and query as sent."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    # Servers differ on whether raw_path includes the query string; the query comes from query_string.
    path = raw_path.split(b"?", 1)[0].decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    origin = public_base_url.rstrip("/") or f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    return origin + path + (f"?{query}" if query else "")


def _normalizer(source: Source, now: datetime) -> Normalize:
    """The source's normalization of a platform lead, lenient: nobody can correct one and send it again."""

    def normalize(lead: PlatformLead, require_contact: bool) -> NormalizedLead:
        return normalize_lead(
            lead.raw,
            default_region=source.default_region,
            field_mapping=source.field_mapping,
            now=now,
            strict=False,
            require_contact=require_contact,
        )

    return normalize


def _verified_delivery(source: Source, spec: Platform, signed: SignedRequest) -> Delivery:
    """Check the signature on the raw bytes, then parse (SignatureError -> 401, LeadValidationError -> 422)."""
    try:
        if spec.verify is not None:
            spec.verify(signed)
        refuse_deep_json(signed.body)
        try:
            payload = orjson.loads(signed.body)
        except orjson.JSONDecodeError as exc:
            raise problem(400, "malformed_json", f"the body is not valid JSON: {exc.msg}") from None
        if spec.verify_payload is not None:
            spec.verify_payload(signed, payload)
    except SignatureError as exc:
        raise _SignatureRejected(spec.rejected_header(exc), exc) from None
    assert spec.parse is not None  # every platform with a webhook parses its payload
    return spec.parse(payload, _normalizer(source, signed.now))


@router.post(
    "/v1/sources/{source_id}/webhook",
    name="source_webhook",
    summary="Receive a platform's lead notification (signed as that platform specifies)",
    response_model=None,
    responses={
        200: {"description": "Stored, queued for fetching, or already received (redelivery)"},
        400: {"description": "The body is not JSON, or nests deeper than 32 levels"},
        401: {"description": "Bad, missing or stale signature; names the header; nothing is stored"},
        404: {"description": "Unknown or disabled source, or a web source (no webhook)"},
        422: {"description": "The payload is not a lead this platform sends"},
        503: {"description": "The store could not commit; the platform retries"},
    },
)
async def source_webhook(source_id: str, request: Request) -> Response:
    settings: IngestSettings = request.app.state.settings
    source = await _webhook_source(request, source_id)
    spec = platform(source.kind)
    body = await read_body_limited(request, PLATFORM_BODY_LIMITS[source.kind])  # 413 past it, mid-stream
    now = _now()
    cid = correlation_id(request)
    signed = SignedRequest(
        body=body,
        headers=request.headers,
        method=request.method,
        uri=_signed_uri(request, settings.public_base_url),
        now=now,
        secret=lambda key: source_secret(source, key, request.app.state.secrets),
    )
    try:
        delivery = _verified_delivery(source, spec, signed)
    except _SignatureRejected as exc:
        log.warning("webhook_signature_rejected", source_id=source.id, kind=source.kind, reason=str(exc))
        return JSONResponse({"error": "invalid_signature", "detail": str(exc), "header": exc.header}, status_code=401)
    except LeadValidationError as exc:
        log.warning(
            "webhook_payload_rejected",
            source_id=source.id,
            kind=source.kind,
            fields=[e.field for e in exc.errors],
        )
        return JSONResponse(
            {
                "error": "validation_failed",
                "detail": [{"field": e.field, "reason": e.reason} for e in exc.errors],
            },
            status_code=422,
        )
    result = await _store(request.app.state.runtime, settings, source, delivery, now, cid)
    if result["queued"]:
        fetcher = getattr(request.app.state, "fetcher", None)
        if fetcher is not None:
            fetcher.notify()
    log.info(
        "webhook_received",
        source_id=source.id,
        kind=source.kind,
        stored=len(result["leads"]),
        queued=result["queued"],
        erased=result["erased"],
    )
    return JSONResponse({"status": "ok", **result}, status_code=200)


async def _store(
    runtime: Runtime, settings: IngestSettings, source: Source, delivery: Delivery, now: datetime, cid: str | None
) -> dict[str, Any]:
    """Store the delivery in its own transaction, tried up to three times (no Transaction dependency: a
    concurrent redelivery of the same lead can win the unique index, and the next attempt then sees a duplicate)."""
    unavailable = problem(503, "unavailable", "could not store the notification; retry", {"Retry-After": "1"})
    for attempt in range(3):
        try:
            async with runtime.db.transaction() as session:
                return await platform_cases.apply_delivery(session, settings, source.id, delivery, now, cid)
        except platform_cases.SourceGone:
            raise problem(404, "not_found", "no webhook for this source") from None
        except IntegrityError:
            if attempt == 2:
                raise unavailable from None
        except (SQLAlchemyError, OSError) as exc:
            log.error("webhook_store_failed", source_id=source.id, error=type(exc).__name__)
            raise unavailable from None
    raise unavailable
