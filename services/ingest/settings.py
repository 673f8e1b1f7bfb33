"""Ingest settings, read once from the environment."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AliasChoices, Field, IPvAnyNetwork, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.egress import AddressPolicy, check_allow_list
from common.settings import DEV_ADMIN_TOKEN, ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="ignore", frozen=True)

    service_name: str = "ingest"
    stores_secrets: ClassVar[bool] = True  # HANDOFF_SECRET_KEY is required in production
    database_url: str = Field(default="", validation_alias=AliasChoices("INGEST_DATABASE_URL"))
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    # The same person (email or phone) again within this window is a repeat of the earlier lead.
    repeat_window_hours: float = Field(default=72.0, ge=0)
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)
    # Expired keys are deleted in batches this often, so the table holds about one TTL's worth of them.
    idempotency_purge_interval_s: float = Field(default=300.0, gt=0)
    idempotency_purge_batch: int = Field(default=1000, ge=1)
    # Quarantined submissions (not leads: no contact, an unlisted origin, a honeypot hit) hold personal data:
    # kept this many days for review, whatever was decided, then deleted on the housekeeping loop.
    quarantine_retention_days: float = Field(default=30.0, gt=0)
    quarantine_purge_interval_s: float = Field(default=3600.0, gt=0)
    # Browser forms on publishable keys: requests per minute per client address (a burst of that many, then
    # a steady refill); the addresses remembered are capped so a flood of spoofed ones cannot grow memory.
    public_rate_limit_per_minute: int = Field(default=30, ge=1)
    public_rate_limit_max_addresses: int = Field(default=100_000, ge=100)
    # Failed authentications (401s on POST /v1/leads) per client address: after this many in one window the
    # address gets 429 until the window ends, before any key is looked up. Per process, like the limit above.
    auth_failure_limit: int = Field(default=20, ge=1)
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    # Proxies whose X-Forwarded-For is believed (comma-separated addresses or CIDR networks). Empty: the socket
    # peer is the client, so a forged header cannot dodge the per-address limits.
    trusted_proxies: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = ()
    # Group commit of web leads: at most this many leads per transaction, and this many waiting for one.
    writer_max_batch: int = Field(default=128, ge=1, le=1000)
    writer_max_pending: int = Field(default=10_000, ge=1)
    # A request waits at most this long for room in a full writer queue, then gets 503 with Retry-After.
    writer_enqueue_timeout_s: float = Field(default=2.0, ge=0)
    # Lead posts handled at once by this process; more get an immediate 503 with Retry-After, so overload is
    # shed at the door (a few microseconds each) instead of queueing without bound on a saturated event loop.
    max_inflight_leads: int = Field(default=64, ge=1)
    # Every batch rewrites the last page of each table and index it appends to (leads, identities, the outbox); a
    # checkpoint copies a page once however often it was written since, so a checkpoint every 4,000 pages (a WAL of
    # ~16 MB) copies fewer pages a lead than 1,000 (the checkpointer's CPU a lead ~9 -> ~4 us under the bench's load).
    sqlite_checkpoint_pages: int = Field(default=4000, ge=100)
    sqlite_wal_restart_pages: int = Field(default=16_000, ge=400)
    # A source's API key (and publishable key) is looked up once and then trusted from memory for at most this many
    # seconds: the bound within which a key rotated, a source disabled or changed in another process stops working
    # here (in this process a change takes effect at once). 0 looks the key up on every request.
    source_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)
    platform_fetch_timeout_s: float = Field(default=10.0, gt=0)
    platform_fetch_attempts: int = Field(default=5, ge=1)

    # -- platform webhooks and the lead fetcher -------------------------------------------------------------
    # Default API origins; a source's config may name its own (`graph_base_url`, `api_base_url`).
    meta_graph_base_url: str = "https://graph.facebook.com"
    # Meta retires a Graph API version about two years after its release: keep this current.
    meta_graph_version: str = Field(default="v21.0", pattern=r"^v\d+\.\d+$")
    linkedin_api_base_url: str = "https://api.linkedin.com/rest"
    # LinkedIn's versioned Marketing APIs (header `LinkedIn-Version: YYYYMM`) are sunset after about a year.
    linkedin_api_version: str = Field(default="202601", pattern=r"^\d{6}$")
    hubspot_api_base_url: str = "https://api.hubapi.com"
    # Retries of a failing fetch: base * 2^(attempt-1), capped, with jitter; a row is never dropped.
    platform_fetch_backoff_s: float = Field(default=2.0, gt=0)
    platform_fetch_max_backoff_s: float = Field(default=3600.0, gt=0)
    platform_fetch_poll_interval_s: float = Field(default=1.0, gt=0)
    platform_fetch_batch_size: int = Field(default=20, ge=1, le=500)
    # The origin platforms call (https://hooks.example.com) behind a proxy: HubSpot signs the full URL.
    public_base_url: str = Field(default="", pattern=r"^(https?://[^/?#]+)?$")
    # Where platform API calls may go (a source's own base URL included), as for routing's webhooks: https only
    # in production; loopback (None: allowed in development only) and private hosts refused unless listed here.
    platform_allow_loopback: bool | None = None
    # CIDRs, or host names whose resolved addresses, that may be private (e.g. an internal API gateway).
    platform_allow_private_hosts: tuple[str, ...] = ()

    @property
    def platform_address_policy(self) -> AddressPolicy:
        """The address policy for platform API base URLs, checked when a source is saved and at every connect."""
        allow_loopback = self.platform_allow_loopback
        if allow_loopback is None:
            allow_loopback = self.env == "development"
        return AddressPolicy.from_allow_list(
            allow_loopback=allow_loopback,
            allow_private_hosts=self.platform_allow_private_hosts,
            require_https=self.env == "production",
        )

    @property
    def database_pool_size(self) -> int:
        """One pooled connection per lead post in flight, unless HANDOFF_DB_POOL_SIZE says otherwise."""
        return self.db_pool_size or self.max_inflight_leads

    @model_validator(mode="after")
    def _platform_allow_list_is_valid(self) -> IngestSettings:
        check_allow_list("HANDOFF_PLATFORM_ALLOW_PRIVATE_HOSTS", self.platform_allow_private_hosts)
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated_networks(cls, value: object) -> object:
        # One environment variable, "10.0.0.0/8, 192.0.2.7": a list in the form operators write anyway.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    # Named apart from the base's admin token check, so both run (a same-named validator replaces the base's).
    @model_validator(mode="after")
    def _refuse_dev_token_in_test_mode_too(self) -> IngestSettings:
        # Ingest faces the internet: even a test deployment must not answer to the published token.
        if self.env == "test" and self.admin_token.get_secret_value() == DEV_ADMIN_TOKEN:
            raise ValueError("HANDOFF_ADMIN_TOKEN is the published development token; set a secret token in test mode")
        return self
