"""The desk's questions: a rep's open leads (for a hand-over), the open leads already worked (for capacity), and
reps' calendar feeds as last read."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from sqlalchemy import delete, select

from routing.store._base import Repository
from routing.store.roster import read_worked
from routing.store.tables import LeadRow, RepCalendarRow

AwayWindows = tuple[tuple[datetime, datetime], ...]


class DeskRepository(Repository):
    async def open_leads_of(self, rep_id: str, statuses: Collection[str]) -> list[str]:
        """The leads a rep holds open now, oldest first (what a hand-over moves)."""
        query = (
            select(LeadRow.lead_id)
            .where(LeadRow.current_rep_id == rep_id, LeadRow.status.in_(list(statuses)))
            .order_by(LeadRow.routed_at, LeadRow.lead_id)
        )
        return list((await self.session.execute(query)).scalars())

    async def worked_open_leads(self) -> dict[str, int]:
        """Per rep, their open leads someone has touched already (they stop filling max_open by default)."""
        return await self._on_connection(read_worked)

    async def calendars(self) -> dict[str, RepCalendarRow]:
        rows = await self.session.execute(select(RepCalendarRow))
        return {row.rep_id: row for row in rows.scalars()}

    async def calendar(self, rep_id: str) -> RepCalendarRow | None:
        return await self.session.get(RepCalendarRow, rep_id)

    async def away_windows(self) -> dict[str, AwayWindows]:
        """Every rep's calendar away windows, as aware UTC datetimes."""
        rows = await self.session.execute(select(RepCalendarRow.rep_id, RepCalendarRow.away))
        return {
            rep_id: tuple((datetime.fromisoformat(start), datetime.fromisoformat(end)) for start, end in away)
            for rep_id, away in rows.all()
            if away
        }

    async def save_calendar(self, rep_id: str, values: Mapping[str, object]) -> RepCalendarRow:
        """Create or update a rep's calendar row with these column values."""
        row = await self.session.get(RepCalendarRow, rep_id)
        if row is None:
            row = RepCalendarRow(rep_id=rep_id, away=[], events=0)
            self.session.add(row)
        for name, value in values.items():
            setattr(row, name, value)
        return row

    async def forget_calendars(self, keep: Collection[str]) -> int:
        """Drop the calendar rows of reps who no longer have a feed; how many went."""
        result = await self.session.execute(delete(RepCalendarRow).where(RepCalendarRow.rep_id.not_in(list(keep))))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
