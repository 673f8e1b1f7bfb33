"""Scoring's tables and the questions handlers ask of them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    bindparam,
    func,
    literal_column,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common import sqlprep_session
from common.consumer import processed_table
from common.db import UtcDateTime, as_utc, new_metadata
from common.envelope import dumps
from common.outbox import outbox_dead_table, outbox_table
from scoring.domain import Firmographic, OutcomeCounts


class Base(DeclarativeBase):
    metadata = new_metadata()


class ScoredLead(Base):
    __tablename__ = "scored_leads"

    lead_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_kind: Mapped[str | None] = mapped_column(String(32))
    duplicate_of: Mapped[str | None] = mapped_column(String(36), index=True)
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    # The lead as received (personal data: emptied on erasure) and the anonymous scoring record.
    lead: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    enrichment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    score: Mapped[dict[str, Any]] = mapped_column(JSON)
    conversion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Categorical, non-personal features kept for learning from outcomes after erasure.
    features: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    ruleset_version: Mapped[str] = mapped_column(String(64))
    grade: Mapped[str] = mapped_column(String(2))
    qualified: Mapped[bool] = mapped_column(Boolean)
    received_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    scored_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    outcome: Mapped[str | None] = mapped_column(String(32))
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RulesetVersion(Base):
    __tablename__ = "rulesets"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_text: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class FirmographicRow(Base):
    __tablename__ = "firmographics"

    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    employee_band: Mapped[str | None] = mapped_column(String(32))
    industry: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str | None] = mapped_column(String(2))
    revenue_band: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OutcomeCount(Base):
    """Per-(feature, value) counts of won and lost leads: anonymous, kept through erasure."""

    __tablename__ = "outcome_counts"

    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    won: Mapped[int] = mapped_column(Integer, default=0)
    lost: Mapped[int] = mapped_column(Integer, default=0)


class ErasedLead(Base):
    """A tombstone: an erasure may overtake the lead's own events, which then must not bring its data back."""

    __tablename__ = "erased_leads"

    lead_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """Who changed the scoring ruleset, and when (newest first by id); routing keeps its own trail."""

    __tablename__ = "audit_log"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


scored_leads: Table = ScoredLead.__table__  # type: ignore[assignment]  # the Core table, for batch inserts
outbox = outbox_table(Base.metadata)
outbox_dead = outbox_dead_table(Base.metadata)
processed = processed_table(Base.metadata)

TOTAL = ("__total__", "__total__")


class _SerializedJson(TypeDecorator[str]):
    """A JSON column bound from the JSON text the caller serialized (once, for the row and its event alike)."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


class _BoundTime(TypeDecorator[Any]):
    """A time column bound from what `_time_binder` made of the value (once per distinct value in a batch)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


class _BoundFlag(_BoundTime):
    """A flag bound as the caller's bool (sqlite3 stores 1 or 0, as Boolean would): no row processed a row."""

    impl: Any = Boolean


@functools.lru_cache(maxsize=8)
def _time_binder(dialect: Dialect) -> Callable[[datetime | None], Any]:
    """What UtcDateTime binds on `dialect`: SQLite's text, elsewhere the aware UTC datetime (built once a dialect)."""
    to_text = UtcDateTime().bind_processor(dialect) if dialect.name == "sqlite" else None
    if to_text is not None:
        return to_text
    return lambda value: None if value is None else as_utc(value)


def _scored_table() -> Table:
    """scored_leads as `insert_scored` writes it: its JSON, time and flag columns bound as given."""
    columns = []
    for column in scored_leads.columns:
        kind = column.type
        if isinstance(kind, JSON):
            kind = _SerializedJson()
        elif isinstance(kind, UtcDateTime):
            kind = _BoundTime()
        elif isinstance(kind, Boolean):
            kind = _BoundFlag()
        columns.append(Column(column.name, kind, primary_key=column.primary_key))
    return Table(scored_leads.name, MetaData(), *columns)


SCORED_JSON_COLUMNS = ("lead", "enrichment", "score", "conversion", "features")
_SCORED_TIME_COLUMNS = ("received_at", "scored_at", "erased_at")
_SCORED_TABLE = _scored_table()

# A batch's state and the transaction's facts (`ScoringRepository.batch_state`), built once: the scored and erased
# among the ids; the active ruleset's version; a firmographics row and the outcomes' total row, if any exist.
_STATE_SQLITE = (
    "SELECT 's', lead_id FROM scored_leads WHERE lead_id IN (SELECT value FROM json_each(?1))"
    " UNION ALL SELECT 'e', lead_id FROM erased_leads WHERE lead_id IN (SELECT value FROM json_each(?1))"
)
_FACTS_SQLITE = (
    " UNION ALL SELECT 'r', version FROM (SELECT version FROM rulesets WHERE active = 1 LIMIT 1)"
    " UNION ALL SELECT 'f', domain FROM (SELECT domain FROM firmographics LIMIT 1)"
    " UNION ALL SELECT 'o', feature FROM outcome_counts WHERE feature = '__total__' AND value = '__total__'"  # TOTAL
)
# By (one id, facts): a poll of one lead (low rates) binds its id as itself, which SQLite answers faster than json_each.
_ONE = _STATE_SQLITE.replace("IN (SELECT value FROM json_each(?1))", "= ?1")
_STATE_SQL = {(o, f): (_ONE if o else _STATE_SQLITE) + _FACTS_SQLITE * f for o in (0, 1) for f in (0, 1)}
_FACT_NAMES = {"r": "ruleset", "f": "firmographics", "o": "outcomes"}


def _state_core(facts: bool) -> Any:
    ids: Any = bindparam("ids", expanding=True)
    parts: list[Any] = [
        select(literal_column("'s'", String), ScoredLead.lead_id).where(ScoredLead.lead_id.in_(ids)),
        select(literal_column("'e'", String), ErasedLead.lead_id).where(ErasedLead.lead_id.in_(ids)),
    ]
    if facts:
        active = select(RulesetVersion.version).where(RulesetVersion.active.is_(True)).limit(1).subquery()
        company = select(FirmographicRow.domain).limit(1).subquery()
        parts += [
            select(literal_column("'r'", String), active.c.version),
            select(literal_column("'f'", String), company.c.domain),
            select(literal_column("'o'", String), OutcomeCount.feature).where(
                OutcomeCount.feature == TOTAL[0], OutcomeCount.value == TOTAL[1]
            ),
        ]
    return union_all(*parts)


_STATE_CORE = {False: _state_core(False), True: _state_core(True)}


class ScoringRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def active_ruleset(self) -> RulesetVersion | None:
        return (
            await self.session.execute(select(RulesetVersion).where(RulesetVersion.active.is_(True)).limit(1))
        ).scalar_one_or_none()

    async def ruleset(self, version: str) -> RulesetVersion | None:
        return await self.session.get(RulesetVersion, version)

    async def save_ruleset(self, version: str, text: str, now: datetime) -> None:
        """Store a ruleset version unless it is stored already (equal content, equal version)."""
        if await self.ruleset(version) is None:
            self.session.add(RulesetVersion(version=version, source_text=text, created_at=now))
            await self.session.flush()

    async def activate(self, version: str, now: datetime) -> None:
        await self.session.execute(update(RulesetVersion).where(RulesetVersion.active.is_(True)).values(active=False))
        await self.session.execute(
            update(RulesetVersion).where(RulesetVersion.version == version).values(active=True, activated_at=now)
        )

    def record(self, at: datetime, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> None:
        """One audit entry, in the caller's transaction (written with the change it describes)."""
        self.session.add(AuditEntry(at=at, actor=actor, action=action, subject=subject, detail=detail))

    async def audit_page(self, before_id: int | None, limit: int) -> Sequence[AuditEntry]:
        """Audit entries newest first, those older than `before_id` when given."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(AuditEntry.id < before_id)
        return (await self.session.scalars(query)).all()

    async def scored(self, lead_id: str) -> ScoredLead | None:
        return await self.session.get(ScoredLead, lead_id)

    async def insert_scored(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store a batch's scored leads in one executemany INSERT (every row with every column of scored_leads).

        The JSON columns (`SCORED_JSON_COLUMNS`) come as JSON text, serialized by the caller ("null" for none, as
        the JSON type stores None); the times as datetimes, bound once per distinct value (a batch's rows share
        their scored_at)."""
        if not rows:
            return
        bind = _time_binder(self.session.get_bind().dialect)
        bound: dict[datetime | None, Any] = {None: None}
        for row in rows:  # in place: the rows are the caller's, built for this INSERT
            for key in _SCORED_TIME_COLUMNS:
                value = row[key]
                if value not in bound:
                    bound[value] = bind(value)
                row[key] = bound[value]
        # On SQLite straight to the driver as tuples (common.sqlprep); elsewhere one Core executemany.
        await sqlprep_session.insert_rows(self.session, _SCORED_TABLE, rows)

    async def mark_erased(self, lead_id: str, now: datetime) -> None:
        """Leave the erasure's tombstone, once."""
        if await self.session.get(ErasedLead, lead_id) is None:
            self.session.add(ErasedLead(lead_id=lead_id, erased_at=now))

    async def save_firmographics(self, items: Sequence[Firmographic], now: datetime) -> None:
        """Insert or replace company facts by domain, in chunks of 500 domains per query."""
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            existing = await self.firmographics_by_domain([item.domain.lower() for item in chunk])
            for item in chunk:
                values = {
                    "name": item.name,
                    "employee_band": item.employee_band,
                    "industry": item.industry,
                    "country": item.country,
                    "revenue_band": item.revenue_band,
                    "updated_at": now,
                }
                row = existing.get(item.domain.lower())
                if row is None:
                    self.session.add(FirmographicRow(domain=item.domain.lower(), **values))
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
            await self.session.flush()

    async def has_firmographics(self) -> bool:
        """Whether the firmographics table has any row (most lookups are skipped while it is empty)."""
        return (await self.session.execute(select(FirmographicRow.domain).limit(1))).first() is not None

    async def has_outcomes(self) -> bool:
        """Whether any sales outcome has been counted yet."""
        return await self.session.get(OutcomeCount, TOTAL) is not None

    async def firmographics_by_domain(self, domains: list[str]) -> dict[str, FirmographicRow]:
        """The stored rows among `domains`, by domain."""
        if not domains:
            return {}
        result = await self.session.execute(select(FirmographicRow).where(FirmographicRow.domain.in_(domains)))
        return {row.domain: row for row in result.scalars()}

    async def repeat_counts(self, roots: list[str]) -> dict[str, int]:
        """Per original lead, how many leads of the same person are stored (the original and its repeats)."""
        originals = (
            select(ScoredLead.lead_id, func.count()).where(ScoredLead.lead_id.in_(roots)).group_by(ScoredLead.lead_id)
        )
        repeats = (
            select(ScoredLead.duplicate_of, func.count())
            .where(ScoredLead.duplicate_of.in_(roots), ScoredLead.duplicate_of != ScoredLead.lead_id)
            .group_by(ScoredLead.duplicate_of)
        )
        counts: dict[str, int] = {}
        for root, n in await self.session.execute(originals.union_all(repeats)):
            counts[root] = counts.get(root, 0) + int(n)
        return counts

    async def outcome_counts(
        self, features: list[tuple[str, str]], *, values_per_field: dict[str, int] | None = None
    ) -> OutcomeCounts:
        """The won/lost totals, the counts of the lead's own feature values, and how many values each field has.

        `values_per_field` (from `values_per_field()`) saves its query when the caller already has it.
        """
        wanted = set(features)
        # Columns, not row objects: counts change by upserts in the database, which the identity map never sees.
        rows = await self.session.execute(
            select(OutcomeCount.feature, OutcomeCount.value, OutcomeCount.won, OutcomeCount.lost).where(
                tuple_(OutcomeCount.feature, OutcomeCount.value).in_([*wanted, TOTAL])
            )
        )
        by_feature = {(r.feature, r.value): (r.won, r.lost) for r in rows}
        won_total, lost_total = by_feature.pop(TOTAL, (0, 0))
        if values_per_field is None and by_feature:
            values_per_field = await self.values_per_field()
        return OutcomeCounts(
            won_total=won_total, lost_total=lost_total, by_feature=by_feature, values_per_field=values_per_field or {}
        )

    async def values_per_field(self) -> dict[str, int]:
        """How many distinct values of each feature field have been seen in outcomes."""
        result = await self.session.execute(
            select(OutcomeCount.feature, func.count())
            .where(OutcomeCount.feature != TOTAL[0])
            .group_by(OutcomeCount.feature)
        )
        return {feature: int(count) for feature, count in result}

    async def add_outcome(self, features: list[tuple[str, str]], *, won: bool) -> None:
        """Count one won or lost lead under each of its feature values and the total."""
        # One atomic upsert (`n = n + 1` in the database), never read-modify-write: two consumers counting
        # outcomes at once would each write back their own n + 1 and lose the other's increment.
        rows = [
            {"feature": feature, "value": value, "won": int(won), "lost": int(not won)}
            for feature, value in dict.fromkeys([*features, TOTAL])
        ]
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert(OutcomeCount) if dialect == "postgresql" else sqlite_insert(OutcomeCount)
        table = OutcomeCount.__table__
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=[table.c.feature, table.c.value],
                set_={"won": table.c.won + insert.excluded.won, "lost": table.c.lost + insert.excluded.lost},
            ),
            rows,
        )

    async def batch_state(self, lead_ids: list[str], *, facts: bool) -> tuple[set[str], set[str], dict[str, str]]:
        """The scored and the erased among the leads and, with `facts`, the transaction's facts ("ruleset": the active
        version; "firmographics", "outcomes": present if any exist) in one statement (on SQLite at the driver)."""
        one = len(lead_ids) == 1
        param = lead_ids[0] if one else dumps(lead_ids).decode()
        rows: Sequence[Any] | None = await sqlprep_session.sqlite_rows(self.session, _STATE_SQL[one, facts], (param,))
        if rows is None:  # not the inline SQLite dialect
            rows = (await self.session.execute(_STATE_CORE[facts], {"ids": lead_ids})).all()
        scored, erased = {v for k, v in rows if k == "s"}, {v for k, v in rows if k == "e"}
        return scored, erased, {_FACT_NAMES[k]: v for k, v in rows if k in _FACT_NAMES}
