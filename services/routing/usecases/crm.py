"""Signals from a CRM (HubSpot, Salesforce): an activity or a stage change becomes a rep action, once.

Both connectors call `signal`. An activity (call, email, meeting, note, task) by the lead's current owner is a
`touch` and stops the clock; by anyone else it is written on the lead's timeline and stops nothing (someone else
calling the lead is not its owner working it). A stage change maps to `convert` or `disqualify`, whoever made it.
Every signal is remembered by the CRM's own reference (`source_ref`, e.g. HubSpot's eventId), in the transaction
that acts on it, so a redelivered webhook or a re-read page acts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from routing.domain.lifecycle import FINAL_STATUSES, ActionRefused
from routing.store.crm import CrmRepository
from routing.usecases import actions
from routing.usecases.context import RoutingContext

SignalKind = Literal["touch", "convert", "disqualify"]
KINDS: tuple[str, ...] = ("touch", "convert", "disqualify")
CRM_ACTIVITY = "crm_activity"  # the timeline entry of an activity that did not stop the clock


@dataclass(frozen=True)
class SignalResult:
    """What a signal did: touched | converted | disqualified | recorded (on the timeline only) | duplicate |
    unknown_lead (no lead linked to that record) | refused (the lead's state does not allow it, e.g. closed)."""

    result: str
    lead_id: str | None = None
    rep_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "lead_id": self.lead_id, "rep_id": self.rep_id}


async def signal(
    rt: RoutingContext,
    session: AsyncSession,
    system: str,
    *,
    kind: str,
    source_ref: str,
    external_id: str | None = None,
    lead_id: str | None = None,
    external_owner_id: str | None = None,
    occurred_at: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> SignalResult:
    """Act on one CRM signal about the lead linked to `external_id` (or `lead_id`), in the caller's transaction;
    ValueError for an unknown kind or a signal naming no record."""
    if kind not in KINDS:
        raise ValueError(f"unknown signal kind {kind!r}; choose from {list(KINDS)}")
    if not (external_id or lead_id):
        raise ValueError("a signal names the CRM record (external_id) or the lead (lead_id)")
    repo = CrmRepository(session)
    now = rt.clock()
    if not await repo.claim_signal(system, source_ref, kind, now):
        seen = await repo.signal(system, source_ref)
        return SignalResult("duplicate", seen.lead_id if seen else None)
    result = await _act(rt, session, repo, system, kind, external_id, lead_id, external_owner_id, occurred_at, detail)
    if result.result == "unknown_lead":
        # Not kept: a record of someone Handoff never routed says nothing, and a redelivery after the link is
        # written (an event can overtake the upsert's bookkeeping) should act.
        await repo.forget_signal(system, source_ref)
    else:
        await repo.settle_signal(system, source_ref, result.lead_id, result.result)
    return result


async def _act(
    rt: RoutingContext,
    session: AsyncSession,
    repo: CrmRepository,
    system: str,
    kind: str,
    external_id: str | None,
    lead_id: str | None,
    external_owner_id: str | None,
    occurred_at: datetime | None,
    detail: dict[str, Any] | None,
) -> SignalResult:
    if lead_id is None and external_id is not None:
        lead_id = await repo.lead_of(system, external_id)
    state = await repo.lead_state(lead_id) if lead_id else None
    if lead_id is None or state is None:
        return SignalResult("unknown_lead", lead_id)
    status, current_rep = state
    rep_id = await repo.rep_of(system, external_owner_id) if external_owner_id else None
    if status in FINAL_STATUSES:
        return SignalResult("refused", lead_id, rep_id)
    if kind == "touch" and (rep_id is None or rep_id != current_rep):
        at = occurred_at or rt.clock()
        repo.add_timeline(
            lead_id,
            rt.clock(),
            CRM_ACTIVITY,
            {
                "system": system,
                "rep_id": rep_id,
                "external_owner_id": external_owner_id,
                "occurred_at": at.isoformat(),
                "current_rep_id": current_rep,
                **(detail or {}),
            },
        )
        return SignalResult("recorded", lead_id, rep_id)
    reason = f"{system}: {detail.get('reason')}" if detail and detail.get("reason") else f"from {system}"
    try:
        async with session.begin_nested():
            await actions.act(
                rt,
                session,
                lead_id,
                kind,
                rep_id=rep_id if kind == "touch" else (rep_id or current_rep),
                reason=None if kind == "touch" else reason,
                correlation_id=None,
            )
    except (ActionRefused, LookupError):
        return SignalResult("refused", lead_id, rep_id)
    return SignalResult({"touch": "touched", "convert": "converted"}.get(kind, "disqualified"), lead_id, rep_id)
