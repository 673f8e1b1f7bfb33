"""Routes of who may do what: rep and staff tokens, the audit trail, and the signed action links' pages."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from common.session import ReadSession, Transaction
from common.web import HandoffRoute, problem
from routing.access import acting, audit, links, tokens
from routing.access.principal import Principal, require
from routing.usecases.context import RoutingContext

router = APIRouter(route_class=HandoffRoute)

Admin = Annotated[Principal, Depends(require())]
Writer = Annotated[Principal, Depends(require("ops-write"))]
Reader = Annotated[Principal, Depends(require("ops-read"))]
Anyone = Annotated[Principal, Depends(require("ops-read", "rep"))]
REJECT_REASONS = ("not_my_territory", "wrong_fit", "duplicate", "no_capacity", "other")


def _rt(request: Request) -> RoutingContext:
    rt: RoutingContext = request.app.state.router
    return rt


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="What the token is for (shown in the audit log)")
    role: str | None = Field(default=None, description="Staff tokens only: ops-write or ops-read")


# -- tokens ---------------------------------------------------------------------------------------------------------


@router.post("/v1/reps/{rep_id}/tokens", status_code=201, summary="Issue a rep an API token (shown once)")
async def issue_rep_token(
    rep_id: str, body: TokenIn, request: Request, session: Transaction, who: Writer
) -> dict[str, Any]:
    try:
        return await tokens.issue(session, _rt(request).clock(), who, role="rep", name=body.name, rep_id=rep_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc


@router.get("/v1/reps/{rep_id}/tokens", summary="A rep's tokens (never their secrets)")
async def list_rep_tokens(rep_id: str, session: ReadSession, who: Anyone) -> dict[str, Any]:
    if not who.may_act_for(rep_id):
        raise problem(403, "forbidden", "a rep token lists only its own rep's tokens")
    return {"items": await tokens.listed(session, rep_id)}


@router.delete("/v1/reps/{rep_id}/tokens/{token_id}", status_code=204, summary="Revoke a rep's token")
async def revoke_rep_token(rep_id: str, token_id: str, request: Request, session: Transaction, who: Anyone) -> None:
    if who.role == "ops-read" or not who.may_act_for(rep_id):
        raise problem(403, "forbidden", "only ops-write, or the rep themself, may revoke a rep's token")
    try:
        await tokens.revoke(session, _rt(request).clock(), who, token_id, rep_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc


@router.post("/v1/access/tokens", status_code=201, summary="Issue a staff token, ops-write or ops-read (admin)")
async def issue_staff_token(body: TokenIn, request: Request, session: Transaction, who: Admin) -> dict[str, Any]:
    try:
        return await tokens.issue(session, _rt(request).clock(), who, role=body.role or "", name=body.name)
    except ValueError as exc:
        raise problem(422, "validation_failed", [{"field": "role", "reason": str(exc)}]) from exc


@router.get("/v1/access/tokens", summary="Staff tokens (never their secrets)")
async def list_staff_tokens(session: ReadSession, who: Admin) -> dict[str, Any]:
    return {"items": await tokens.listed(session, None)}


@router.delete("/v1/access/tokens/{token_id}", status_code=204, summary="Revoke a staff token")
async def revoke_staff_token(token_id: str, request: Request, session: Transaction, who: Admin) -> None:
    try:
        await tokens.revoke(session, _rt(request).clock(), who, token_id, None)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc


# -- audit ----------------------------------------------------------------------------------------------------------


@router.get("/v1/audit", summary="Changes to rules, roster and tokens: who and when, newest first")
async def list_audit(
    session: ReadSession,
    who: Reader,
    before: Annotated[int | None, Query(ge=1, description="Entries older than this id (next_before)")] = None,
    limit: Annotated[int, Query(ge=1, le=audit.AUDIT_PAGE_MAX)] = 50,
) -> dict[str, Any]:
    return await audit.entries(session, before, limit)


# -- signed action links --------------------------------------------------------------------------------------------


def _page(status: int, title: str, body: str) -> HTMLResponse:
    document = (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='robots' content='noindex'>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",  # the link is a credential: never sent on as a Referer
        "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
    }
    return HTMLResponse(document, status_code=status, headers=headers)


def _verified(request: Request, token: str) -> links.ActionLink:
    settings = request.app.state.settings
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    try:
        return links.verify(links.link_keys(secret), token, _rt(request).clock())
    except links.LinkRefused as exc:
        status = 410 if "expired" in str(exc) else 403
        raise problem(status, "link_refused", str(exc)) from exc


def _form(link: links.ActionLink) -> str:
    fields = ""
    if link.action == "reject":
        options = "".join(f"<option value='{code}'>{code.replace('_', ' ')}</option>" for code in REJECT_REASONS)
        fields = f"<label>Reason <select name='reason' required>{options}</select></label> "
    if link.action == "away":
        fields = "<label>Away until (UTC) <input type='datetime-local' name='until'></label> "
    label = html.escape(links.LABELS[link.action])
    return f"<form method='post'>{fields}<button type='submit'>{label}</button></form>"


@router.get("/v1/links/{token}", summary="A signed action link's confirmation page (a GET never acts)")
async def link_page(token: str, request: Request, session: ReadSession) -> HTMLResponse:
    link = _verified(request, token)
    if await acting.link_used(session, link):
        return _page(409, "Link already used", "<p>This link was already used; each link acts once.</p>")
    what = f"{links.LABELS[link.action]}: lead {link.lead_id}" if link.action != "away" else "Set yourself away"
    return _page(200, what, f"<p>Rep {html.escape(link.rep_id)}. Confirm:</p>{_form(link)}")


@router.post("/v1/links/{token}", summary="Perform a signed link's action, once")
async def link_act(token: str, request: Request, session: Transaction) -> HTMLResponse:
    link = _verified(request, token)
    form = await request.form()
    reason, until_text = form.get("reason"), form.get("until")
    if link.action == "reject" and reason not in REJECT_REASONS:
        raise problem(422, "validation_failed", [{"field": "reason", "reason": f"one of {list(REJECT_REASONS)}"}])
    until = None
    if isinstance(until_text, str) and until_text:
        try:
            until = datetime.fromisoformat(until_text).replace(tzinfo=UTC)
        except ValueError as exc:
            raise problem(422, "validation_failed", [{"field": "until", "reason": "a date and time"}]) from exc
    try:
        done = await acting.act_by_link(
            _rt(request),
            session,
            link,
            reason=reason if isinstance(reason, str) else None,
            until=until,
            correlation_id=request.scope.get("state", {}).get("correlation_id"),
        )
    except acting.LinkUsed as exc:
        raise problem(409, "link_used", str(exc)) from exc
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except PermissionError as exc:
        raise problem(403, "forbidden", str(exc)) from exc
    except ValueError as exc:
        raise problem(409, "conflict", str(exc)) from exc
    status = html.escape(str(done.get("status") or done.get("away_until") or "done"))
    return _page(200, "Done", f"<p>{html.escape(links.LABELS[link.action])}: {status}.</p>")
