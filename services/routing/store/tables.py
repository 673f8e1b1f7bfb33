"""Routing's tables and the questions handlers ask of them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.consumer import processed_table
from common.db import new_metadata
from common.outbox import outbox_dead_table, outbox_table
from routing.domain.accounts import Account, company_key


class Base(DeclarativeBase):
    metadata = new_metadata()


class TeamRow(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RepRow(Base):
    __tablename__ = "reps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AccountRow(Base):
    __tablename__ = "accounts"

    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner_rep_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    # One row per domain; the rows of one account share its id (several domains, one owner).
    account_id: Mapped[str | None] = mapped_column(String(255), index=True)
    name_key: Mapped[str | None] = mapped_column(String(255), index=True)  # company_key(name), for name matches

    def to_account(self) -> Account:
        """The pure account this row stands for; a row of a several-domain account carries only its own domain."""
        account_id = self.account_id or self.domain
        return Account(id=account_id, owner=self.owner_rep_id, name=self.name, domains=(self.domain,))


class Setting(Base):
    """Small shared values: the roster version (bumped on every change) and the routing lock row."""

    __tablename__ = "routing_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class RulesetRow(Base):
    __tablename__ = "routing_rulesets"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_text: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RotationRow(Base):
    """Smooth weighted round robin position, written in the same transaction as each assignment."""

    __tablename__ = "rotation"

    team_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rep_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    current: Mapped[int] = mapped_column(Integer, default=0)


class RepLoadRow(Base):
    __tablename__ = "rep_loads"

    rep_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    open_leads: Mapped[int] = mapped_column(Integer, default=0)
    day: Mapped[str] = mapped_column(String(10), default="")
    assigned_today: Mapped[int] = mapped_column(Integer, default=0)


class LeadRow(Base):
    __tablename__ = "leads"
    __table_args__ = (Index("ix_leads_status_rep", "status", "current_rep_id"),)

    lead_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(24))  # assigned|queued|held|nurture|touched|converted|disqualified
    current_rep_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    grade: Mapped[str | None] = mapped_column(String(2))
    source_kind: Mapped[str | None] = mapped_column(String(32))
    source_id: Mapped[str | None] = mapped_column(String(36))
    duplicate_of: Mapped[str | None] = mapped_column(String(36))
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    # The lead view (lead, enrichment, score) used for routing and webhooks; personal data, emptied on erasure.
    view: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    routed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    first_touch_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reassignments: Mapped[int] = mapped_column(Integer, default=0)
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # One person's leads share a thread (the first lead routing saw of them), so a repeat finds the open one.
    thread_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # A repeat that joined an open lead (status "merged"): the lead it was recorded on.
    merged_into: Mapped[str | None] = mapped_column(String(36))


class AssignmentRow(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        # At most one current assignment per lead, enforced by the database itself.
        Index(
            "uq_assignments_current",
            "lead_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
        # Ids come from the database's counter (next_assignment_id): on SQLite AUTOINCREMENT never reuses one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(String(36), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    rep_id: Mapped[str | None] = mapped_column(String(64), index=True)
    team_id: Mapped[str | None] = mapped_column(String(64))
    rule_id: Mapped[str | None] = mapped_column(String(128))
    ruleset_version: Mapped[str] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sla_policy: Mapped[str | None] = mapped_column(String(16))
    sla_minutes: Mapped[float | None] = mapped_column(Float)
    sla_business_hours: Mapped[bool | None] = mapped_column(Boolean)
    sla_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_reason: Mapped[str | None] = mapped_column(String(32))


class TimelineRow(Base):
    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class SlaTimer(Base):
    """A durable timer: due rows are claimed and fired in one transaction, so each fires once."""

    __tablename__ = "sla_timers"
    __table_args__ = (
        Index(
            "ix_sla_timers_pending_due",
            "due_at",
            sqlite_where=text("fired_at IS NULL"),
            postgresql_where=text("fired_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(String(36), index=True)
    assignment_id: Mapped[int] = mapped_column(Integer, index=True)
    # warning | breach | hold | escalate (a detected breach whose reassignment is still to be made)
    kind: Mapped[str] = mapped_column(String(16))
    fraction: Mapped[float | None] = mapped_column(Float)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)


class ErasedLead(Base):
    __tablename__ = "erased_leads"

    lead_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


outbox = outbox_table(Base.metadata)
outbox_dead = outbox_dead_table(Base.metadata)
processed = processed_table(Base.metadata)

ROSTER_VERSION = "roster_version"
ESCALATE = "escalate"
ROUTING_LOCK = "routing_lock"


class RoutingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _on_postgres(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    async def lock_routing(self) -> None:
        """Serialize routing decisions across processes on PostgreSQL (rotation has no lost updates)."""
        if self._on_postgres():
            await self.session.execute(select(Setting).where(Setting.key == ROUTING_LOCK).with_for_update())

    async def roster_version(self) -> int:
        row = await self.session.get(Setting, ROSTER_VERSION)
        return row.value if row else 0

    async def bump_roster_version(self) -> None:
        row = await self.session.get(Setting, ROSTER_VERSION)
        if row is None:
            self.session.add(Setting(key=ROSTER_VERSION, value=1))
        else:
            row.value += 1

    async def teams(self) -> list[TeamRow]:
        return list((await self.session.execute(select(TeamRow).order_by(TeamRow.id))).scalars())

    async def reps(self) -> list[RepRow]:
        return list((await self.session.execute(select(RepRow).order_by(RepRow.id))).scalars())

    async def accounts(self) -> list[AccountRow]:
        return list((await self.session.execute(select(AccountRow).order_by(AccountRow.domain))).scalars())

    async def account_candidates(self, domains: Sequence[str], name_keys: Sequence[str]) -> list[AccountRow]:
        """The account rows a lead could match: its domains and their parents, or its company name."""
        if not domains and not name_keys:
            return []
        condition = or_(AccountRow.domain.in_(list(domains)), AccountRow.name_key.in_(list(name_keys)))
        return list((await self.session.execute(select(AccountRow).where(condition))).scalars())

    async def save_account(self, account_id: str, owner: str, name: str | None, domains: Sequence[str]) -> None:
        """Upsert one account: each of its domains a row, and every row of the account with the same owner and name."""
        key = company_key(name)
        for domain in domains:
            row = await self.session.get(AccountRow, domain.lower())
            if row is None:
                row = AccountRow(domain=domain.lower())
                self.session.add(row)
            row.account_id, row.owner_rep_id, row.name, row.name_key = account_id, owner, name, key
        await self.session.execute(
            update(AccountRow)
            .where(AccountRow.account_id == account_id)
            .values(owner_rep_id=owner, name=name, name_key=key)
        )

    async def active_ruleset(self) -> RulesetRow | None:
        return (
            await self.session.execute(select(RulesetRow).where(RulesetRow.active.is_(True)).limit(1))
        ).scalar_one_or_none()

    async def rotation(self) -> dict[str, dict[str, int]]:
        state: dict[str, dict[str, int]] = {}
        for row in (await self.session.execute(select(RotationRow))).scalars():
            state.setdefault(row.team_id, {})[row.rep_id] = row.current
        return state

    async def rotation_rows(self) -> list[RotationRow]:
        return list((await self.session.execute(select(RotationRow))).scalars())

    async def loads(self) -> dict[str, RepLoadRow]:
        return {row.rep_id: row for row in (await self.session.execute(select(RepLoadRow))).scalars()}

    async def lead(self, lead_id: str) -> LeadRow | None:
        return await self.session.get(LeadRow, lead_id)

    async def open_lead_in_thread(self, thread_id: str, closed: Collection[str]) -> LeadRow | None:
        """The person's lead that is still open (not closed, merged or erased), the latest if there are several."""
        query = (
            select(LeadRow)
            .where(
                or_(LeadRow.thread_id == thread_id, LeadRow.lead_id == thread_id),
                LeadRow.status.not_in(list(closed)),
                LeadRow.merged_into.is_(None),
                LeadRow.erased_at.is_(None),
            )
            .order_by(LeadRow.routed_at.desc(), LeadRow.lead_id)
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def seen(self, lead_id: str) -> tuple[bool, bool]:
        """(routed already, erased already), in one round trip and without loading a row (the consumer's
        question for every new lead)."""
        routed = select(LeadRow.lead_id).where(LeadRow.lead_id == lead_id).exists()
        erased = select(ErasedLead.lead_id).where(ErasedLead.lead_id == lead_id).exists()
        row = (await self.session.execute(select(routed, erased))).one()
        return bool(row[0]), bool(row[1])

    async def leads(self, lead_ids: set[str]) -> dict[str, LeadRow]:
        if not lead_ids:
            return {}
        rows = await self.session.execute(select(LeadRow).where(LeadRow.lead_id.in_(sorted(lead_ids))))
        return {row.lead_id: row for row in rows.scalars()}

    async def current_assignments(self, lead_ids: set[str]) -> dict[str, AssignmentRow]:
        if not lead_ids:
            return {}
        query = select(AssignmentRow).where(
            AssignmentRow.lead_id.in_(sorted(lead_ids)), AssignmentRow.ended_at.is_(None)
        )
        return {row.lead_id: row for row in (await self.session.execute(query)).scalars()}

    async def current_assignment(self, lead_id: str) -> AssignmentRow | None:
        return (
            await self.session.execute(
                select(AssignmentRow).where(AssignmentRow.lead_id == lead_id, AssignmentRow.ended_at.is_(None))
            )
        ).scalar_one_or_none()

    async def assignments(self, lead_id: str) -> list[AssignmentRow]:
        return list(
            (
                await self.session.execute(
                    select(AssignmentRow).where(AssignmentRow.lead_id == lead_id).order_by(AssignmentRow.id)
                )
            ).scalars()
        )

    async def timeline(self, lead_id: str) -> list[TimelineRow]:
        return list(
            (
                await self.session.execute(
                    select(TimelineRow).where(TimelineRow.lead_id == lead_id).order_by(TimelineRow.id)
                )
            ).scalars()
        )

    async def due_timers(self, now: datetime, limit: int, *, escalations: bool = False) -> list[SlaTimer]:
        """Due clock timers (warnings, breaches, holds), or with `escalations` the pending escalation markers."""
        kind = SlaTimer.kind == ESCALATE if escalations else SlaTimer.kind != ESCALATE
        query = (
            select(SlaTimer)
            .where(SlaTimer.fired_at.is_(None), SlaTimer.due_at <= now, kind)
            .order_by(SlaTimer.due_at)
            .limit(limit)
        )
        if self._on_postgres():
            # Two routing processes never claim the same timer; a killed one's rows unlock with its connection.
            query = query.with_for_update(skip_locked=True)
        return list((await self.session.execute(query)).scalars())

    async def next_assignment_id(self) -> int:
        """A new assignment id from the database's own counter, before the row is written (its timers, timeline
        and event carry it): distinct across concurrent transactions, and never reused, lock or no lock."""
        if self.session.get_bind().dialect.name == "postgresql":
            # The serial's sequence: nextval is atomic and outside transactions (a rollback leaves a gap).
            sequence = text("SELECT nextval(pg_get_serial_sequence('assignments', 'id'))")
            return int((await self.session.execute(sequence)).scalar_one())
        # AUTOINCREMENT's counter (migration 0004). SQLite has one writer at a time, so a counter bumped inside the
        # write transaction is atomic; rows inserted with this id keep it at the maximum.
        bumped = (
            await self.session.execute(
                text("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'assignments' RETURNING seq")
            )
        ).scalar_one_or_none()
        if bumped is not None:
            return int(bumped)
        first = int((await self.session.execute(select(func.max(AssignmentRow.id)))).scalar_one() or 0) + 1
        await self.session.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES ('assignments', :seq)"), {"seq": first}
        )
        return first

    async def claim_due_timers(self, now: datetime, limit: int) -> list[Any]:
        """Mark up to `limit` due clock timers fired and return them, in one statement: a burst of thousands is
        claimed without loading a row object each. Columns: id, lead_id, assignment_id, kind, fraction, due_at."""
        due = (
            select(SlaTimer.id)
            .where(SlaTimer.fired_at.is_(None), SlaTimer.due_at <= now, SlaTimer.kind != ESCALATE)
            .order_by(SlaTimer.due_at)
            .limit(limit)
        )
        if self._on_postgres():
            # Two routing processes never claim the same timer; a killed one's rows unlock with its connection.
            due = due.with_for_update(skip_locked=True)
        claimed = await self.session.execute(
            update(SlaTimer)
            .where(SlaTimer.id.in_(due.scalar_subquery()))
            .values(fired_at=now)
            .returning(
                SlaTimer.id, SlaTimer.lead_id, SlaTimer.assignment_id, SlaTimer.kind, SlaTimer.fraction, SlaTimer.due_at
            )
            .execution_options(synchronize_session=False)
        )
        # RETURNING keeps no order: fire in due order, so notices and timeline rows follow the clock.
        return sorted(claimed.all(), key=lambda row: (row.due_at, row.id))

    async def cancel_timers(self, timer_ids: Collection[int]) -> None:
        if timer_ids:
            await self.session.execute(
                update(SlaTimer)
                .where(SlaTimer.id.in_(timer_ids))
                .values(cancelled=True)
                .execution_options(synchronize_session=False)
            )

    async def clock_facts(self, lead_ids: Collection[str]) -> dict[str, Any]:
        """What an SLA notice says of each lead's running assignment, by lead id (no row objects, no JSON)."""
        if not lead_ids:
            return {}
        a, lead = AssignmentRow.__table__, LeadRow.__table__
        rows = await self.session.execute(
            select(
                a.c.lead_id,
                a.c.id,
                a.c.rep_id,
                a.c.team_id,
                a.c.sla_policy,
                a.c.sla_due_at,
                lead.c.grade,
                lead.c.source_kind,
            )
            .join(lead, lead.c.lead_id == a.c.lead_id)
            .where(a.c.lead_id.in_(sorted(lead_ids)), a.c.ended_at.is_(None))
        )
        return {row.lead_id: row for row in rows}

    async def escalation_facts(self, assignment_ids: Collection[int]) -> dict[int, tuple[Any, int]]:
        """By assignment id: the SLA policy kept with it (its `sla` in the decision) and its lead's ladder steps."""
        if not assignment_ids:
            return {}
        a, lead = AssignmentRow.__table__, LeadRow.__table__
        rows = await self.session.execute(
            select(a.c.id, a.c.decision["sla"].label("sla"), lead.c.reassignments)
            .join(lead, lead.c.lead_id == a.c.lead_id)
            .where(a.c.id.in_(sorted(assignment_ids)))
        )
        return {row.id: (row.sla, row.reassignments or 0) for row in rows}

    async def count_timeline(self, lead_id: str, kind: str, *, since: datetime) -> int:
        """How many timeline entries of one kind a lead has had since a moment (touches for a follow-up clock)."""
        query = select(func.count()).where(
            TimelineRow.lead_id == lead_id, TimelineRow.kind == kind, TimelineRow.at >= since
        )
        return int((await self.session.execute(query)).scalar_one())

    async def next_due(self) -> datetime | None:
        return (
            await self.session.execute(select(func.min(SlaTimer.due_at)).where(SlaTimer.fired_at.is_(None)))
        ).scalar_one_or_none()

    async def open_timers(self) -> int:
        """Timers waiting to fire (SLA warnings, breaches and holds)."""
        return int((await self.session.execute(select(func.count()).where(SlaTimer.fired_at.is_(None)))).scalar_one())

    async def count_routed_between(self, since: datetime, until: datetime) -> int:
        return int(
            (
                await self.session.execute(
                    select(func.count()).where(
                        LeadRow.routed_at >= since, LeadRow.routed_at < until, LeadRow.merged_into.is_(None)
                    )
                )
            ).scalar_one()
        )

    async def routed_between(self, since: datetime, until: datetime) -> list[LeadRow]:
        """Leads first routed in [since, until), in routing order (a backtest's input); a repeat that joined an
        open lead was never routed itself and is left out."""
        query = (
            select(LeadRow)
            .where(LeadRow.routed_at >= since, LeadRow.routed_at < until, LeadRow.merged_into.is_(None))
            .order_by(LeadRow.routed_at, LeadRow.lead_id)
        )
        return list((await self.session.execute(query)).scalars())

    async def closed_between(self, since: datetime, until: datetime) -> dict[str, datetime]:
        """When each lead routed in the window was converted or disqualified, if it was."""
        query = (
            select(AssignmentRow.lead_id, AssignmentRow.ended_at)
            .join(LeadRow, LeadRow.lead_id == AssignmentRow.lead_id)
            .where(
                LeadRow.routed_at >= since,
                LeadRow.routed_at < until,
                AssignmentRow.end_reason.in_(("converted", "disqualified")),
            )
        )
        return {
            lead_id: ended if ended.tzinfo else ended.replace(tzinfo=UTC)
            for lead_id, ended in (await self.session.execute(query)).all()
            if ended is not None
        }

    async def current_reps(self, lead_ids: set[str]) -> dict[str, str]:
        """The rep each of these leads is with now (leads with nobody are left out)."""
        found: dict[str, str] = {}
        ids = sorted(lead_ids)
        for start in range(0, len(ids), 500):
            query = select(LeadRow.lead_id, LeadRow.current_rep_id).where(
                LeadRow.lead_id.in_(ids[start : start + 500]), LeadRow.current_rep_id.is_not(None)
            )
            found.update({lead_id: rep_id for lead_id, rep_id in (await self.session.execute(query)).all() if rep_id})
        return found

    async def pending_timers(self, assignment_id: int) -> list[SlaTimer]:
        return list(
            (
                await self.session.execute(
                    select(SlaTimer).where(SlaTimer.assignment_id == assignment_id, SlaTimer.fired_at.is_(None))
                )
            ).scalars()
        )

    async def escalation_due(self, now: datetime) -> bool:
        """Whether any detected breach waits for its escalation (read before taking the routing lock)."""
        query = select(SlaTimer.id).where(
            SlaTimer.fired_at.is_(None), SlaTimer.due_at <= now, SlaTimer.kind == ESCALATE
        )
        return (await self.session.execute(query.limit(1))).first() is not None

    async def pending_escalations(self, lead_id: str) -> list[SlaTimer]:
        """This lead's breaches detected but not yet escalated."""
        query = select(SlaTimer).where(
            SlaTimer.lead_id == lead_id, SlaTimer.kind == ESCALATE, SlaTimer.fired_at.is_(None)
        )
        return list((await self.session.execute(query)).scalars())


# -- webhooks to sales tools -------------------------------------------------------------------------------


class WebhookEndpoint(Base):
    """A receiver of signed lead events; its secrets are stored encrypted (common.crypto): signing needs them."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(32))  # manual | gone | failing
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    secret: Mapped[str] = mapped_column(Text)
    # After a rotation the old secret still signs (a second signature) until this time.
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The first failure since the last success: the endpoint is disabled when this gets too old.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One message to one endpoint, written with its event; retried until it succeeds or the schedule ends."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("uq_webhook_deliveries_endpoint_message", "endpoint_id", "message_id", unique=True),
        Index("ix_webhook_deliveries_endpoint_status", "endpoint_id", "status", "created_at"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    # The `webhook-id` header: the event id, the same on every retry and replay.
    message_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    # The lead the event is about (its subject), so an erasure finds the bodies that carry the person's data.
    lead_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # The exact body, serialized once, so every attempt signs and sends the same bytes.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Attempts made in the current round (a replay starts a new round); indexes the retry schedule.
    schedule_step: Mapped[int] = mapped_column(Integer, default=0)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    replays: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(Base):
    """One HTTP exchange with a receiver, kept for the delivery log (the body read is capped)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempt_no: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The `webhook-timestamp` sent (Unix seconds).
    signed_at: Mapped[int] = mapped_column(BigInteger)
    # success | http_error | timeout | network_error | refused
    result: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)
    # What this attempt's outcome scheduled: the next attempt, or nothing (succeeded or given up).
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
