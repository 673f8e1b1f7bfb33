"""Ingest settings, read once from the environment."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="ignore", frozen=True)

    service_name: str = "ingest"
    database_url: str = Field(default="", validation_alias=AliasChoices("INGEST_DATABASE_URL"))
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    # The same person (email or phone) again within this window is a repeat of the earlier lead.
    repeat_window_hours: float = Field(default=72.0, ge=0)
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)
    # Browser forms on publishable keys: requests per minute per client address.
    public_rate_limit_per_minute: int = Field(default=30, ge=1)
    platform_fetch_timeout_s: float = Field(default=10.0, gt=0)
    platform_fetch_attempts: int = Field(default=5, ge=1)
