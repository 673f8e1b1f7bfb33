"""Ingest settings, read once from the environment."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import DEV_ADMIN_TOKEN, ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="ignore", frozen=True)

    service_name: str = "ingest"
    database_url: str = Field(default="", validation_alias=AliasChoices("INGEST_DATABASE_URL"))
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    # The same person (email or phone) again within this window is a repeat of the earlier lead.
    repeat_window_hours: float = Field(default=72.0, ge=0)
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)
    # Expired keys are deleted in batches this often, so the table holds about one TTL's worth of them.
    idempotency_purge_interval_s: float = Field(default=300.0, gt=0)
    idempotency_purge_batch: int = Field(default=1000, ge=1)
    # Browser forms on publishable keys: requests per minute per client address (a burst of that many, then
    # a steady refill); the addresses remembered are capped so a flood of spoofed ones cannot grow memory.
    public_rate_limit_per_minute: int = Field(default=30, ge=1)
    public_rate_limit_max_addresses: int = Field(default=100_000, ge=100)
    # Group commit of web leads: at most this many leads per transaction, and this many waiting for one.
    writer_max_batch: int = Field(default=128, ge=1, le=1000)
    writer_max_pending: int = Field(default=10_000, ge=1)
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

    @model_validator(mode="after")
    def _refuse_dev_token_outside_development(self) -> IngestSettings:
        # The issue asks for this in every mode but development; common's check covers production only.
        if self.env != "development" and self.admin_token.get_secret_value() == DEV_ADMIN_TOKEN:
            raise ValueError(
                f"HANDOFF_ADMIN_TOKEN is the published development token; set a secret token in {self.env} mode"
            )
        return self
