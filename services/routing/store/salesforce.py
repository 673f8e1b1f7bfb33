"""What the Salesforce connector asks of routing's database beyond the shared CRM questions (routing.store.crm):
which of a page's records are linked to leads, and the polling cursor kept in the `connectors` row."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select

from routing.store._base import Repository
from routing.store.crm_tables import ConnectorRow, CrmLinkRow, CrmOwnerRow
from routing.store.tables import LeadRow, WebhookEndpoint

CURSOR_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class SalesforceRepository(Repository):
    """On the caller's session; never commits."""

    async def linked_leads(self, system: str, external_ids: Iterable[str]) -> dict[str, str]:
        """external id -> lead id, for those of `external_ids` linked to a lead (one query per page read)."""
        wanted = sorted(set(external_ids))
        if not wanted:
            return {}
        rows = await self.session.execute(
            select(CrmLinkRow.external_id, CrmLinkRow.lead_id).where(
                CrmLinkRow.system == system, CrmLinkRow.external_id.in_(wanted)
            )
        )
        return {external_id: lead_id for external_id, lead_id in rows}

    async def setup(self, system: str, lead_id: str, event_rep_id: str | None) -> dict[str, Any]:
        """What one delivery needs in one read: the connector row, the lead's link, and its rep now (the event's
        rep for a lead routing does not hold) with that rep's owner id. The rep now, not the event's: a retried
        older delivery must not hand the record back to a rep the lead has since left."""
        connector = await self.session.get(ConnectorRow, system)
        link = await self.session.get(CrmLinkRow, (system, lead_id))
        lead = (await self.session.execute(select(LeadRow.current_rep_id).where(LeadRow.lead_id == lead_id))).first()
        rep_id = lead[0] if lead is not None else event_rep_id
        owner = await self.session.get(CrmOwnerRow, (system, rep_id)) if rep_id else None
        return {
            "enabled": bool(connector and connector.enabled),
            "config": dict(connector.config) if connector else None,
            "rep_id": rep_id,
            "owner": owner.external_owner_id if owner else None,
            "link": link.external_id if link else None,
        }

    async def save_settings(
        self, system: str, config: dict[str, Any], enabled: bool, now: datetime, *, cursor_from: datetime
    ) -> ConnectorRow:
        """Store the connector's settings; a new connector's cursor starts at `cursor_from` (history before it
        has no linked leads); an existing one keeps where it is."""
        row = await self.session.get(ConnectorRow, system, with_for_update=True)
        if row is None:
            start = cursor_from.astimezone(UTC).strftime(CURSOR_FORMAT)
            cursor = {name: start for name in ("Task", "Event", "Lead")}
            row = ConnectorRow(
                system=system, enabled=enabled, config=config, cursor=orjson.dumps(cursor).decode(), updated_at=now
            )
            self.session.add(row)
        else:
            row.config, row.enabled, row.updated_at = config, enabled, now
        await self.session.flush()
        return row

    async def settings(self, system: str) -> ConnectorRow | None:
        return await self.session.get(ConnectorRow, system)

    async def delivery_endpoint(self, system: str) -> WebhookEndpoint | None:
        """The webhook endpoint whose deliveries this connector makes (its format names the system)."""
        rows = await self.session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.format == system).order_by(WebhookEndpoint.created_at)
        )
        return rows.first()

    def add(self, row: Any) -> None:
        self.session.add(row)

    async def cursor(self, system: str) -> tuple[bool, dict[str, Any] | None, dict[str, str]]:
        """(enabled, config, cursor by object) of the connector; config None when it is not set up."""
        row = await self.session.get(ConnectorRow, system)
        if row is None:
            return False, None, {}
        return row.enabled, dict(row.config), _cursor(row.cursor)

    async def advance_cursor(self, system: str, sobject: str, stamp: datetime) -> None:
        """Move `sobject`'s cursor forward to `stamp` (never back: another process may have gone further)."""
        row = await self.session.get(ConnectorRow, system, with_for_update=True)
        if row is None:
            return
        cursor = _cursor(row.cursor)
        stamped = stamp.astimezone(UTC).strftime(CURSOR_FORMAT)  # fixed width: compares as text
        if cursor.get(sobject, "") < stamped:
            cursor[sobject] = stamped
            row.cursor = orjson.dumps(cursor, option=orjson.OPT_SORT_KEYS).decode()


def _cursor(text: str | None) -> dict[str, str]:
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
