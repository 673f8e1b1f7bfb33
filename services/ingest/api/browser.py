"""Browser forms on publishable keys: what a person at a form sees, and what is kept when a post is no lead."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from common.web import problem
from ingest.api.limits import caller_address
from ingest.api.shared import correlation_id, request_time, unavailable
from ingest.domain.forms import FORM_CONTENT_TYPE
from ingest.handlers import quarantine as quarantine_cases
from ingest.handlers.sources import Source

log = structlog.get_logger(__name__)


def for_browser(body: dict[str, Any]) -> dict[str, Any]:
    """The 202 as a publishable-key caller sees it: without `duplicate_of`, which would tell anyone holding the
    public key whether an email was a lead lately, and its id (back ends and the events keep it)."""
    return {key: value for key, value in body.items() if key != "duplicate_of"}


class OriginNotAllowed(HTTPException):
    """A publishable key used from a page not (yet) in the source's allowed origins."""

    def __init__(self, source: Source, origin: str | None) -> None:
        super().__init__(403, {"error": "forbidden", "detail": "this origin is not allowed for the publishable key"})
        self.source = source
        self.origin = origin


async def quarantine(
    request: Request,
    source: Source | None,
    reason: str,
    problems: list[dict[str, str]],
    raw_body: bytes,
    content_type: str,
    origin: str | None,
    *,
    quiet: bool = False,
) -> str | None:
    """Keep a submission that is not a lead; its id. `quiet` (honeypot) answers as usual even if the store fails."""
    try:
        # Its own transaction, not the request's: a honeypot hit must be answered as usual even when the store fails.
        async with request.app.state.runtime.db.transaction() as session:
            quarantine_id = await quarantine_cases.quarantine_submission(
                session,
                source=source,
                reason=reason,
                problems=problems,
                content_type=content_type,
                body=raw_body,
                origin=origin,
                now=request_time(request),
                correlation_id=correlation_id(request),
            )
    except (SQLAlchemyError, OSError) as exc:
        if quiet:
            log.error("quarantine_store_failed", reason=reason, error=type(exc).__name__)
            return None
        raise unavailable(exc) from None
    # Never the body or the problems (they quote what the person typed): ids and the reason only.
    log.info(
        "submission_quarantined", quarantine_id=quarantine_id, source_id=source.id if source else None, reason=reason
    )
    return quarantine_id


async def quarantine_unlisted_origin(
    request: Request, exc: OriginNotAllowed, raw_body: bytes, content_type: str
) -> Response:
    """A landing page not yet in allowed_origins: its leads wait in quarantine for the origin to be added."""
    source = exc.source
    browser_form = content_type == FORM_CONTENT_TYPE
    wait = request.app.state.rate_limiter.wait((f"publishable:{source.id}", caller_address(request)))
    if wait > 0:
        error = problem(429, "too_many_requests", "slow down", {"Retry-After": str(max(1, round(wait + 0.5)))})
        if browser_form:
            return form_page(error.status_code, error.detail, error.headers)
        raise error
    problems = [{"field": "Origin", "reason": "not in the source's allowed_origins"}]
    await quarantine(request, source, "origin_not_allowed", problems, raw_body, content_type, exc.origin)
    if browser_form:
        # The person did everything right; the page's owner has to list it. Thank them as usual.
        return thank_you(source) or form_page(202, None)
    raise exc


_PAGES: dict[str, tuple[str, str]] = {
    "not_a_lead": (
        "Please tell us how to reach you",
        "We could not read an email address or a phone number in your form. Please go back and check them.",
    ),
    "too_many_requests": ("Please wait a moment", "Too many forms were sent from here. Please try again shortly."),
    "validation_failed": ("Please check the form", "Some fields could not be read. Please go back and check them."),
}


def form_page(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """A short readable page for a person at a browser form; names fields, never echoes what was typed."""
    code = detail.get("error") if isinstance(detail, dict) else None
    if status < 300:
        title, text = "Thank you", "We received your request and will be in touch."
    else:
        title, text = _PAGES.get(str(code), ("Sorry, that did not work", "Please try again later."))
    fields = [
        str(problem.get("field"))
        for problem in (detail.get("detail") if isinstance(detail, dict) else None) or []
        if isinstance(problem, dict) and problem.get("field")
    ]
    named = f"<p>Fields: {html.escape(', '.join(fields))}</p>" if fields and status == 422 else ""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family: system-ui, sans-serif; max-width: 36em; margin: 3em auto; padding: 0 1em">'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{named}</body></html>"
    )
    return HTMLResponse(page, status_code=status, headers=dict(headers) if headers else None)


def thank_you(source: Source | None) -> Response | None:
    if source is not None and source.thank_you_url:
        return RedirectResponse(source.thank_you_url, status_code=303)
    return None
