"""Scoring settings, read once from the environment."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="ignore", frozen=True)

    service_name: str = "scoring"
    database_url: str = Field(default="", validation_alias=AliasChoices("SCORING_DATABASE_URL"))
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Optional HTTP enrichment provider: GET {url}?domain=...&email_domain=...
    enrichment_url: str | None = None
    enrichment_token: str | None = None
    enrichment_timeout_s: float = Field(default=2.0, gt=0)
    enrichment_attempts: int = Field(default=2, ge=1, le=5)
    enrichment_cache_ttl_s: float = Field(default=24 * 3600.0, ge=0)
    # After this many consecutive failures the provider is skipped for `enrichment_open_s` seconds.
    enrichment_breaker_failures: int = Field(default=5, ge=1)
    enrichment_breaker_open_s: float = Field(default=30.0, gt=0)
    # Lookups in flight at once for one consumer batch (a batch holds up to consumer_batch_size leads).
    enrichment_concurrency: int = Field(default=20, ge=1, le=200)
    conversion_min_outcomes: int = Field(default=30, ge=1)
