"""Structured JSON logs with the correlation id, and no personal data in clear."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

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
