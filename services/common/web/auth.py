"""HTTP plumbing every service mounts: correlation ids, body limits, error shapes, auth, health and metrics."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import metrics
from common.logging import bind_correlation_id

log = structlog.get_logger(__name__)

CORRELATION_HEADER = "x-correlation-id"


class CorrelationIdMiddleware:
    """Carries the caller's correlation id (or a new one) through logs, events and the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = None
        for name, value in scope["headers"]:
            if name in (b"x-correlation-id", b"x-request-id"):
                candidate = value.decode("latin-1")[:128]
                if candidate.isprintable():
                    cid = candidate
                break
        cid = cid or uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = cid
        bind_correlation_id(cid)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (CORRELATION_HEADER.encode(), cid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_header)


class _BodyTooLarge(Exception):
    """Raised by the body limit while streaming; carries the limit for the 413 it becomes."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413 while streaming, without buffering them whole (uvicorn has no limit).

    `route_limits` maps path patterns (matched whole) to their own limit, for routes whose callers send more than
    the default allows (platform webhooks); every other path keeps `max_bytes`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, route_limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.route_limits = [(re.compile(pattern), limit) for pattern, limit in (route_limits or {}).items()]

    def limit_for(self, path: str) -> int:
        """The body limit of one request path."""
        for pattern, limit in self.route_limits:
            if pattern.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope.get("path", ""))
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, {"error": "bad_request", "detail": "invalid Content-Length"})
                    return
                if declared > max_bytes:
                    await _send_json(send, 413, _too_large(max_bytes))
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge as exc:
            # exc.limit: a route may stop reading below this middleware's ceiling (read_body_limited).
            if not started:
                await _send_json(send, 413, _too_large(exc.limit))


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The body, read as it streams and refused with 413 past `limit` (a route's own limit under the ceiling)."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


# -- JSON nesting ----------------------------------------------------------------------------------------------

# Deeper than any lead or configuration we accept, far below where a recursive parser or validator overflows
# (about 500 levels reached a RecursionError: a 500 and a traceback per request, from a public key).
JSON_MAX_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_NESTING = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(body: bytes, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit`: a byte scan of [ and { outside strings, no parsing."""
    depth = 0
    for match in _JSON_NESTING.finditer(_JSON_STRING.sub(b"", body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def refuse_deep_json(body: bytes) -> None:
    """400 naming the body when its JSON nests deeper than JSON_MAX_DEPTH; call before any parser sees it."""
    if json_depth_exceeds(body):
        raise HTTPException(
            status_code=400,
            detail={
                "error": "bad_request",
                "detail": [{"field": "body", "reason": f"JSON nested deeper than {JSON_MAX_DEPTH} levels"}],
            },
        )


def _too_large(limit: int) -> dict[str, Any]:
    return {"error": "payload_too_large", "detail": f"the body is larger than {limit} bytes"}


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    from common.envelope import dumps

    payload = dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class MetricsMiddleware:
    """Request counts and latency by route template (not raw path, which would explode label cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "GET")
            metrics.HTTP_REQUESTS.labels(method=method, route=template, status=str(status)).inc()
            metrics.HTTP_LATENCY.labels(method=method, route=template).observe(time.perf_counter() - started)


def field_errors_from_validation(exc: RequestValidationError) -> list[dict[str, str]]:
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path", "header")]
        errors.append({"field": ".".join(loc) or "body", "reason": str(err.get("msg", "invalid"))})
    return errors


def install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON that names what went wrong; nothing ever shows a stack trace to a client."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors_from_validation(exc)
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return JSONResponse({"error": "malformed_json", "detail": errors}, status_code=400)
        return JSONResponse({"error": "validation_failed", "detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, _BodyTooLarge):
            # FastAPI reports any error while it reads a model's body as "400 error parsing the body"; the body
            # limit is one of them, and it is a 413.
            return JSONResponse(_too_large(exc.__cause__.limit), status_code=413)
        body = (
            exc.detail
            if isinstance(exc.detail, dict)
            else {"error": _error_code(exc.status_code), "detail": exc.detail}
        )
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(SQLAlchemyError)
    async def _store_unavailable(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # The database is restarting or unreachable: a retry will do; the transaction rolled back, nothing half-kept.
        log.error("store_unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {"error": "unavailable", "detail": "the store is unavailable; retry"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path, error=type(exc).__name__)
        return JSONResponse({"error": "internal_error", "detail": "an unexpected error occurred"}, status_code=500)


def problem(status: int, code: str, detail: Any, headers: Mapping[str, str] | None = None) -> HTTPException:
    """An HTTP error in the shared shape {"error": code, "detail": detail}, raised by a route or a dependency."""
    return HTTPException(
        status_code=status, detail={"error": code, "detail": detail}, headers=dict(headers) if headers else None
    )


def _error_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "validation_failed",
        429: "too_many_requests",
        503: "unavailable",
    }.get(status, "error")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: Request, trusted_proxies: Sequence[Network] = ()) -> str:
    """The caller's address: the socket peer, unless that peer is a trusted proxy and says who it forwards for.

    X-Forwarded-For is read right to left (each proxy appends the peer it saw), skipping our own proxies; the first
    hop that is not one of them is the client. Anything further left was written by the client and proves nothing,
    so a forged header from an untrusted peer changes nothing.
    """
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    address = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage a proxy passed on: the last hop we could vouch for stands
        address = hop
        if not _is_trusted(hop, trusted_proxies):
            break
    return address


def _is_trusted(address: str, trusted_proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)


class InflightLimitMiddleware:
    """At most `limit` requests to one route at once in this process; more get 503 with Retry-After at once.

    A saturated event loop would otherwise take every request it is sent and answer all of them late; refusing the
    excess here costs a few microseconds each, so those admitted keep a bounded latency and memory stays flat.
    """

    def __init__(self, app: ASGIApp, *, limit: int, method: str, path: str) -> None:
        self.app = app
        self.limit = limit
        self.method = method
        self.path = path
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != self.method or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            await _send_json(
                send,
                503,
                {"error": "unavailable", "detail": "too many requests in progress; retry"},
                headers=[(b"retry-after", b"1")],
            )
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the secret."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def require_admin_token(request: Request) -> None:
    """Dependency form used by routers: the token lives on app.state.settings."""
    settings = request.app.state.settings
    if not tokens_equal(bearer_token(request), settings.admin_token.get_secret_value()):
        from fastapi import HTTPException

        raise HTTPException(
            status_code=401,
            detail={"error": "unauthorized", "detail": "a valid admin bearer token is required"},
            headers={"WWW-Authenticate": "Bearer"},
        )


Admin = Annotated[None, Depends(require_admin_token)]

OPS_COOKIE = "handoff_ops"
OPS_COOKIE_MAX_AGE_S = 12 * 3600


def ops_tokens(settings: Any) -> list[str]:
    """Tokens that may read ops data: the admin token always, and the read-only ops token when set."""
    tokens = [settings.admin_token.get_secret_value()]
    ops = getattr(settings, "ops_token", None)
    if ops is not None:
        tokens.append(ops.get_secret_value())
    return tokens


def is_ops_token(settings: Any, given: str | None) -> bool:
    """Every candidate is compared (no early exit), so timing tells nothing about which one matched."""
    matches = [tokens_equal(given, token) for token in ops_tokens(settings)]
    return any(matches)


def ops_credential(request: Request) -> str | None:
    """Which token an ops request holds, "admin" or "ops" (bearer or cookie): the unit its limits count by."""
    settings = request.app.state.settings
    labels = ["admin", "ops"]
    bearer = bearer_token(request)
    if bearer is not None:
        matches = [tokens_equal(bearer, token) for token in ops_tokens(settings)]
    else:
        cookie = request.cookies.get(OPS_COOKIE) or ""
        expires_text, _, mac = cookie.partition(".")
        if not expires_text.isdigit() or int(expires_text) < time.time():
            return None
        matches = [tokens_equal(mac, _ops_cookie_mac(token, int(expires_text))) for token in ops_tokens(settings)]
    return next((label for label, matched in zip(labels, matches, strict=False) if matched), None)


def _ops_cookie_mac(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"handoff-ops-session:{expires}".encode(), hashlib.sha256).hexdigest()


def issue_ops_cookie(token: str, now: float | None = None) -> str:
    """A cookie value that proves the token was shown, without holding it; it expires on its own."""
    expires = int((time.time() if now is None else now) + OPS_COOKIE_MAX_AGE_S)
    return f"{expires}.{_ops_cookie_mac(token, expires)}"


def _ops_cookie_valid(settings: Any, value: str, now: float) -> bool:
    expires_text, _, mac = value.partition(".")
    if not expires_text.isdigit() or not mac or int(expires_text) < now:
        return False
    expires = int(expires_text)
    matches = [tokens_equal(mac, _ops_cookie_mac(token, expires)) for token in ops_tokens(settings)]
    return any(matches)


def has_ops_access(request: Request) -> bool:
    """A bearer admin or ops token, or (browsers on /ops) the session cookie that /ops?token= set."""
    settings = request.app.state.settings
    bearer = bearer_token(request)
    if bearer is not None:
        return is_ops_token(settings, bearer)
    cookie = request.cookies.get(OPS_COOKIE)
    return cookie is not None and _ops_cookie_valid(settings, cookie, time.time())


def require_ops_access(request: Request) -> None:
    """Dependency for read-only ops routes; the cookie is accepted here only, never on routes that change state."""
    if not has_ops_access(request):
        from fastapi import HTTPException

        raise HTTPException(
            status_code=401,
            detail={"error": "unauthorized", "detail": "a valid admin or ops bearer token is required"},
            headers={"WWW-Authenticate": "Bearer"},
        )


Ops = Annotated[None, Depends(require_ops_access)]

# Dependencies that only look at headers and cookies, so they can run before the body is read.
AUTHENTICATION_DEPENDENCIES: frozenset[Callable[[Request], None]] = frozenset(
    {require_admin_token, require_ops_access}
)
_NOT_JSON_TYPES = ("application/x-www-form-urlencoded", "multipart/")


class HandoffRoute(APIRoute):
    """The route class of every router: authenticate, then refuse JSON nested too deep, then let FastAPI parse.

    FastAPI reads and parses a route's body before it solves any dependency, so without this an anonymous caller
    got 400 for a malformed body (after we read up to the whole limit) instead of 401, and a deep one a 500.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = [dep.call for dep in self.dependant.dependencies if dep.call in AUTHENTICATION_DEPENDENCIES]
        parses_body = self.body_field is not None

        async def authenticate_then_handle(request: Request) -> Response:
            for check in checks:
                check(request)  # raises 401 before a byte of the body is read
            content_type = request.headers.get("content-type", "").lower()
            if parses_body and not content_type.startswith(_NOT_JSON_TYPES):
                refuse_deep_json(await request.body())  # Starlette keeps the body for FastAPI's own read
            return await handler(request)

        return authenticate_then_handle


def health_router(readiness: Callable[[Request], Awaitable[tuple[bool, dict[str, Any]]]]) -> APIRouter:
    """/healthz says the process is alive; /readyz says it can do its job (database up, consumer progressing)."""
    router = APIRouter(tags=["operations"], route_class=HandoffRoute)

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness", responses={503: {"description": "Not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        ready, checks = await readiness(request)
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def install_common(
    app: FastAPI, *, max_body_bytes: int = 64 * 1024, route_body_limits: Mapping[str, int] | None = None
) -> None:
    """Middleware and error handlers in the same order in every service."""
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, route_limits=route_body_limits)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(CorrelationIdMiddleware)
