"""Ingest's use cases, one module per area. Entrypoints own the transaction; use cases only add and flush.

The names below are re-exported for code outside this service's own modules (the group-commit writer, bench,
shared schema tests) that imports them from `ingest.handlers`.
"""

from ingest.handlers.batch import PreparedLead, Stored, accept_batch, accept_leads
from ingest.handlers.erasure import erase_lead
from ingest.handlers.leads import EVENT_SOURCE, IdempotencyConflict, accept_lead, purge_erased_identities
from ingest.handlers.views import source_view

__all__ = [
    "EVENT_SOURCE",
    "IdempotencyConflict",
    "PreparedLead",
    "Stored",
    "accept_batch",
    "accept_lead",
    "accept_leads",
    "erase_lead",
    "purge_erased_identities",
    "source_view",
]
