"""Ingest's HTTP API, one router per area: routes parse, call one use case and shape the answer.

`LeadIn`, `SourceIn` and `AuthFailureLimiter` are re-exported for code outside this service (bench, shared schema
tests) that imports them from `ingest.api`.
"""

from fastapi import APIRouter

from ingest.api.leads import router as leads_router
from ingest.api.limits import AuthFailureLimiter, RateLimiter
from ingest.api.quarantine import router as quarantine_router
from ingest.api.records import router as records_router
from ingest.api.shapes import LeadIn
from ingest.api.sources import SourceIn
from ingest.api.sources import router as sources_router
from ingest.api.webhooks import router as webhooks_router

router = APIRouter()
for _area in (leads_router, records_router, sources_router, webhooks_router, quarantine_router):
    router.include_router(_area)

__all__ = ["AuthFailureLimiter", "LeadIn", "RateLimiter", "SourceIn", "router"]
