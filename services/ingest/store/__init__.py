"""Ingest's store: the tables, and one repository per area whose methods are the questions use cases ask."""

from ingest.store.fetches import PlatformFetchRepository
from ingest.store.quarantine import QuarantineRepository
from ingest.store.repository import IngestRepository
from ingest.store.tables import (
    ERASED_IDENTITY,
    Base,
    IdempotencyRecord,
    IdentityRow,
    Lead,
    LeadIdentity,
    LeadRow,
    PlatformFetch,
    QuarantinedSubmission,
    Source,
    outbox,
    outbox_dead,
    processed,
)

__all__ = [
    "ERASED_IDENTITY",
    "Base",
    "IdempotencyRecord",
    "IdentityRow",
    "IngestRepository",
    "Lead",
    "LeadIdentity",
    "LeadRow",
    "PlatformFetch",
    "PlatformFetchRepository",
    "QuarantineRepository",
    "QuarantinedSubmission",
    "Source",
    "outbox",
    "outbox_dead",
    "processed",
]
