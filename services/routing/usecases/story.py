"""Story: where a lead went and why, read in one go (its row, every assignment, its timeline)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from routing.store import AssignmentRow, LeadRow, RoutingRepository, TimelineRow


@dataclass(frozen=True)
class LeadStory:
    lead: LeadRow
    assignments: list[AssignmentRow]
    timeline: list[TimelineRow]

    @property
    def current(self) -> AssignmentRow | None:
        return next((a for a in self.assignments if a.ended_at is None), None)


async def lead_story(session: AsyncSession, lead_id: str) -> LeadStory:
    """Raises LookupError for a lead routing has not seen."""
    repo = RoutingRepository(session)
    lead = await repo.lead(lead_id)
    if lead is None:
        raise LookupError("this lead has not been routed (yet)")
    return LeadStory(lead, await repo.assignments(lead_id), await repo.timeline(lead_id))
