"""The documented shapes of leads, in and out (the OpenAPI document and the answers)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ingest.api.shared import date_time


class LeadIn(BaseModel):
    """The documented shape of a web lead; any other key is kept as a bounded custom field."""

    model_config = ConfigDict(extra="allow")

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = Field(default=None, description="Split into first and last when those are missing")
    email: str | None = Field(default=None, description="Required unless phone is given")
    phone: str | None = Field(default=None, description="Any format; normalized to E.164 with the source's region")
    company: str | None = None
    job_title: str | None = None
    website: str | None = None
    country: str | None = Field(default=None, description="Name or ISO 3166 code; stored as alpha-2")
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    language: str | None = None
    message: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    gclid: str | None = None
    fbclid: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    form_id: str | None = None
    submitted_at: datetime | None = None


class AcceptedOut(BaseModel):
    lead_id: str
    status: Literal["accepted", "duplicate"]
    duplicate_of: str | None = Field(
        default=None,
        description=(
            "The earlier lead of the same person within the repeat window; left out for publishable-key (browser) "
            "callers, since anyone can hold that key and would learn who was a lead"
        ),
    )
    is_test: bool
    correlation_id: str | None


class LeadData(BaseModel):
    """A lead after normalization, the same for every source."""

    model_config = ConfigDict(extra="allow")

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    email: str | None = None
    phone: str | None = Field(default=None, description="E.164")
    company: str | None = None
    job_title: str | None = None
    website: str | None = None
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2")
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    language: str | None = None
    message: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    form_id: str | None = None
    consent: dict[str, bool] = Field(default_factory=dict)
    utm: dict[str, str] = Field(default_factory=dict)
    click_ids: dict[str, str] = Field(default_factory=dict)
    submitted_at: str | None = date_time()
    custom: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class SourceRef(BaseModel):
    id: str | None
    kind: str | None = None
    name: str | None = None


class LeadOut(BaseModel):
    lead_id: str
    source: SourceRef
    external_id: str | None
    is_test: bool
    duplicate_of: str | None
    received_at: str = date_time()
    erased_at: str | None = date_time("Set once the personal data was erased; `lead` is then null")
    lead: LeadData | None


class LeadPage(BaseModel):
    items: list[LeadOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class ErasedOut(BaseModel):
    lead_id: str
    status: Literal["erased"]
