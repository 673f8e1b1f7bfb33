"""A rep acts through a signed link: the nonce is spent and the action made in one transaction, or neither."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from routing.access.links import ActionLink
from routing.store.access import AccessRepository
from routing.usecases import actions, roster
from routing.usecases.context import RoutingContext

DEFAULT_AWAY = timedelta(days=1)


class LinkUsed(ValueError):
    """The link's nonce was spent by an earlier use."""


async def act_by_link(
    rt: RoutingContext,
    session: AsyncSession,
    link: ActionLink,
    *,
    reason: str | None,
    until: datetime | None,
    correlation_id: str | None,
) -> dict[str, Any]:
    """Spend the link and act; raises LinkUsed, LookupError, PermissionError or ValueError (the action refused)."""
    now = rt.clock()
    rep = (await rt.roster(session)).rep(link.rep_id)
    if rep is None or rep.status == "left":
        raise PermissionError("this link's rep is no longer on the roster")
    spent = await AccessRepository(session).use_nonce(
        link.nonce, link.lead_id, link.action, link.rep_id, now, link.expires_at
    )
    if not spent:
        raise LinkUsed("this link was already used; each link acts once")
    if link.action == "away":
        back = until or now + DEFAULT_AWAY
        if back <= now:
            raise ValueError("until must be in the future")
        changes = {"ooo_from": now.isoformat(), "ooo_until": back.isoformat()}
        await roster.patch_rep(rt, session, link.rep_id, changes)
        return {"rep_id": link.rep_id, "away_until": back.isoformat()}
    return await actions.act(
        rt,
        session,
        link.lead_id,
        link.action,
        rep_id=link.rep_id,
        reason=reason,
        correlation_id=correlation_id,
        owner_only=link.action != "claim",
    )


async def link_used(session: AsyncSession, link: ActionLink) -> bool:
    """Whether the link was spent already (the confirmation page says so rather than offering a dead button)."""
    return await AccessRepository(session).nonce_used(link.nonce)


async def purge_spent_links(session: AsyncSession, now: datetime, batch: int) -> int:
    """Housekeeping: the nonces of links past their expiry go (such a link is refused before its nonce is read)."""
    return await AccessRepository(session).purge_nonces(now, batch)
