"""Platform webhooks: each platform's handshake and signed notifications, and the background lead fetcher.

`POST /v1/sources/{id}/webhook` verifies the request on its raw bytes before anything is parsed or stored.
Leads that arrive whole (Google Ads, Typeform, Webflow, HubSpot workflow contacts) are stored in the answer's
transaction. Notifications that carry only an id (Meta, LinkedIn, HubSpot events) become `PlatformFetch` rows
in that same transaction; `PlatformFetcher` then fetches each lead and stores it, retrying with backoff until
it succeeds, so a 200 to the platform never loses a lead.

A disabled source answers 404 exactly like an unknown one: it takes no leads, and a leaked webhook URL does
not tell whether the source exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox, SecretKeyError
from common.egress import guarded_transport
from common.runtime import Runtime
from common.web import HandoffRoute, read_body_limited, refuse_deep_json
from ingest import handlers
from ingest.clients import (
    HUBSPOT_CONTACT_PROPERTIES,
    FormCache,
    HubSpotClient,
    LinkedInClient,
    MetaGraphClient,
    PlatformAPIError,
)
from ingest.domain import (
    FieldError,
    LeadValidationError,
    NormalizedLead,
    PlatformLead,
    SignatureError,
    linkedin_challenge,
    linkedin_is_test,
    linkedin_lead_to_raw,
    meta_lead_to_raw,
    meta_verify_challenge,
    normalize_lead,
    parse_google_ads,
    parse_hubspot,
    parse_linkedin_notification,
    parse_meta_notification,
    parse_typeform,
    parse_webflow,
    verify_google_key,
    verify_hubspot_v3,
    verify_linkedin_signature,
    verify_meta_signature,
    verify_typeform_signature,
    verify_webflow_signature,
)
from ingest.domain.sources import hubspot as hubspot_source
from ingest.domain.sources import linkedin as linkedin_source
from ingest.domain.sources import meta as meta_source
from ingest.domain.sources import typeform as typeform_source
from ingest.domain.sources import webflow as webflow_source
from ingest.settings import IngestSettings
from ingest.store import IngestRepository, Source

log = structlog.get_logger(__name__)
router = APIRouter(tags=["platform webhooks"], route_class=HandoffRoute)

WEBHOOK_KINDS = frozenset({"meta", "google_ads", "linkedin", "typeform", "webflow", "hubspot"})
# Body limits per platform. None publishes a byte maximum; each is sized from what the platform documents it
# sends, with a wide margin: Meta batches up to 1,000 changes in one notification, HubSpot up to 100 events,
# and a Typeform response carries every answer (long texts included) and the form's definition. Google Ads and
# Webflow send one submission; LinkedIn only URNs, so the web lead limit is plenty.
PLATFORM_BODY_LIMITS: dict[str, int] = {
    "meta": 1024 * 1024,
    "typeform": 1024 * 1024,
    "hubspot": 1024 * 1024,
    "google_ads": 256 * 1024,
    "webflow": 256 * 1024,
    "linkedin": 64 * 1024,
}
# The streaming body limit lets webhook requests run up to the largest; the route then holds each to its kind's.
WEBHOOK_PATH_PATTERN = r"/v1/sources/[^/]+/webhook"
WEBHOOK_MAX_BODY_BYTES = max(PLATFORM_BODY_LIMITS.values())


def _now() -> datetime:
    return datetime.now(UTC)


def _error(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail={"error": code, "detail": detail}, headers=headers)


def _config_str(source: Source, key: str) -> str:
    """A config value as text; anything else counts as unset (an empty secret then fails verification)."""
    value = (source.config or {}).get(key)
    return value if isinstance(value, str) else ""


def _secret(source: Source, key: str, box: SecretBox) -> str:
    """A secret config value decrypted; unset or unreadable counts as empty, so verification fails (no 500)."""
    try:
        return box.reveal(_config_str(source, key))
    except SecretKeyError:
        log.error("source_secret_unreadable", source_id=source.id, key=key)
        return ""


async def _webhook_source(request: Request, source_id: str) -> Source:
    async with request.app.state.runtime.db.read() as session:
        source = await IngestRepository(session).source(source_id)
    if source is None or not source.enabled or source.kind not in WEBHOOK_KINDS:
        raise _error(404, "not_found", "no webhook for this source")
    return source


# -- handshakes --------------------------------------------------------------------------------------------


@router.get(
    "/v1/sources/{source_id}/webhook",
    name="source_webhook_handshake",
    summary="Platform endpoint verification (Meta hub.challenge, LinkedIn challengeCode)",
    response_model=None,
    responses={
        200: {
            "description": "Meta: the challenge as text/plain; LinkedIn: {challengeCode, challengeResponse}"
        },
        400: {"description": "LinkedIn: no challengeCode, or one that is not a UUID (nothing is signed)"},
        403: {"description": "Wrong verify token, or no secret configured"},
        404: {"description": "Unknown or disabled source"},
        405: {"description": "This platform has no verification handshake"},
    },
)
async def source_webhook_handshake(source_id: str, request: Request) -> Response:
    source = await _webhook_source(request, source_id)
    if source.kind == "meta":
        try:
            verify_token = _secret(source, "verify_token", request.app.state.secrets)
            challenge = meta_verify_challenge(verify_token, dict(request.query_params))
        except SignatureError as exc:
            log.warning("webhook_handshake_refused", source_id=source.id, kind=source.kind, reason=str(exc))
            raise _error(403, "forbidden", str(exc)) from None
        return PlainTextResponse(challenge)
    if source.kind == "linkedin":
        code = request.query_params.get("challengeCode")
        if not code:
            raise _error(400, "bad_request", "challengeCode is required")
        try:
            answer = linkedin_challenge(_secret(source, "client_secret", request.app.state.secrets), code)
        except LeadValidationError as exc:
            raise _error(
                400, "bad_request", [{"field": e.field, "reason": e.reason} for e in exc.errors]
            ) from None
        except SignatureError as exc:
            log.warning("webhook_handshake_refused", source_id=source.id, kind=source.kind, reason=str(exc))
            raise _error(403, "forbidden", str(exc)) from None
        return JSONResponse(answer)
    raise _error(
        405, "method_not_allowed", f"{source.kind} webhooks have no GET handshake", {"Allow": "POST"}
    )


# -- notifications -----------------------------------------------------------------------------------------


@dataclass
class _Delivery:
    """What one verified request asks for: leads to store now, leads to fetch, leads to erase."""

    leads: list[tuple[PlatformLead, NormalizedLead]] = field(default_factory=list)
    fetches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    erasures: list[str] = field(default_factory=list)


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
    origin = (
        public_base_url.rstrip("/")
        or f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    )
    return origin + path + (f"?{query}" if query else "")


def _verify(source: Source, request: Request, body: bytes, settings: IngestSettings, now: datetime) -> None:
    """Check the platform's signature on the raw bytes; raises _SignatureRejected naming the header."""
    headers = request.headers
    kind = source.kind
    try:
        if kind == "meta":
            header = meta_source.SIGNATURE_HEADER
            verify_meta_signature(_secret(source, "app_secret", request.app.state.secrets), body, headers.get(header))
        elif kind == "linkedin":
            header = linkedin_source.SIGNATURE_HEADER
            client_secret = _secret(source, "client_secret", request.app.state.secrets)
            verify_linkedin_signature(client_secret, body, headers.get(header))
        elif kind == "typeform":
            header = typeform_source.SIGNATURE_HEADER
            verify_typeform_signature(_secret(source, "secret", request.app.state.secrets), body, headers.get(header))
        elif kind == "webflow":
            header = webflow_source.SIGNATURE_HEADER
            verify_webflow_signature(
                _secret(source, "secret", request.app.state.secrets),
                body,
                headers.get(webflow_source.TIMESTAMP_HEADER),
                headers.get(header),
                now=now,
            )
        elif kind == "hubspot":
            header = hubspot_source.SIGNATURE_HEADER
            verify_hubspot_v3(
                _secret(source, "client_secret", request.app.state.secrets),
                request.method,
                _signed_uri(request, settings.public_base_url),
                body,
                headers.get(hubspot_source.TIMESTAMP_HEADER),
                headers.get(header),
                now=now,
            )
        # google_ads carries its key in the body: checked in _delivery once the JSON is parsed.
    except SignatureError as exc:
        timestamp = {"webflow": webflow_source.TIMESTAMP_HEADER, "hubspot": hubspot_source.TIMESTAMP_HEADER}
        if kind in timestamp and timestamp[kind].lower() in str(exc).lower():
            header = timestamp[kind]
        raise _SignatureRejected(header, exc) from None


def _normalized(source: Source, lead: PlatformLead, now: datetime, *, require_contact: bool = False) -> NormalizedLead:
    # Lenient: nobody can correct a platform lead and send it again. Its id on the platform is a way to reach the
    # person, so a lead without a usable email or phone is kept too (flagged no_contact).
    return normalize_lead(
        lead.raw,
        default_region=source.default_region,
        field_mapping=source.field_mapping,
        now=now,
        strict=False,
        require_contact=require_contact,
    )


def _delivery(source: Source, payload: Any, now: datetime) -> _Delivery:
    """Parse a verified payload into what must be stored, fetched or erased (LeadValidationError -> 422)."""
    out = _Delivery()
    kind = source.kind
    if kind != "hubspot" and not isinstance(payload, dict):
        raise LeadValidationError([FieldError("body", "must be a JSON object")])
    if kind == "meta":
        for ref in parse_meta_notification(payload):
            out.fetches.append(
                (
                    ref.leadgen_id,
                    {
                        "platform": "meta",
                        "leadgen_id": ref.leadgen_id,
                        "form_id": ref.form_id,
                        "page_id": ref.page_id,
                        "ad_id": ref.ad_id,
                        "created_time": ref.created_time.isoformat() if ref.created_time else None,
                    },
                )
            )
    elif kind == "linkedin":
        note = parse_linkedin_notification(payload)
        if note.action == "DELETED":
            out.erasures.append(note.urn)
        else:
            out.fetches.append(
                (
                    note.urn,
                    {
                        "platform": "linkedin",
                        "urn": note.urn,
                        "form_urn": note.form_urn,
                        "occurred_at": note.occurred_at.isoformat() if note.occurred_at else None,
                    },
                )
            )
    elif kind in ("google_ads", "typeform", "webflow"):
        parse = {"google_ads": parse_google_ads, "typeform": parse_typeform, "webflow": parse_webflow}[kind]
        lead = parse(payload)
        out.leads.append((lead, _normalized(source, lead, now)))
    elif kind == "hubspot":
        for lead in parse_hubspot(payload):
            if lead.erased:
                out.erasures.append(lead.external_id)
                continue
            if isinstance(payload, dict):
                # A workflow sends the contact itself: store it now when it already names a person.
                try:
                    out.leads.append((lead, _normalized(source, lead, now, require_contact=True)))
                    continue
                except LeadValidationError:
                    pass
            # Events carry ids and one changed property each: fetch the whole contact.
            out.fetches.append((lead.external_id, {"platform": "hubspot", "contact_id": lead.external_id}))
    return out


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
    runtime: Runtime = request.app.state.runtime
    source = await _webhook_source(request, source_id)
    body = await read_body_limited(request, PLATFORM_BODY_LIMITS[source.kind])  # 413 past it, mid-stream
    now = _now()
    correlation_id = request.scope.get("state", {}).get("correlation_id")
    try:
        _verify(source, request, body, settings, now)
        refuse_deep_json(body)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _error(400, "malformed_json", f"the body is not valid JSON: {exc.msg}") from None
        if source.kind == "google_ads":
            try:
                verify_google_key(_secret(source, "google_key", request.app.state.secrets), payload)
            except SignatureError as exc:
                raise _SignatureRejected("google_key", exc) from None
        delivery = _delivery(source, payload, now)
    except _SignatureRejected as exc:
        log.warning("webhook_signature_rejected", source_id=source.id, kind=source.kind, reason=str(exc))
        return JSONResponse(
            {"error": "invalid_signature", "detail": str(exc), "header": exc.header}, status_code=401
        )
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

    for attempt in range(3):
        try:
            async with runtime.db.transaction() as session:
                result = await _apply(session, settings, source.id, delivery, now, correlation_id)
            break
        except IntegrityError:
            # A concurrent redelivery of the same lead committed first; the next attempt sees a duplicate.
            if attempt == 2:
                raise _error(
                    503, "unavailable", "could not store the notification; retry", {"Retry-After": "1"}
                ) from None
        except (SQLAlchemyError, OSError) as exc:
            log.error("webhook_store_failed", source_id=source.id, error=type(exc).__name__)
            raise _error(
                503, "unavailable", "could not store the notification; retry", {"Retry-After": "1"}
            ) from None
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


async def _apply(
    session: AsyncSession,
    settings: IngestSettings,
    source_id: str,
    delivery: _Delivery,
    now: datetime,
    correlation_id: str | None,
) -> dict[str, Any]:
    source = await IngestRepository(session).source(source_id)
    if source is None or not source.enabled:
        raise _error(404, "not_found", "no webhook for this source")
    leads = []
    for lead, normalized in delivery.leads:
        accepted = await handlers.accept_lead(
            session,
            settings,
            raw=lead.raw,
            source=source,
            now=now,
            correlation_id=correlation_id,
            external_id=lead.external_id,
            is_test=lead.is_test,
            normalized=normalized,
        )
        leads.append(accepted.body(correlation_id))
    queued = 0
    for external_id, notification in delivery.fetches:
        note = {**notification, "correlation_id": correlation_id}
        queued += await handlers.queue_platform_fetch(session, source, external_id, note, now)
    erased = 0
    for external_id in delivery.erasures:
        erased += await handlers.erase_platform_lead(
            session, settings, source, external_id, now, correlation_id
        )
    return {"leads": leads, "queued": queued, "erased": erased}


# -- the fetcher -------------------------------------------------------------------------------------------


def retry_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, with jitter in [50%, 100%]."""
    exponential = base_s * 2.0 ** min(max(attempt - 1, 0), 60)
    # Jitter spreads retries of a batch that failed together (one Graph API outage) over time.
    return min(cap_s, exponential) * rng.uniform(0.5, 1.0)


class PlatformFetcher:
    """Fetches leads that platforms announced by id until each is stored; owns its transactions and client.

    A failed fetch is never dropped: it is retried with capped exponential backoff; past
    `platform_fetch_attempts` failures each further one is logged as an error, for alerting.
    """

    def __init__(
        self, settings: IngestSettings, runtime: Runtime, *, rng: random.Random | None = None
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self._rng = rng or random.Random()
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._forms = FormCache()
        self._secrets = settings.secret_box()

    async def start(self) -> None:
        """Create the shared HTTP client and start the loop (nothing connects before this)."""
        # Every connection is checked against the address policy, so a source's base URL (or a DNS answer
        # that changed since it was saved) cannot make the fetcher call an internal address with its tokens.
        self._http = httpx.AsyncClient(
            transport=guarded_transport(
                self.settings.platform_address_policy,
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            ),
            timeout=httpx.Timeout(self.settings.platform_fetch_timeout_s),
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json", "User-Agent": "handoff-ingest"},
        )
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="platform-fetcher")

    def notify(self) -> None:
        """Wake the loop now: a notification was just queued."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish the fetches under way (bounded by the HTTP timeout), then close the client."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            _done, pending = await asyncio.wait(
                {self._task}, timeout=self.settings.platform_fetch_timeout_s + 5
            )
            for task in pending:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                claimed = await self.run_once()
            except Exception:
                # The database may be briefly unavailable; claimed rows come back when their lease ends.
                log.exception("platform_fetch_loop_error")
                claimed = 0
            if claimed < self.settings.platform_fetch_batch_size:
                await self._sleep(self.settings.platform_fetch_poll_interval_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _lease_s(self) -> float:
        # Long enough for the slowest fetch (LinkedIn makes two calls) and a store under load.
        return self.settings.platform_fetch_timeout_s * 3 + 30

    async def run_once(self) -> int:
        """Claim the due fetches and process them concurrently; returns how many were claimed."""
        now = _now()
        async with self.runtime.db.transaction() as session:
            claims = await handlers.claim_platform_fetches(
                session,
                now,
                limit=self.settings.platform_fetch_batch_size,
                lease_until=now + timedelta(seconds=self._lease_s()),
            )
        if claims:
            await asyncio.gather(*(self._process(claim) for claim in claims))
        return len(claims)

    async def _process(self, claim: handlers.ClaimedFetch) -> None:
        source = claim.source
        try:
            raw, is_test = await self._fetch(claim)
            normalized = normalize_lead(
                raw,
                default_region=source.default_region,
                field_mapping=source.field_mapping,
                now=_now(),
                strict=False,
                require_contact=False,
            )
        except PlatformAPIError as exc:
            error = str(exc)
        except LeadValidationError as exc:
            # Field names only: a reason is safe, but the last_error column should never hold lead data.
            error = "invalid lead: " + ", ".join(sorted({e.field for e in exc.errors}))
        except Exception as exc:
            log.exception("platform_fetch_unexpected_error", source_id=source.id, fetch_id=claim.id)
            error = f"unexpected error ({type(exc).__name__})"
        else:
            try:
                async with self.runtime.db.transaction() as session:
                    accepted = await handlers.store_fetched_lead(
                        session, self.settings, claim.id, normalized=normalized, is_test=is_test, now=_now()
                    )
            except (SQLAlchemyError, OSError) as exc:
                error = f"store failed ({type(exc).__name__})"
            else:
                log.info(
                    "platform_lead_fetched",
                    source_id=source.id,
                    kind=source.kind,
                    fetch_id=claim.id,
                    lead_id=accepted.lead_id if accepted else None,
                    status=accepted.status if accepted else "gone",
                    attempts=claim.attempts + 1,
                )
                return
        await self._record_failure(claim, error)

    async def _record_failure(self, claim: handlers.ClaimedFetch, error: str) -> None:
        delay = retry_delay(
            claim.attempts + 1,
            base_s=self.settings.platform_fetch_backoff_s,
            cap_s=self.settings.platform_fetch_max_backoff_s,
            rng=self._rng,
        )
        try:
            async with self.runtime.db.transaction() as session:
                attempts = await handlers.record_fetch_failure(
                    session, claim.id, error, _now() + timedelta(seconds=delay)
                )
        except (SQLAlchemyError, OSError):
            log.exception("platform_fetch_failure_not_recorded", fetch_id=claim.id)
            return  # the lease runs out and the row falls due again
        if attempts is None:
            return
        report = log.error if attempts >= self.settings.platform_fetch_attempts else log.warning
        report(
            "platform_fetch_failed",
            source_id=claim.source.id,
            kind=claim.source.kind,
            fetch_id=claim.id,
            attempts=attempts,
            error=error,
            retry_in_s=round(delay, 2),
        )

    async def _fetch(self, claim: handlers.ClaimedFetch) -> tuple[dict[str, Any], bool]:
        """The lead's raw fields and whether the platform marks it as a test lead."""
        if self._http is None:
            raise PlatformAPIError(claim.source.kind, "the fetcher is not started")
        source = claim.source
        settings = self.settings
        if source.kind == "meta":
            meta = MetaGraphClient(
                self._http,
                base_url=_config_str(source, "graph_base_url") or settings.meta_graph_base_url,
                version=settings.meta_graph_version,
                access_token=_secret(source, "access_token", self._secrets),
                app_secret=_secret(source, "app_secret", self._secrets),
            )
            return meta_lead_to_raw(await meta.lead(claim.external_id)), False
        if source.kind == "linkedin":
            linkedin = LinkedInClient(
                self._http,
                base_url=_config_str(source, "api_base_url") or settings.linkedin_api_base_url,
                version=settings.linkedin_api_version,
                access_token=_secret(source, "access_token", self._secrets),
                forms=self._forms,
            )
            response = await linkedin.form_response(claim.external_id)
            form_urn = response.get("versionedLeadGenFormUrn") or claim.notification.get("form_urn")
            form = await linkedin.lead_form(str(form_urn)) if form_urn else None
            return linkedin_lead_to_raw(response, form=form), linkedin_is_test(response)
        if source.kind == "hubspot":
            hubspot = HubSpotClient(
                self._http,
                base_url=_config_str(source, "api_base_url") or settings.hubspot_api_base_url,
                access_token=_secret(source, "access_token", self._secrets),
            )
            wanted = (source.config or {}).get("properties")
            properties = (
                [str(p) for p in wanted]
                if isinstance(wanted, list) and wanted
                else HUBSPOT_CONTACT_PROPERTIES
            )
            leads = parse_hubspot(await hubspot.contact(claim.external_id, properties))
            return leads[0].raw, False
        raise PlatformAPIError(source.kind, "this kind of source has no lead to fetch")
