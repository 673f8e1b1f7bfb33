"""One shape for every error a client sees, {"error": code, "detail": ...}, and the handlers that enforce it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from common.envelope import dumps

log = structlog.get_logger(__name__)


class BodyTooLarge(Exception):
    """Raised by the body limit while streaming; carries the limit for the 413 it becomes."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def too_large(limit: int) -> dict[str, Any]:
    """The 413 answer's body."""
    return {"error": "payload_too_large", "detail": f"the body is larger than {limit} bytes"}


async def send_json(send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """An answer sent by middleware below FastAPI, where no exception handler runs."""
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
        if isinstance(exc.__cause__, BodyTooLarge):
            # FastAPI reports any error while it reads a model's body as "400 error parsing the body"; the body
            # limit is one of them, and it is a 413.
            return JSONResponse(too_large(exc.__cause__.limit), status_code=413)
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
