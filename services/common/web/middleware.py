"""ASGI middleware every service mounts: correlation ids, request metrics, and a bound on requests in flight."""

from __future__ import annotations

import os
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import metrics
from common.logging import bind_correlation_id
from common.web.errors import send_json

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
        cid = cid or os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID per request
        scope.setdefault("state", {})["correlation_id"] = cid
        bind_correlation_id(cid)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (CORRELATION_HEADER.encode(), cid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_header)


class MetricsMiddleware:
    """Request counts and latency by route template (not raw path, which would explode label cardinality)."""

    _MAX_SERIES = 1024  # a bound on the remembered label sets, far above the routes x methods x statuses served

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The labelled children, looked up once per label set: `labels()` checks and locks on every call (~2 us each,
        # two per request).
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _children(self, method: str, template: str, status: int) -> tuple[Any, Any]:
        key = (method, template, status)
        children = self._series.get(key)
        if children is None:
            children = (
                metrics.HTTP_REQUESTS.labels(method=method, route=template, status=str(status)),
                metrics.HTTP_LATENCY.labels(method=method, route=template),
            )
            if len(self._series) < self._MAX_SERIES:
                self._series[key] = children
        return children

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
            requests, latency = self._children(scope.get("method", "GET"), template, status)
            requests.inc()
            latency.observe(time.perf_counter() - started)


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
            await send_json(
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
