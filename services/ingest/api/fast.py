"""POST /v1/leads as a back end sends it, answered ahead of the framework; anything else goes to the app as it came.

The usual request (JSON, a source's secret API key, a valid lead) costs most of its CPU in the framework: the
middleware layers (Starlette's and FastAPI's own, then correlation id, metrics, body limit, in-flight limit), the
router's matching, the request object, the dependency machinery, the exception layers. `IngestApp` hands POST
/v1/leads to `LeadFastPath` before any of them, which does the little of their work such a request needs (its
correlation id, its count and latency in the request metrics, the in-flight bound and the body limit) and stores
the lead itself. Whenever the request is anything else (over a limit, a form, a browser, the admin token, an
unknown key, a malformed or invalid lead, a failure on record) it hands the untouched request, body included, to
the whole app, so every 4xx / 303 / 413 / CORS answer and the OpenAPI document stay those of the middleware and of
`api/leads.py`. Answered here as well: the writer's own refusals (409, 503), with the route's errors, and a post
over the in-flight bound, with the in-flight middleware's 503 (common.web.shed_answer), whatever its key or body.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as HttpToolsCycle

from common.web import (
    CORRELATION_HEADER,
    UNMATCHED,
    InflightGate,
    bind_request_correlation_id,
    count_request,
    json_depth_exceeds,
    shed_answer,
    tokens_equal,
)
from ingest.api.leads import IDEMPOTENCY_KEY_MAX, store_lead
from ingest.domain import LeadValidationError
from ingest.domain.forms import PUBLISHABLE_KEY_FIELD
from ingest.domain.keys import PUBLISHABLE_PREFIX
from ingest.handlers import leads as lead_cases
from ingest.handlers.leads import PreparedLead

LEADS_PATH = "/v1/leads"
_BEARER_PUBLISHABLE = PUBLISHABLE_PREFIX + "_"
_JSON = b"application/json"
_CORRELATION = CORRELATION_HEADER.encode()


class IngestApp(FastAPI):
    """Ingest's FastAPI app, with POST /v1/leads offered to `fast_path` (when set) before any middleware runs."""

    fast_path: LeadFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and scope["type"] == "http" and scope["path"] == LEADS_PATH and scope["method"] == "POST":
            scope["app"] = self
            await fast(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def whole_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request through every middleware and the router, as FastAPI serves it."""
        await super().__call__(scope, receive, send)


class LeadFastPath:
    """Stores a back end's valid JSON lead without the framework; hands every other request to the app as it came."""

    def __init__(self, app: IngestApp, *, gate: InflightGate, max_body_bytes: int) -> None:
        self.app = app
        self.gate = gate  # shared with the app's InflightLimitMiddleware: one bound for both ways in
        self.max_body_bytes = max_body_bytes  # BodyLimitMiddleware's limit for this path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = b""
        authorization = b""
        idem: bytes | None = None
        given_cid: bytes | None = None
        length = b"0"
        for name, value in scope["headers"]:
            if name == b"content-type" and not content_type:
                content_type = value
            elif name == b"authorization" and not authorization:
                authorization = value
            elif name == b"idempotency-key" and idem is None:
                idem = value
            elif name == b"content-length":
                length = value
            elif given_cid is None and name in (b"x-correlation-id", b"x-request-id"):
                given_cid = value
        within_limit = length.isdigit() and int(length) <= self.max_body_bytes  # else the body limit's 400 or 413
        if within_limit and self.gate.full:
            # Shed here, as the app's in-flight middleware would (whatever the key or body: it answers before the
            # route reads either; a body over the limit is the body limit's 413 first). At 3x saturation most
            # answers are these (~15,000 a second); through the whole app each took 14.4 us of the loop, here 5.2.
            started = time.perf_counter()
            correlation_id = bind_request_correlation_id(scope, given_cid)
            headers, payload = shed_answer((_CORRELATION, correlation_id.encode()))
            await send_answer(send, 503, headers, payload)
            count_request("POST", UNMATCHED, 503, time.perf_counter() - started)
            return
        state = self.app.state
        token = _secret_key(authorization)
        if (
            token is None
            or not within_limit
            or content_type.split(b";")[0].strip().lower() != _JSON
            or state.auth_failures.counting  # a failure on record: the route checks the caller's address first
            or tokens_equal(token, state.settings.admin_token.get_secret_value())
        ):
            await self.app.whole_app(scope, receive, send)
            return
        started = time.perf_counter()
        self.gate.inflight += 1
        try:
            outcome = await self._serve(scope, receive, send, state, token, idem, given_cid)
        finally:
            self.gate.inflight -= 1
        if isinstance(outcome, int):
            count_request("POST", LEADS_PATH, outcome, time.perf_counter() - started)
            return
        await self.app.whole_app(scope, _replay(outcome, receive), send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, state: Any, token: str, idem: bytes | None, cid: bytes | None
    ) -> int | list[Message]:
        """The answer's status when this layer answered, else the messages read so far (for the app to replay)."""
        messages: list[Message] = []
        body = await _read_body(receive, messages, self.max_body_bytes)
        correlation_id = bind_request_correlation_id(scope, cid)
        prepared = None if body is None else await _prepare(scope, state, token, body, idem)
        if prepared is None:
            return messages
        try:
            stored = await store_lead(state.writer, prepared)
        except HTTPException as exc:
            # The route's own errors, shaped as the app's handler shapes them.
            response = JSONResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
            response.raw_headers.append((_CORRELATION, correlation_id.encode()))
            await response(scope, receive, send)
            return exc.status_code
        payload = orjson.dumps(stored.body)
        headers = [
            (b"content-length", str(len(payload)).encode()),
            (b"content-type", _JSON),
            (_CORRELATION, correlation_id.encode()),
        ]
        if stored.replayed:
            headers.insert(0, (b"idempotent-replayed", b"true"))
        await send_answer(send, stored.status, headers, payload)
        return stored.status


async def send_answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """`http.response.start` and `http.response.body` as the server writes them, in one socket write where the
    server is uvicorn's httptools protocol (which writes the status line and headers at the start, then the body:
    two sends, two loopback receives, ~5 us of a lead's CPU). Its `send` still makes every byte (default headers,
    checks, keep-alive, completion); only its transport is stood in for while it does."""
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not HttpToolsCycle:
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return
    transport = cycle.transport
    held = _OneWrite(transport)
    cycle.transport = held  # type: ignore[assignment]
    try:
        await send(start)
        await send({"type": "http.response.body", "body": body})
    finally:
        cycle.transport = transport
        held.flush()


class _OneWrite:
    """A transport that holds the first write (the status line and headers) and writes it with the second (the
    body); everything else goes to the real transport."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is None:
            self._head = data
        else:
            self._head = b""
            self._transport.write(head + data)

    def flush(self) -> None:
        """What is still held (a body that was never written), written as the server would have written it."""
        head = self._head
        self._head = b""
        if head and not self._transport.is_closing():
            self._transport.write(head)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _secret_key(authorization: bytes) -> str | None:
    """A bearer token that is not a publishable key (those belong to browsers, which the route serves)."""
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or token.startswith(_BEARER_PUBLISHABLE):
        return None
    return token


async def _read_body(receive: Receive, messages: list[Message], limit: int) -> bytes | None:
    """The whole body (None if the client went away or sent more than `limit`: the app then answers), every
    message kept for the app should it take the request."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            return None  # the body limit's middleware counts the replayed messages too, and answers 413
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _prepare(scope: Scope, state: Any, token: str, body: bytes, idem: bytes | None) -> PreparedLead | None:
    """The lead as `api/leads.py` prepares it for a source's secret key, or None where the route must answer."""
    if not body or json_depth_exceeds(body):
        return None
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(fields, dict):
        return None
    idem_key = None if idem is None else idem.decode("latin-1")
    if idem_key is not None and not (0 < len(idem_key) <= IDEMPOTENCY_KEY_MAX):
        return None
    keys = state.source_keys
    try:
        source = keys.remembered_api_key(token) or await keys.by_api_key(token)
    except (SQLAlchemyError, OSError):
        return None  # a store that cannot answer: the route's handlers make it the usual 503
    if source is None:
        return None  # unknown or revoked: the route answers 401 and counts the failure
    fields.pop(PUBLISHABLE_KEY_FIELD, None)
    try:
        return lead_cases.prepare_lead(
            fields,
            source,
            f"source:{source.id}",
            body=body,
            content_type="application/json",
            idempotency_key=idem_key,
            now=state.clock(),
            correlation_id=scope.get("state", {}).get("correlation_id"),
        )
    except LeadValidationError:
        return None  # 422, or quarantined as no contact (and a reused key's 409 first): the route decides
