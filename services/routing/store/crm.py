"""CRM connectors' questions (SQL only here): settings, owner mapping, lead links, inbound signals, the
connector's delivery endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from routing.store._base import Repository
from routing.store.crm_tables import ConnectorRow, CrmLinkRow, CrmOwnerRow, CrmSignalRow
from routing.store.tables import AssignmentRow, LeadRow, TimelineRow, WebhookEndpoint


class CrmRepository(Repository):
    """Everything a CRM connector asks of routing's database, on the caller's session."""

    def _insert(self) -> Any:
        return pg_insert if self._on_postgres() else sqlite_insert

    # -- settings ------------------------------------------------------------------------------------------------

    async def connector(self, system: str) -> ConnectorRow | None:
        return await self.session.get(ConnectorRow, system)

    def add(self, row: Any) -> None:
        self.session.add(row)

    async def flush(self) -> None:
        await self.session.flush()

    # -- owners ----------------------------------------------------------------------------------------------------

    async def owners(self, system: str) -> dict[str, str]:
        """rep id -> the CRM's owner id."""
        rows = await self.session.execute(
            select(CrmOwnerRow.rep_id, CrmOwnerRow.external_owner_id).where(CrmOwnerRow.system == system)
        )
        return {rep_id: owner for rep_id, owner in rows}

    async def set_owner(self, system: str, rep_id: str, external_owner_id: str | None) -> None:
        """Map a rep to an owner id (one to one: an owner id mapped to another rep moves); None unmaps the rep."""
        await self.session.execute(
            delete(CrmOwnerRow).where(
                CrmOwnerRow.system == system,
                (CrmOwnerRow.rep_id == rep_id) | (CrmOwnerRow.external_owner_id == (external_owner_id or "")),
            )
        )
        if external_owner_id:
            self.session.add(CrmOwnerRow(system=system, rep_id=rep_id, external_owner_id=external_owner_id))
        await self.session.flush()

    async def owner_of(self, system: str, rep_id: str) -> str | None:
        row = await self.session.get(CrmOwnerRow, (system, rep_id))
        return row.external_owner_id if row else None

    async def rep_of(self, system: str, external_owner_id: str) -> str | None:
        query = select(CrmOwnerRow.rep_id).where(
            CrmOwnerRow.system == system, CrmOwnerRow.external_owner_id == external_owner_id
        )
        return (await self.session.scalars(query)).first()

    # -- links -----------------------------------------------------------------------------------------------------

    async def link_of_lead(self, system: str, lead_id: str) -> CrmLinkRow | None:
        return await self.session.get(CrmLinkRow, (system, lead_id))

    async def forget_lead(self, lead_id: str) -> None:
        """An erased lead's links to CRM records go (a record id would tie the anonymous decision to the person)."""
        await self.session.execute(delete(CrmLinkRow).where(CrmLinkRow.lead_id == lead_id))

    async def lead_of(self, system: str, external_id: str) -> str | None:
        query = select(CrmLinkRow.lead_id).where(CrmLinkRow.system == system, CrmLinkRow.external_id == external_id)
        return (await self.session.scalars(query)).first()

    async def save_link(
        self, system: str, lead_id: str, external_id: str, owner_external_id: str | None, now: datetime
    ) -> None:
        """Tie the lead to its CRM record (the record id may change, e.g. after a merge there)."""
        await self.session.execute(
            delete(CrmLinkRow).where(
                CrmLinkRow.system == system, CrmLinkRow.external_id == external_id, CrmLinkRow.lead_id != lead_id
            )
        )
        values = {
            "system": system,
            "lead_id": lead_id,
            "external_id": external_id,
            "owner_external_id": owner_external_id,
            "updated_at": now,
        }
        statement = self._insert()(CrmLinkRow).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["system", "lead_id"],
            set_={"external_id": external_id, "owner_external_id": owner_external_id, "updated_at": now},
        )
        await self.session.execute(statement)

    # -- inbound signals ------------------------------------------------------------------------------------------

    async def claim_signal(self, system: str, source_ref: str, kind: str, now: datetime) -> bool:
        """Record a signal by the CRM's reference; False when it was seen before (it acts once)."""
        values = {"system": system, "source_ref": source_ref, "kind": kind, "result": "pending", "received_at": now}
        statement = (
            self._insert()(CrmSignalRow).values(**values).on_conflict_do_nothing().returning(CrmSignalRow.source_ref)
        )
        return (await self.session.execute(statement)).first() is not None

    async def settle_signal(self, system: str, source_ref: str, lead_id: str | None, result: str) -> None:
        row = await self.session.get(CrmSignalRow, (system, source_ref))
        if row is not None:
            row.lead_id, row.result = lead_id, result

    async def forget_signal(self, system: str, source_ref: str) -> None:
        await self.session.execute(
            delete(CrmSignalRow).where(CrmSignalRow.system == system, CrmSignalRow.source_ref == source_ref)
        )

    async def signal(self, system: str, source_ref: str) -> CrmSignalRow | None:
        return await self.session.get(CrmSignalRow, (system, source_ref))

    # -- the lead side ---------------------------------------------------------------------------------------------

    async def lead_state(self, lead_id: str) -> tuple[str, str | None] | None:
        """(status, current rep) of a lead routing knows."""
        row = (
            await self.session.execute(select(LeadRow.status, LeadRow.current_rep_id).where(LeadRow.lead_id == lead_id))
        ).first()
        return (row[0], row[1]) if row else None

    async def latest_assignment_id(self, lead_id: str) -> int | None:
        """The id of the lead's newest assignment (a reassignment gets a new, larger one)."""
        query = select(func.max(AssignmentRow.id)).where(AssignmentRow.lead_id == lead_id)
        value = (await self.session.execute(query)).scalar()
        return int(value) if value is not None else None

    def add_timeline(self, lead_id: str, at: datetime, kind: str, detail: dict[str, Any]) -> None:
        self.session.add(TimelineRow(lead_id=lead_id, at=at, kind=kind, detail=detail))

    # -- the connector's delivery endpoint ----------------------------------------------------------------------

    async def connector_endpoint(self, system: str) -> WebhookEndpoint | None:
        """The webhook endpoint whose deliveries go to this connector (its format names the system)."""
        query = select(WebhookEndpoint).where(WebhookEndpoint.format == system).order_by(WebhookEndpoint.created_at)
        return (await self.session.scalars(query)).first()
