"""Errors the ingest domain raises; the API layer maps them to 422 and 401."""

from __future__ import annotations

from typing import NamedTuple


class FieldError(NamedTuple):
    """One rejected field: a dotted path (``email``, ``custom.plan``) and a human reason."""

    field: str
    reason: str


class LeadValidationError(Exception):
    """A lead (or a platform payload) was rejected; ``errors`` names every bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("invalid lead: " + "; ".join(f"{e.field}: {e.reason}" for e in self.errors))


class NotALead(LeadValidationError):
    """Well-formed, but no usable way to reach anyone: the submission is quarantined, not stored as a lead."""


class SignatureError(Exception):
    """A request failed authentication (bad, missing or stale signature); the API answers 401."""
