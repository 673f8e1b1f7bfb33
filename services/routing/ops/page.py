"""The /ops dashboard page: a token login that sets an HttpOnly cookie, the page, and its script and style."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from common.web import (
    OPS_COOKIE,
    OPS_COOKIE_MAX_AGE_S,
    HandoffRoute,
    has_ops_access,
    is_ops_token,
    issue_ops_cookie,
    problem,
)

router = APIRouter(tags=["ops"], route_class=HandoffRoute)

STATIC = Path(__file__).resolve().parent.parent / "static"

_PAGE_HEADERS = {
    # Scripts and styles come from this origin only: no inline code, no CDN.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_ASSETS = {"ops.js": "text/javascript; charset=utf-8", "ops.css": "text/css; charset=utf-8"}


@cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _login_page(message: str) -> HTMLResponse:
    body = _asset("login.html").replace(b"{{message}}", message.encode())
    return HTMLResponse(body, status_code=401, headers=_PAGE_HEADERS)


@router.get("/ops", include_in_schema=False)
async def ops_page(request: Request, token: str | None = Query(None, max_length=512)) -> Response:
    """The dashboard; `?token=` once (admin or ops token) sets an HttpOnly session cookie and drops the token."""
    if token is not None:
        if not is_ops_token(request.app.state.settings, token):
            return _login_page("That token is not valid.")
        response = RedirectResponse(request.url.path, status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            OPS_COOKIE,
            issue_ops_cookie(token),
            max_age=OPS_COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
    if not has_ops_access(request):
        return _login_page("Open this page with ?token= and the ops or admin token.")
    return HTMLResponse(_asset("ops.html"), headers=_PAGE_HEADERS)


@router.get("/ops/assets/{name}", include_in_schema=False)
async def ops_asset(name: str) -> Response:
    """The dashboard's script and style (code only, no data, so no token is needed)."""
    if name not in _ASSETS:
        raise problem(404, "not_found", "no such asset")
    return Response(_asset(name), media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"})
