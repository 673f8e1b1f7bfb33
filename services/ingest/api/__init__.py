"""Ingest's HTTP API, one router per area: routes parse, call one use case and shape the answer.

`LeadIn`, `SourceIn` and `AuthFailureLimiter` are re-exported for code outside this service (bench, shared schema
tests) that imports them from `ingest.api`.
"""

from fastapi import APIRouter

from ingest.api import leads, quarantine, records, sources, webhooks
from ingest.api.limits import AuthFailureLimiter, RateLimiter
from ingest.api.shapes import LeadIn
from ingest.api.sources import SourceIn

router = APIRouter()
for _area in (leads, records, sources, webhooks, quarantine):
    router.include_router(_area.router)

__all__ = ["AuthFailureLimiter", "LeadIn", "RateLimiter", "SourceIn", "router"]
