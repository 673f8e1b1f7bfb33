"""The audit trail: every change to the rules or the roster, with who made it and when.

A write route takes `Change` (ops-write) or `OwnChange` instead of a plain role check: the entry is added to the
route's own transaction after the route returns, so it commits with the change and is never written for a refused one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from common.session import Transaction
from common.web import problem
from routing.access.principal import Principal, Role, require
from routing.store.access import AccessRepository

AUDIT_PAGE_MAX = 200


def _now(request: Request) -> datetime:
    router = getattr(request.app.state, "router", None)
    return router.clock() if router is not None else datetime.now(UTC)


def record(
    session: AsyncSession, at: datetime, who: Principal, action: str, subject: str | None, **detail: Any
) -> None:
    """One audit entry in the caller's transaction."""
    AccessRepository(session).record(at, who.name, action, subject, {"role": who.role, **detail})


def audited(*roles: Role) -> Callable[..., AsyncIterator[Principal]]:
    """Dependency of routes that change rules or the roster: the roles allowed, and an audit entry on success."""
    guard = require(*roles)

    async def audit_change(request: Request, session: Transaction) -> AsyncIterator[Principal]:
        principal = await guard(request)
        yield principal
        route = request.scope.get("route")
        action = f"{request.method} {getattr(route, 'path', request.url.path)}"
        subject = ",".join(str(value) for value in request.path_params.values()) or None
        record(session, _now(request), principal, action, subject, path=request.url.path)

    audit_change.authenticates_before_body = guard  # type: ignore[attr-defined]  # run by common.web.HandoffRoute
    return audit_change


Change = Annotated[Principal, Depends(audited("ops-write"), scope="function")]
"""The caller of a route that changes rules or the roster (ops-write), audited when it succeeds."""

OwnChange = Annotated[Principal, Depends(audited("ops-write", "rep"), scope="function")]
"""As Change, and a rep too (the route limits a rep to their own record: `self_service`)."""

SELF_SERVICE_FIELDS = frozenset({"status", "ooo_from", "ooo_until"})


def self_service(who: Principal, rep_id: str, changes: Mapping[str, Any]) -> None:
    """A rep changes only their own availability: 403 naming what is not theirs to change."""
    if who.role != "rep":
        return
    if who.rep_id != rep_id:
        raise problem(403, "forbidden", "a rep token changes only its own rep's availability")
    other = sorted(set(changes) - SELF_SERVICE_FIELDS)
    if other or changes.get("status", "active") not in ("active", "away"):
        fields = other or ["status"]
        raise problem(
            403,
            "forbidden",
            [{"field": f, "reason": "a rep sets only status active/away, ooo_from, ooo_until"} for f in fields],
        )


async def entries(session: AsyncSession, before: int | None, limit: int) -> dict[str, Any]:
    """A page of the trail, newest first, and the cursor of the next (older) page."""
    rows = await AccessRepository(session).audit_page(before, min(max(limit, 1), AUDIT_PAGE_MAX))
    items = [
        {
            "id": row.id,
            "at": row.at.isoformat(),
            "who": row.actor,
            "action": row.action,
            "subject": row.subject,
            "detail": row.detail,
        }
        for row in rows
    ]
    return {"items": items, "next_before": items[-1]["id"] if len(items) == limit else None}
