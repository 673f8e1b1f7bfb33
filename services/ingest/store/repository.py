"""The questions ingest's use cases ask about sources, leads, their identities and Idempotency-Keys."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from common import sqlprep, sqlprep_session
from common.db import sqlite_time
from ingest.store import tables
from ingest.store.tables import ERASED_IDENTITY, Base, IdempotencyRecord, Lead, LeadIdentity, Source

# Built once (expanding list): the writer asks this for every batch, and building the statement cost more than
# running it.
_SIGHTINGS = (
    select(LeadIdentity.identity, LeadIdentity.seen_at, LeadIdentity.lead_id)
    .where(
        LeadIdentity.identity.in_(bindparam("identities", expanding=True)),
        LeadIdentity.seen_at >= bindparam("since", type_=LeadIdentity.seen_at.type),
    )
    .order_by(LeadIdentity.seen_at, LeadIdentity.id)
)
# The batch's other questions, built once too; the writer's SQLite transaction (batch_sqlite) asks the same ones.
# Both columns of uq_leads_source_external asked for: with the external ids alone SQLite scanned every lead.
EXTERNAL_LEADS = select(Lead.id, Lead.source_id, Lead.external_id, Lead.duplicate_of, Lead.is_test).where(
    Lead.source_id.in_(bindparam("source_ids", expanding=True)),
    Lead.external_id.in_(bindparam("external_ids", expanding=True)),
)
EARLIER_LEAD = (
    select(LeadIdentity.lead_id)
    .where(
        LeadIdentity.identity.in_(bindparam("identities", expanding=True)),
        LeadIdentity.seen_at >= bindparam("since", type_=LeadIdentity.seen_at.type),
    )
    .order_by(LeadIdentity.seen_at)
    .limit(1)
)
# The same read at the SQLite driver (common.sqlprep), the identities as one JSON array: one statement whatever
# their number (the same plan: the (identity, seen_at) index searched per identity).
SIGHTINGS_SQLITE = sqlprep.Statement(
    select(LeadIdentity.identity, LeadIdentity.seen_at, LeadIdentity.lead_id)
    .where(
        LeadIdentity.identity.in_(
            select(func.json_each(bindparam("identities")).table_valued("value")).scalar_subquery()
        ),
        LeadIdentity.seen_at >= bindparam("since", type_=LeadIdentity.seen_at.type),
    )
    .order_by(LeadIdentity.seen_at, LeadIdentity.id)
)


class IngestRepository:
    """Queries only; the entrypoint owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def source(self, source_id: str) -> Source | None:
        return await self.session.get(Source, source_id)

    async def source_by_key_hash(self, key_hash: str) -> Source | None:
        return (await self.session.execute(select(Source).where(Source.api_key_hash == key_hash))).scalar_one_or_none()

    async def source_by_publishable_key(self, key: str) -> Source | None:
        return (await self.session.execute(select(Source).where(Source.publishable_key == key))).scalar_one_or_none()

    async def sources(self) -> list[Source]:
        return list((await self.session.execute(select(Source).order_by(Source.created_at, Source.id))).scalars())

    async def sources_by_id(self, source_ids: Iterable[str]) -> dict[str, Source]:
        wanted = {source_id for source_id in source_ids if source_id}
        if not wanted:
            return {}
        rows = await self.session.execute(select(Source).where(Source.id.in_(wanted)))
        return {source.id: source for source in rows.scalars()}

    async def lead(self, lead_id: str) -> Lead | None:
        return await self.session.get(Lead, lead_id)

    async def lead_by_external_id(self, source_id: str, external_id: str) -> Lead | None:
        return (
            await self.session.execute(select(Lead).where(Lead.source_id == source_id, Lead.external_id == external_id))
        ).scalar_one_or_none()

    async def earlier_lead_for(self, identities: list[str], since: datetime) -> str | None:
        """The first lead with any of these identities seen since `since` (the original of a repeat)."""
        if not identities:
            return None
        row = (await self.session.execute(EARLIER_LEAD, {"identities": identities, "since": since})).first()
        return row[0] if row else None

    async def idempotency(self, scope_key: str) -> IdempotencyRecord | None:
        return await self.session.get(IdempotencyRecord, scope_key)

    # -- batches (the group-commit writer): one statement per question for a whole batch ----------------

    async def idempotency_many(self, scope_keys: Collection[str]) -> dict[str, IdempotencyRecord]:
        """The stored responses of these scoped keys, by key."""
        if not scope_keys:
            return {}
        rows = await self.session.execute(select(IdempotencyRecord).where(IdempotencyRecord.scope_key.in_(scope_keys)))
        return {record.scope_key: record for record in rows.scalars()}

    async def drop_idempotency(self, scope_keys: Collection[str]) -> None:
        """Forget expired keys, so they can be stored afresh in the same transaction."""
        if scope_keys:
            await self.session.execute(
                delete(IdempotencyRecord)
                .where(IdempotencyRecord.scope_key.in_(scope_keys))
                .execution_options(synchronize_session=False)
            )

    async def purge_idempotency(self, created_before: datetime, limit: int) -> int:
        """Delete up to `limit` keys stored before `created_before`; returns how many went."""
        oldest = (
            select(IdempotencyRecord.scope_key)
            .where(IdempotencyRecord.created_at < created_before)
            .order_by(IdempotencyRecord.created_at)
            .limit(limit)
        )
        result = await self.session.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.scope_key.in_(oldest.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def purge_identities(self, limit: int) -> int:
        """Delete up to `limit` identity rows of erased leads; returns how many went."""
        oldest = select(LeadIdentity.id).where(LeadIdentity.identity == ERASED_IDENTITY).limit(limit)
        result = await self.session.execute(
            delete(LeadIdentity)
            .where(LeadIdentity.id.in_(oldest.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def leads_by_external_ids(
        self, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str | None, bool]]:
        """(lead id, duplicate_of, is_test) of the leads already stored under these (source id, external id)."""
        if not keys:
            return {}
        rows = await self.session.execute(EXTERNAL_LEADS, external_lead_params(keys))
        return leads_by_key(rows.all(), keys)

    async def first_leads_for(self, identities: Collection[str], since: datetime) -> dict[str, tuple[datetime, str]]:
        """For each identity, (seen_at, lead id) of its earliest sighting since `since`."""
        if not identities:
            return {}
        # Every sighting in the window, earliest first (a person's few repeats at most): one plain indexed read that
        # costs less to build and run per batch than a grouped subquery joined back, and usually returns nothing.
        # On SQLite straight to the driver: the ORM's execute cost several times the read itself.
        wanted = list(identities)
        params = {"identities": orjson.dumps(wanted).decode(), "since": since}
        raw = await sqlprep_session.sqlite_fetch(self.session, SIGHTINGS_SQLITE, params)
        if raw is not None:
            return earliest_sightings(raw)
        found: dict[str, tuple[datetime, str]] = {}
        rows = await self.session.execute(_SIGHTINGS, {"identities": wanted, "since": since})
        for identity, seen_at, lead_id in rows.all():
            found.setdefault(identity, (seen_at, lead_id))
        return found

    async def insert_rows(self, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
        """One executemany: no ORM unit of work for rows written once and never changed here."""
        await sqlprep_session.insert_rows(self.session, model.__table__, rows)  # type: ignore[arg-type]

    async def insert_leads(self, leads: Sequence[tables.LeadRow], identities: Sequence[tables.IdentityRow]) -> None:
        """New leads and their identities, an executemany each."""
        if leads:
            await self.insert_rows(Lead, lead_dicts(leads))
        if identities:
            await self.insert_rows(LeadIdentity, [row._asdict() for row in identities])

    async def leads(
        self, *, source_id: str | None, since: datetime | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[Lead]:
        query = select(Lead).order_by(Lead.received_at.desc(), Lead.id.desc()).limit(limit)
        if source_id:
            query = query.where(Lead.source_id == source_id)
        if since:
            query = query.where(Lead.received_at >= since)
        if before:
            at, lead_id = before
            query = query.where((Lead.received_at < at) | ((Lead.received_at == at) & (Lead.id < lead_id)))
        return list((await self.session.execute(query)).scalars())

    async def leads_of_subject(self, identities: Collection[str], *, limit: int) -> list[Lead]:
        """Every lead (newest first) filed under any of these identity hashes: one person's leads. An erased lead's
        identities are forgotten, so it is not found again."""
        ids = select(LeadIdentity.lead_id).where(LeadIdentity.identity.in_(list(identities))).distinct()
        query = (
            select(Lead)
            .where(Lead.id.in_(ids.scalar_subquery()))
            .order_by(Lead.received_at.desc(), Lead.id.desc())
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars())

    async def forget_identities(self, lead_id: str) -> None:
        await self.session.execute(
            update(LeadIdentity).where(LeadIdentity.lead_id == lead_id).values(identity=ERASED_IDENTITY)
        )

    async def count_leads(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(Lead))).scalar_one())


def external_lead_params(keys: Collection[tuple[str, str]]) -> dict[str, list[str]]:
    """EXTERNAL_LEADS' values for these (source id, external id) pairs."""
    return {"source_ids": list({s for s, _ in keys}), "external_ids": list({e for _, e in keys})}


def leads_by_key(
    rows: Iterable[Any], keys: Collection[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str | None, bool]]:
    """EXTERNAL_LEADS' rows as (lead id, duplicate_of, is_test) by the (source id, external id) asked for."""
    wanted = set(keys)
    found: dict[tuple[str, str], tuple[str, str | None, bool]] = {}
    for lead_id, source_id, external_id, duplicate_of, is_test in rows:
        if source_id is not None and external_id is not None and (source_id, external_id) in wanted:
            found[(source_id, external_id)] = (lead_id, duplicate_of, bool(is_test))
    return found


def earliest_sightings(rows: Iterable[Any]) -> dict[str, tuple[datetime, str]]:
    """SIGHTINGS_SQLITE's rows (earliest first, times as SQLite's text) as each identity's first (seen_at, lead id)."""
    found: dict[str, tuple[datetime, str]] = {}
    for identity, seen_at, lead_id in rows:
        if identity not in found:
            found[identity] = (sqlite_time(seen_at), lead_id)
    return found


def lead_dicts(leads: Sequence[tables.LeadRow]) -> list[dict[str, Any]]:
    """Lead rows as Core inserts them: a dict each, the JSON text handed over as written (a Fragment)."""
    out = []
    for row in leads:
        values = row._asdict()
        values["data"] = orjson.Fragment(row.data)
        values["erased_at"] = None
        out.append(values)
    return out
