"""Ops read side on routing: SLA breaches and compliance (api), the live SLA stream (stream), the /ops dashboard
(page), over one read model of routing's tables (queries) and its pure arithmetic (compliance).

`router` carries every ops route, so the app mounts the feature with one include_router.
"""

from fastapi import APIRouter

from routing.ops import api, page, stream

router = APIRouter()
router.include_router(api.router)
router.include_router(stream.router)
router.include_router(page.router)

__all__ = ["router"]
