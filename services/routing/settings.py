"""Routing settings, read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="ignore", frozen=True)

    service_name: str = "routing"
    database_url: str = Field(default="", validation_alias=AliasChoices("ROUTING_DATABASE_URL"))
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Teams, reps and accounts loaded at start-up when the roster is empty (YAML or JSON).
    seed_file: Path | None = None
    # Routing rules installed at start-up when none are active yet (YAML or JSON); else the shipped defaults.
    rules_file: Path | None = None
    # SLA minutes per grade override the defaults (A 5, B 60, C 480 working minutes), e.g. {"A": 1}.
    sla_minutes: dict[str, float] = Field(default_factory=dict)
    sla_business_hours: bool = True
    sla_warn_fractions: tuple[float, ...] = (0.5,)
    escalation_max_reassignments: int = Field(default=2, ge=0)
    escalation_then: Literal["manager", "queue"] = "manager"
    timer_batch_size: int = Field(default=500, ge=1)
    # The timer loop never sleeps longer than this, so a timer written by another process fires on time.
    timer_max_sleep_s: float = Field(default=0.25, gt=0)
