"""Routing's tables: roster, leads, assignments, timelines, SLA timers, webhook endpoints and deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.consumer import processed_table
from common.db import UtcDateTime, new_metadata
from common.outbox import outbox_dead_table, outbox_table
from routing.domain.accounts import Account


class Base(DeclarativeBase):
    metadata = new_metadata()


class TeamRow(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RepRow(Base):
    __tablename__ = "reps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


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
    __table_args__ = (
        Index("ix_leads_status_rep", "status", "current_rep_id"),
        # Repeats only: a first lead's thread is NULL, read as its own id (migration 0017).
        Index(
            "ix_leads_thread_id",
            "thread_id",
            sqlite_where=text("thread_id IS NOT NULL"),
            postgresql_where=text("thread_id IS NOT NULL"),
        ),
    )

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
    received_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    routed_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    first_touch_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reassignments: Mapped[int] = mapped_column(Integer, default=0)
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # One person's leads share a thread (the first lead routing saw of them), so a repeat finds the open one.
    thread_id: Mapped[str | None] = mapped_column(String(36))
    # A repeat that joined an open lead (status "merged"): the lead it was recorded on.
    merged_into: Mapped[str | None] = mapped_column(String(36))


class AssignmentRow(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        # At most one current assignment per lead, enforced by the database itself: the current one's key is
        # (lead, 0), an ended one's (lead, its id). The same index finds a lead's assignments (migration 0019).
        Index(
            "uq_assignments_lead",
            "lead_id",
            text("(CASE WHEN ended_at IS NULL THEN 0 ELSE id END)"),
            unique=True,
        ),
        # Ids come from the database's counter (next_assignment_id): on SQLite AUTOINCREMENT never reuses one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(String(36))  # indexed by uq_assignments_lead
    outcome: Mapped[str] = mapped_column(String(16))
    rep_id: Mapped[str | None] = mapped_column(String(64))  # not indexed: no query asks by it (0017)
    team_id: Mapped[str | None] = mapped_column(String(64))
    rule_id: Mapped[str | None] = mapped_column(String(128))
    ruleset_version: Mapped[str] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sla_policy: Mapped[str | None] = mapped_column(String(16))
    sla_minutes: Mapped[float | None] = mapped_column(Float)
    sla_business_hours: Mapped[bool | None] = mapped_column(Boolean)
    sla_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))


class TimelineRow(Base):
    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
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
        Index(
            "ix_sla_timers_escalate_at",
            "escalate_at",
            sqlite_where=text("escalate_at IS NOT NULL"),
            postgresql_where=text("escalate_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Not indexed (migration 0016): a lead's timers are found through its assignments (timers_of_lead).
    lead_id: Mapped[str] = mapped_column(String(36))
    assignment_id: Mapped[int] = mapped_column(Integer, index=True)
    # warning | breach | hold | escalate (a detected breach whose reassignment is still to be made)
    kind: Mapped[str] = mapped_column(String(16))
    fraction: Mapped[float | None] = mapped_column(Float)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    # A fired breach (or hold) whose follow-up (the ladder's step, routing again) is still to be made: the
    # escalation marker, on the timer row itself; cleared in the transaction that escalates.
    escalate_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SlaTimerCount(Base):
    """Open timers, kept by triggers on sla_timers (migration 0013) so the gauge never counts the table:
    SQLite keeps one row (shard 0); PostgreSQL a row per server process (its pid), so writers never wait on
    each other, folded into shard 0 when the process is gone."""

    __tablename__ = "sla_timer_counts"

    shard: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    open: Mapped[int] = mapped_column(BigInteger, default=0)


class RepWorkedCount(Base):
    """Each rep's worked open leads (open, with a rep and a first touch: what capacity takes off max_open), kept
    by triggers on leads (migration 0018) in every writing transaction, so a poll reads a row a rep instead of
    counting the touched open leads. SQLite: one row a rep (shard 0); PostgreSQL: a row a rep and server process
    (its pid), folded into shard 0 when the process is gone, as SlaTimerCount."""

    __tablename__ = "rep_worked_counts"

    rep_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    worked: Mapped[int] = mapped_column(BigInteger, default=0)


class ErasedLead(Base):
    __tablename__ = "erased_leads"

    lead_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime)


outbox = outbox_table(Base.metadata)
outbox_dead = outbox_dead_table(Base.metadata)
processed = processed_table(Base.metadata)

ROSTER_VERSION = "roster_version"
ESCALATE = "escalate"
ROUTING_LOCK = "routing_lock"


# -- webhooks to sales tools -------------------------------------------------------------------------------


class WebhookEndpoint(Base):
    """A receiver of signed lead events; its secrets are stored encrypted (common.crypto): signing needs them."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON)
    # The body's shape: standard (Standard Webhooks), slack (Block Kit) or teams (an Adaptive Card).
    format: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(32))  # manual | gone | failing
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    secret: Mapped[str] = mapped_column(Text)
    # After a rotation the old secret still signs (a second signature) until this time.
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The first failure since the last success: the endpoint is disabled when this gets too old.
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


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
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Attempts made in the current round (a replay starts a new round); indexes the retry schedule.
    schedule_step: Mapped[int] = mapped_column(Integer, default=0)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    replays: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebhookAttempt(Base):
    """One HTTP exchange with a receiver, kept for the delivery log (the body read is capped)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempt_no: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The `webhook-timestamp` sent (Unix seconds).
    signed_at: Mapped[int] = mapped_column(BigInteger)
    # success | http_error | timeout | network_error | refused
    result: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)
    # What this attempt's outcome scheduled: the next attempt, or nothing (succeeded or given up).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AccessTokenRow(Base):
    """A named credential: a rep's API token or a staff token (ops-write, ops-read); only its sha256 is kept."""

    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # rep | ops-write | ops-read
    rep_id: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UsedLinkNonce(Base):
    """A signed action link's nonce, written in the action's own transaction: a link acts once."""

    __tablename__ = "used_link_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    lead_id: Mapped[str] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(16))
    rep_id: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class AuditRow(Base):
    """Who changed rules or the roster, and when (newest first by id)."""

    __tablename__ = "audit_log"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


# -- the desk: reps' availability (issue 15) ---------------------------------------------------------------


class RepCalendarRow(Base):
    """A rep's iCalendar feed as last read: the away windows its all-day events give, and how the last fetch went
    (a failed fetch keeps the windows of the last good one, and says why on the rep's availability)."""

    __tablename__ = "rep_calendars"

    rep_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # sha256 of the feed URL the windows came from (the URL itself may carry a secret; it stays on the rep).
    url_hash: Mapped[str] = mapped_column(String(64))
    away: Mapped[list[list[str]]] = mapped_column(JSON)  # [[start, end], ...] as UTC ISO times, end exclusive
    events: Mapped[int] = mapped_column(Integer, default=0)  # all-day events read in the window looked at
    checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the last fetch, good or not
    refreshed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the last good one
    error: Mapped[str | None] = mapped_column(Text)  # why the last fetch failed; None after a good one
