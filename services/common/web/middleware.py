"""ASGI middleware every service mounts: correlation ids, request metrics, and a bound on requests in flight."""

from __future__ import annotations

import os
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import metrics
from common.envelope import dumps
from common.logging import bind_correlation_id

CORRELATION_HEADER = "x-correlation-id"
# The request metrics' route label of an answer given before any route matched (an unknown path, a body refused, a
# request shed over an in-flight bound): a route's latency histogram holds the requests it served.
UNMATCHED = "unmatched"


def bind_request_correlation_id(scope: Scope, given: bytes | None) -> str:
    """The request's correlation id: the caller's (the first X-Correlation-Id or X-Request-Id header's value, if
    printable, up to 128 characters) or a new one; kept in the request's state and bound to its log lines."""
    cid = None
    if given is not None:
        candidate = given.decode("latin-1")[:128]
        if candidate.isprintable():
            cid = candidate
    cid = cid or os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID per request
    scope.setdefault("state", {})["correlation_id"] = cid
    bind_correlation_id(cid)
    return cid


_MAX_SERIES = 1024  # a bound on the remembered label sets, far above the routes x methods x statuses served
# The labelled children, looked up once per label set: `labels()` checks and locks on every call (~2 us each, two
# per request).
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def count_request(method: str, template: str, status: int, seconds: float) -> None:
    """One answered request in the request metrics, labelled by its route's template (not the raw path, which
    would explode label cardinality)."""
    key = (method, template, status)
    children = _series.get(key)
    if children is None:
        children = (
            metrics.HTTP_REQUESTS.labels(method=method, route=template, status=str(status)),
            metrics.HTTP_LATENCY.labels(method=method, route=template),
        )
        if len(_series) < _MAX_SERIES:
            _series[key] = children
    requests, latency = children
    requests.inc()
    latency.observe(seconds)


class CorrelationIdMiddleware:
    """Carries the caller's correlation id (or a new one) through logs, events and the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name in (b"x-correlation-id", b"x-request-id"):
                given = value
                break
        cid = bind_request_correlation_id(scope, given)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (CORRELATION_HEADER.encode(), cid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_header)


class MetricsMiddleware:
    """Request counts and latency by route template (`count_request`)."""

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
            template = getattr(scope.get("route"), "path", UNMATCHED)
            count_request(scope.get("method", "GET"), template, status, time.perf_counter() - started)


class InflightGate:
    """A count of one route's requests in flight against a limit, shared by the middleware that sheds the excess and
    any layer that serves some of those requests ahead of it (ingest's fast path), so both count against one bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    @property
    def full(self) -> bool:
        return self.inflight >= self.limit


# The answer to a request over the bound, the same from every layer that sheds: made once, since under overload it
# is most of what the process answers (ingest at 3x saturation: ~15,000 a second).
_SHED_BODY = dumps({"error": "unavailable", "detail": "too many requests in progress; retry"})
_SHED_HEADERS = (
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_SHED_BODY)).encode()),
    (b"retry-after", b"1"),
)


def shed_answer(*extra: tuple[bytes, bytes]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 503 with Retry-After for a request over an in-flight bound: its headers (then `extra`) and body."""
    return [*_SHED_HEADERS, *extra], _SHED_BODY


class InflightLimitMiddleware:
    """At most `limit` requests to one route at once in this process; more get 503 with Retry-After at once.

    A saturated event loop would otherwise take every request it is sent and answer all of them late; refusing the
    excess here costs a few microseconds each, so those admitted keep a bounded latency and memory stays flat.
    `gate` shares the count with a layer in front of this one; otherwise the middleware keeps its own.
    """

    def __init__(
        self, app: ASGIApp, *, method: str, path: str, limit: int | None = None, gate: InflightGate | None = None
    ) -> None:
        if gate is None:
            if limit is None:
                raise ValueError("an in-flight limit or a gate is needed")
            gate = InflightGate(limit)
        self.app = app
        self.gate = gate
        self.method = method
        self.path = path

    @property
    def inflight(self) -> int:
        return self.gate.inflight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != self.method or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        gate = self.gate
        if gate.full:
            headers, body = shed_answer()
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        gate.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.inflight -= 1
