"""What every ingest route shares: the request's clock and correlation id, the error shape and its documentation,
and list cursors."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import structlog
from fastapi import HTTPException, Request
from pydantic import BaseModel, Field

from common.db import as_utc
from common.web import problem

log = structlog.get_logger(__name__)

ADMIN_SECURITY: dict[str, Any] = {"security": [{"adminToken": []}]}


def request_time(request: Request) -> datetime:
    clock = request.app.state.clock
    now: datetime = clock()
    return now


def unavailable(exc: BaseException | None = None) -> HTTPException:
    """The 503 a caller may retry; the cause is logged by type only (messages can quote data)."""
    if exc is not None:
        log.error("ingest_store_failed", error=type(exc).__name__)
    return problem(503, "unavailable", "the store could not commit; retry", {"Retry-After": "1"})


def correlation_id(request: Request) -> str | None:
    """The request's correlation id, set by the common middleware."""
    value: str | None = request.scope.get("state", {}).get("correlation_id")
    return value


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


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorOut, "description": _ERROR_DESCRIPTIONS[code]}
        if code in (429, 503):
            out[code]["headers"] = _RETRY_AFTER
    return out


def date_time(description: str | None = None) -> Any:
    return Field(json_schema_extra={"format": "date-time"}, description=description)


def encode_cursor(received_at: str, lead_id: str) -> str:
    return base64.urlsafe_b64encode(f"{received_at}|{lead_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, lead_id = text.partition("|")
        if not sep or not lead_id:
            raise ValueError(cursor)
        return as_utc(datetime.fromisoformat(at)), lead_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise problem(422, "validation_failed", [{"field": "cursor", "reason": "not a cursor from this API"}]) from None
