"""Routing settings, read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from common.egress import check_allow_list
from common.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="ignore", frozen=True)

    service_name: str = "routing"
    stores_secrets: ClassVar[bool] = True  # HANDOFF_SECRET_KEY is required in production
    database_url: str = Field(default="", validation_alias=AliasChoices("ROUTING_DATABASE_URL"))
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Teams, reps and accounts loaded at start-up when the roster is empty (YAML or JSON).
    seed_file: Path | None = None
    # Routing rules installed at start-up when none are active yet (YAML or JSON); else the shipped defaults.
    rules_file: Path | None = None
    # The SLA defaults: a team's or a rule's `sla:` block (routing.domain.sla) wins over them, field by field, and
    # changes with PUT /v1/routing/rules or the roster, without a restart. These need one.
    # SLA minutes per grade override the built-in defaults (A 5, B 60, C 480 working minutes), e.g. {"A": 1}.
    sla_minutes: dict[str, float] = Field(default_factory=dict)
    sla_business_hours: bool = True
    sla_warn_fractions: tuple[float, ...] = (0.5,)
    escalation_max_reassignments: int = Field(default=2, ge=0)
    escalation_then: Literal["manager", "queue"] = "manager"
    # A poll of lead.scored is decided in memory and written in one transaction under its teams' locks (the
    # timer loop takes none to fire; escalations take their team's). A backlog drains in batches this large: each
    # batch's ~15 statements and its commit are spread over its leads. A batch of 200 holds its teams' locks (on
    # SQLite, the one writer) for about 150 ms of CPU; when there is no backlog, polls and batches are small.
    consumer_batch_size: int = Field(default=200, ge=1, le=10_000)
    # 200 due timers are detected in about 50 ms on a 2-core machine: a burst of 5,000 in one second keeps up.
    timer_batch_size: int = Field(default=200, ge=1)
    # The timer loop never sleeps longer than this between looks at its next due time.
    timer_max_sleep_s: float = Field(default=0.25, gt=0)
    # The loop caches its next due time (its own new timers wake it) and reads the store again at least this
    # often, which is how a timer written by another process, or one that died, is found.
    timer_refresh_s: float = Field(default=1.0, gt=0)
    # The near horizon: how far ahead the timers are held in memory; the sweep of overdue timers no owner fired
    # (a dead process's partitions), how often it looks and how overdue a timer must be before it takes it.
    timer_horizon_s: float = Field(default=300.0, gt=0)
    timer_sweep_s: float = Field(default=1.0, gt=0)
    timer_sweep_grace_s: float = Field(default=2.0, ge=0)
    # Breaches are detected in batches of timer_batch_size; their reassignments run in smaller transactions
    # in between, so escalating one burst never delays detecting the next breach by more than one such batch.
    timer_escalation_batch_size: int = Field(default=10, ge=1)
    # A backtest replays at most this many leads at once (each is held in memory and decided twice).
    backtest_max_leads: int = Field(default=50_000, ge=1)
    # Ops reads (breaches, summary) cover at most this many days per query: the read token cannot ask for a scan
    # of months. Live SLA streams open at once per credential (admin or ops token) in one process; more get 429.
    ops_max_window_days: float = Field(default=31, gt=0, le=366)
    ops_max_streams_per_credential: int = Field(default=4, ge=1, le=1000)

    # -- the desk: capacity, calendars (issue 15) -----------------------------------------------------------
    # What fills a rep's max_open: their open leads nobody has touched yet, or every open lead; a team's
    # `capacity_counts` wins for its reps.
    capacity_counts: Literal["untouched", "open"] = "untouched"
    # Reps' iCalendar feeds are read again this often (their all-day events mark the rep away), each fetch bounded
    # in time and size, looking this many days ahead.
    calendar_refresh_s: float = Field(default=900, gt=0)
    calendar_timeout_s: float = Field(default=10, gt=0)
    calendar_max_kib: int = Field(default=2048, ge=1)
    calendar_horizon_days: int = Field(default=60, ge=1, le=730)

    # -- webhooks to sales tools (Standard Webhooks; retry schedule after Svix's) ------------------------
    webhook_timeout_s: float = Field(default=15.0, gt=0)
    # Only this much of a receiver's response body is read and kept with the attempt.
    webhook_response_max_kib: int = Field(default=4, ge=0, le=1024)
    # Delays before each retry; the first attempt is immediate, so 1 + len(schedule) attempts in all.
    webhook_retry_schedule_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    # Each delay is spread by up to this fraction either way, so a recovering receiver is not hit all at once.
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=0.5)
    # A receiver's Retry-After is honoured when later than the schedule, up to this bound.
    webhook_retry_after_max_s: float = Field(default=86_400, gt=0)
    webhook_disable_after_days: float = Field(default=5, gt=0)
    # Settled deliveries (succeeded or failed for good) and their attempts are deleted after this many days;
    # their bodies carry the lead's data, so they are kept no longer than the delivery log is useful.
    webhook_retention_days: float = Field(default=30, gt=0)
    webhook_purge_interval_s: float = Field(default=600, gt=0)
    webhook_purge_batch: int = Field(default=1000, ge=1)
    webhook_secret_overlap_hours: float = Field(default=24, ge=0)
    # A claimed delivery whose sender died is claimed again after this; must outlast one attempt.
    webhook_lease_s: float = Field(default=60, gt=0)
    webhook_batch_size: int = Field(default=100, ge=1, le=10_000)
    webhook_concurrency: int = Field(default=32, ge=1, le=1000)
    # At most this many attempts in flight to one endpoint, so one slow receiver cannot take every slot.
    webhook_endpoint_concurrency: int = Field(default=16, ge=1, le=1000)
    webhook_poll_interval_s: float = Field(default=0.5, gt=0)
    # None means: allowed in development (so `make run` reaches a local receiver), refused otherwise.
    webhook_allow_loopback: bool | None = None
    # CIDRs whose addresses, or host names whose resolved addresses, may be private (e.g. an internal CRM).
    webhook_allow_private_hosts: tuple[str, ...] = ()
    webhook_user_agent: str = "Handoff-Webhooks/1.0"
    # Where links in slack and teams messages point (routing's public URL, e.g. https://handoff.example.com);
    # empty: those messages carry no links.
    webhook_links_base_url: str = Field(default="", max_length=500, pattern=r"^(https?://[^\s]+)?$")

    # -- Salesforce connector (routing.connectors.salesforce*) ----------------------------------------------
    # How often Tasks, Events and Lead Status changes are read, and how far back each read reaches before the
    # cursor (records stamped late, equal stamps: the signals are idempotent, so re-reading is harmless).
    salesforce_poll_interval_s: float = Field(default=30.0, gt=0)
    salesforce_poll_overlap_s: float = Field(default=60.0, ge=0)
    # The wait after REQUEST_LIMIT_EXCEEDED (Salesforce's 24-hour API limit gives no Retry-After).
    salesforce_limit_pause_s: float = Field(default=600.0, gt=0)

    # -- email to reps (routing.access.mailer): an assigned rep gets the lead and their action links ---------
    # Empty host: no email. The "email" connector endpoint is created at start-up when a host is set.
    smtp_host: str = Field(default="", max_length=255)
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_from: str = Field(default="handoff@localhost", max_length=255)
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=15.0, gt=0)

    @property
    def webhook_loopback_allowed(self) -> bool:
        """Loopback receivers are refused unless allowed explicitly or running in development."""
        if self.webhook_allow_loopback is None:
            return self.env == "development"
        return self.webhook_allow_loopback

    @model_validator(mode="after")
    def _webhook_lease_outlasts_an_attempt(self) -> RoutingSettings:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError("HANDOFF_WEBHOOK_LEASE_S must be longer than HANDOFF_WEBHOOK_TIMEOUT_S")
        check_allow_list("HANDOFF_WEBHOOK_ALLOW_PRIVATE_HOSTS", self.webhook_allow_private_hosts)
        return self
