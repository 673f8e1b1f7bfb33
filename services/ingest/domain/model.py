"""One lead model for every source: what a lead is after normalization, whatever platform it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from ingest.domain.fields import TEXT_FIELDS, CustomValue


@dataclass(frozen=True, kw_only=True)
class NormalizedLead:
    """A lead after validation and normalization, whatever platform it came from."""

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    email: str | None = None
    phone: str | None = None  # E.164
    company: str | None = None
    job_title: str | None = None
    website: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    language: str | None = None  # BCP 47-ish tag, e.g. "en" or "pt-BR"
    message: str | None = None
    consent: dict[str, bool] = field(default_factory=dict)
    utm: dict[str, str] = field(default_factory=dict)
    click_ids: dict[str, str] = field(default_factory=dict)
    page_url: str | None = None
    referrer: str | None = None
    form_id: str | None = None
    submitted_at: datetime | None = None
    custom: dict[str, CustomValue] = field(default_factory=dict)
    quality_flags: tuple[str, ...] = ()  # e.g. ("phone_unparsed", "submitted_at_clamped")
    quality_raw: dict[str, Any] = field(default_factory=dict)  # field path -> the unreadable value as sent

    @property
    def reachable(self) -> bool:
        """Whether the lead gives a usable way to reach the person (a valid email or phone)."""
        return bool(self.email or self.phone)

    @classmethod
    def of_values(cls, values: Mapping[str, Any]) -> NormalizedLead:
        """The lead with these values, one for every field (the normalizer's, already checked): what `__init__`
        makes, without the frozen dataclass's `object.__setattr__` per field (~5 us of ~30 a lead)."""
        if len(values) != len(_FIELD_NAMES):
            missing = sorted(set(_FIELD_NAMES) - set(values))
            raise TypeError(f"NormalizedLead.of_values needs every field: {missing or 'unknown names given'}")
        lead = object.__new__(cls)
        lead.__dict__.update(values)
        return lead

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every key present (missing values are None, maps are {})."""
        fields_ = self.__dict__
        out: dict[str, Any] = {name: fields_[name] for name in TEXT_FIELDS}
        out["consent"] = dict(self.consent)
        out["utm"] = dict(self.utm)
        out["click_ids"] = dict(self.click_ids)
        out["submitted_at"] = self.submitted_at.isoformat() if self.submitted_at else None
        out["custom"] = dict(self.custom)
        out["quality"] = {"flags": list(self.quality_flags), "raw": dict(self.quality_raw)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormalizedLead:
        """Rebuild a lead from `to_dict` output (e.g. a stored row); performs no validation."""
        submitted = data.get("submitted_at")
        quality = data.get("quality") or {}
        return cls(
            **{name: data.get(name) for name in TEXT_FIELDS},
            consent=dict(data.get("consent") or {}),
            utm=dict(data.get("utm") or {}),
            click_ids=dict(data.get("click_ids") or {}),
            submitted_at=datetime.fromisoformat(submitted) if isinstance(submitted, str) else submitted,
            custom=dict(data.get("custom") or {}),
            quality_flags=tuple(quality.get("flags") or ()),
            quality_raw=dict(quality.get("raw") or {}),
        )

    def identity_keys(self) -> list[str]:
        """Keys naming the same person across submissions: ``email:<lower-case>``, ``phone:<e164>``."""
        keys = []
        if self.email:
            # Case-insensitive in practice everywhere; sub-addressing (+tag) is left alone because
            # merging on it could join two different people at providers that do not support it.
            keys.append(f"email:{self.email.lower()}")
        if self.phone:
            keys.append(f"phone:{self.phone}")
        return keys


_FIELD_NAMES = tuple(f.name for f in fields(NormalizedLead))
