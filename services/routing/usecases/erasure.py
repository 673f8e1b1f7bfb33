"""Erasure: lead.erased deletes the person's data from routing; the anonymous decision record stays."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from common.erasure import anonymous_enrichment
from routing.store import RoutingRepository, TimelineRow
from routing.store.crm import CrmRepository
from routing.usecases.context import RoutingContext
from routing.webhooks import redact_deliveries, redact_resubmission_deliveries


async def on_erased(rt: RoutingContext, session: AsyncSession, erased: Event) -> None:
    """Delete the personal data; the anonymous decision record (rules, candidates, times) stays."""
    now = rt.clock()
    repo = RoutingRepository(session)
    await session.flush()  # a lead routed earlier in this batch is erased too
    await repo.mark_erased(erased.subject, now)
    lead = await repo.lead(erased.subject)
    if lead is not None and lead.erased_at is None:
        view = dict(lead.view or {})
        view["lead"] = {}
        view["enrichment"] = anonymous_enrichment(view.get("enrichment") or {})
        lead.view = view
        lead.erased_at = now
        session.add(TimelineRow(lead_id=lead.lead_id, at=now, kind="erased", detail={}))
    # A reject, convert or disqualify may say why in the rep's own words, which can name the person.
    for row in await repo.timeline(erased.subject):
        if row.kind in ("rejected", "converted", "disqualified") and (row.detail or {}).get("reason"):
            row.detail = {**row.detail, "reason": None}
        elif row.kind == "resubmitted" and (row.detail or {}).get("lead"):
            row.detail = {**row.detail, "lead": {}}  # what a repeat said, recorded on this (open) lead
    if lead is not None and lead.merged_into:
        # A repeat that joined an open lead: what it said is on that lead's timeline and webhook bodies.
        for row in await repo.timeline(lead.merged_into):
            detail = row.detail or {}
            if row.kind == "resubmitted" and detail.get("repeat_lead_id") == lead.lead_id and detail.get("lead"):
                row.detail = {**detail, "lead": {}}
        await redact_resubmission_deliveries(session, lead.merged_into, lead.lead_id)
    await redact_deliveries(session, erased.subject)
    await CrmRepository(session).forget_lead(erased.subject)  # CRM record ids would re-identify the person
    await session.flush()
