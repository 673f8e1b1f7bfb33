"""POST /v1/leads as a back end sends it, answered without FastAPI's routing; anything else goes to the route.

The usual request (JSON, a source's secret API key, a valid lead) costs most of its CPU in the framework: the
router's matching, the request object, the dependency machinery, the exception layers. This ASGI layer sits inside
the common middleware (correlation id, metrics, body limit, in-flight limit) and stores such a request itself.
Whenever the request is anything else (another route, a form, a browser, the admin token, an unknown key, a
malformed or invalid lead, a failure on record) it hands the untouched request, body included, to the app, so every
4xx / 303 / CORS answer and the OpenAPI document stay those of `api/leads.py`. Only the writer's own refusals
(409, 503) are answered here, with the route's errors and the app's own error shape.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.web import json_depth_exceeds, tokens_equal
from ingest.api.leads import IDEMPOTENCY_KEY_MAX, router, store_lead
from ingest.domain import LeadValidationError
from ingest.domain.forms import PUBLISHABLE_KEY_FIELD
from ingest.domain.keys import PUBLISHABLE_PREFIX
from ingest.handlers import leads as lead_cases
from ingest.handlers.leads import PreparedLead

LEADS_PATH = "/v1/leads"
_BEARER_PUBLISHABLE = PUBLISHABLE_PREFIX + "_"
_JSON = b"application/json"


def _leads_route() -> BaseRoute:
    """The route FastAPI would have chosen: the metrics middleware labels the request by its template."""
    for route in router.routes:
        if getattr(route, "path", None) == LEADS_PATH and "POST" in getattr(route, "methods", ()):
            return route
    raise LookupError(f"no POST {LEADS_PATH} route")


class LeadFastPath:
    """Stores a back end's valid JSON lead without the framework; hands every other request to the app as it came."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = _leads_route()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != LEADS_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_type = b""
        authorization = b""
        idem: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type" and not content_type:
                content_type = value
            elif name == b"authorization" and not authorization:
                authorization = value
            elif name == b"idempotency-key" and idem is None:
                idem = value
        state = scope["app"].state
        token = _secret_key(authorization)
        if (
            token is None
            or content_type.split(b";")[0].strip().lower() != _JSON
            or state.auth_failures.counting  # a failure on record: the route checks the caller's address first
            or tokens_equal(token, state.settings.admin_token.get_secret_value())
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = await _read_body(receive, messages)
        prepared = None if body is None else await _prepare(scope, state, token, body, idem)
        if prepared is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["route"] = self.route
        try:
            stored = await store_lead(state.writer, prepared)
        except HTTPException as exc:
            # The route's own errors, shaped as the app's handler shapes them.
            await JSONResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)(scope, receive, send)
            return
        payload = orjson.dumps(stored.body)
        headers = [(b"content-length", str(len(payload)).encode()), (b"content-type", _JSON)]
        if stored.replayed:
            headers.insert(0, (b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _secret_key(authorization: bytes) -> str | None:
    """A bearer token that is not a publishable key (those belong to browsers, which the route serves)."""
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or token.startswith(_BEARER_PUBLISHABLE):
        return None
    return token


async def _read_body(receive: Receive, messages: list[Message]) -> bytes | None:
    """The whole body (None if the client went away), every message kept for the app should it take the request.
    The body limit's receive raises past the limit, which its middleware answers with 413 as for the route."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
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
    try:
        source = await state.source_keys.by_api_key(token)
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
