"""Guards on request bodies: a size limit enforced while streaming, and JSON nesting refused before parsing."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.web.auth import AUTHENTICATION_DEPENDENCIES
from common.web.errors import BodyTooLarge, problem, send_json, too_large


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
                    await send_json(send, 400, {"error": "bad_request", "detail": "invalid Content-Length"})
                    return
                if declared > max_bytes:
                    await send_json(send, 413, too_large(max_bytes))
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            # exc.limit: a route may stop reading below this middleware's ceiling (read_body_limited).
            if not started:
                await send_json(send, 413, too_large(exc.limit))


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The body, read as it streams and refused with 413 past `limit` (a route's own limit under the ceiling)."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


# Deeper than any lead or configuration we accept, far below where a recursive parser or validator overflows
# (about 500 levels reached a RecursionError: a 500 and a traceback per request, from a public key).
JSON_MAX_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_NESTING = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(body: bytes, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit`: a byte scan of [ and { outside strings, no parsing."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # too few openings to nest that deep, wherever they are (a lead's body: one or two)
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
        reason = f"JSON nested deeper than {JSON_MAX_DEPTH} levels"
        raise problem(400, "bad_request", [{"field": "body", "reason": reason}])


_NOT_JSON_TYPES = ("application/x-www-form-urlencoded", "multipart/")


class HandoffRoute(APIRoute):
    """The route class of every router: authenticate, then refuse JSON nested too deep, then let FastAPI parse.

    FastAPI reads and parses a route's body before it solves any dependency, so without this an anonymous caller
    got 400 for a malformed body (after we read up to the whole limit) instead of 401, and a deep one a 500.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # A service's own (async) authentication names its check in `authenticates_before_body` (routing.access).
        calls = [dep.call for dep in self.dependant.dependencies if dep.call is not None]
        checks: list[Callable[[Request], Any]] = [
            call if call in AUTHENTICATION_DEPENDENCIES else call.authenticates_before_body  # type: ignore[attr-defined]
            for call in calls
            if call in AUTHENTICATION_DEPENDENCIES or hasattr(call, "authenticates_before_body")
        ]
        parses_body = self.body_field is not None

        async def authenticate_then_handle(request: Request) -> Response:
            for check in checks:
                outcome = check(request)  # raises 401 before a byte of the body is read
                if inspect.isawaitable(outcome):
                    await outcome
            content_type = request.headers.get("content-type", "").lower()
            if parses_body and not content_type.startswith(_NOT_JSON_TYPES):
                refuse_deep_json(await request.body())  # Starlette keeps the body for FastAPI's own read
            return await handler(request)

        return authenticate_then_handle
