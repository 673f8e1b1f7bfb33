"""Structured JSON logs with the correlation id, and no personal data in clear."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

from common.db_errors import describe_db_error, is_db_error

_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# Keys whose values are personal data wherever they appear in a log event.
_PII_KEYS = frozenset(
    {
        "email",
        "phone",
        "first_name",
        "last_name",
        "full_name",
        "name",
        "message",
        # Free text a person or a rep typed, or a receiver echoed back: it can hold anything, names included.
        "company",
        "company_name",
        "notes",
        "note",
        "comment",
        "comments",
        "reason_text",
        "free_text",
        "response_body",
        "ip",
        "client_ip",
        "address",
    }
)
# Libraries held at WARNING whatever the level: at DEBUG/INFO they print SQL parameters (names, emails and
# phones in clear: regexes cannot catch a name), request URLs (a receiver's URL may hold its token) or wire noise.
_HELD_AT_WARNING = (
    "aiokafka",
    "kafka",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "httpx",
    "httpcore",
    "hpack",
    "multipart",
    "python_multipart",
    "asyncio",
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Phones reach logs in E.164 or as typed; a leading "+" keeps timestamps and ids from matching.
_PHONE = re.compile(r"\+\d[\d ().-]{6,}\d")


def bind_correlation_id(value: str | None) -> None:
    _correlation_id.set(value)


def correlation_id() -> str | None:
    return _correlation_id.get()


def scrub_text(text: str) -> str:
    """Replace emails and phone numbers inside free text (error messages, receiver responses)."""
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


def describe_error(exc: BaseException) -> str:
    """An exception as `Type: message`, safe to log or put in a header: database errors lose the values they
    quote, and emails and phones are taken out of any other message."""
    if is_db_error(exc):
        return scrub_text(describe_db_error(exc))
    return scrub_text(f"{type(exc).__name__}: {exc}")


def format_exception_safely(exc: BaseException) -> str:
    """A traceback like Python's, but each exception's message is `describe_error`'s: the standard text of a
    SQLAlchemy error carries its statement's bound parameters and the driver's quoted values (names, emails)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts: list[str] = []
    for index, item in enumerate(reversed(chain)):
        if index:
            parts.append("\nThe above exception led to the following one:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(f"{type(item).__module__}.{describe_error(item)}\n")
    return "".join(parts)


def _exceptions_without_values(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Render `exc_info` with `format_exception_safely` before structlog's own formatter would print it raw."""
    exc_info = event_dict.get("exc_info")
    if not exc_info:
        return event_dict
    if isinstance(exc_info, BaseException):
        exc: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = sys.exc_info()[1]
    if exc is not None:
        event_dict.pop("exc_info")
        event_dict["exception"] = format_exception_safely(exc)
    return event_dict


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 4:
        return "[…]"
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: ("[redacted]" if k in _PII_KEYS and v else _scrub(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, depth + 1) for v in value]
    return value


def redact_pii(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: PII keys are masked and emails/phones inside any string are replaced."""
    for key, value in list(event_dict.items()):
        if key in _PII_KEYS and value:
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def _add_correlation_id(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    cid = _correlation_id.get()
    if cid and "correlation_id" not in event_dict:
        event_dict["correlation_id"] = cid
    return event_dict


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library (uvicorn, aiokafka) through one JSON renderer."""

    def add_service(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[Any] = [
        add_service,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_correlation_id,
        _exceptions_without_values,
        structlog.processors.format_exc_info,
        redact_pii,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    quiet = max(logging.WARNING, root.level)
    for name in _HELD_AT_WARNING:
        logging.getLogger(name).setLevel(quiet)
    # uvicorn installs its own plain-text handlers; its lines go through the JSON renderer and redaction too.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(quiet)
    # Its INFO lines are held back anyway; with no handler to reach, uvicorn does not even build them (per request).
    logging.getLogger("uvicorn.access").propagate = False
