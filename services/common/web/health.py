"""Liveness, readiness and the Prometheus scrape, the same three routes in every service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.web.body import HandoffRoute

Readiness = Callable[[Request], Awaitable[tuple[bool, dict[str, Any]]]]


async def runtime_readiness(request: Request) -> tuple[bool, dict[str, Any]]:
    """What every service's Runtime reports: database, outbox backlog, consumer progress."""
    result: tuple[bool, dict[str, Any]] = await request.app.state.runtime.readiness()
    return result


def health_router(readiness: Readiness = runtime_readiness) -> APIRouter:
    """/healthz says the process is alive; /readyz says it can do its job (database up, consumer progressing)."""
    router = APIRouter(tags=["operations"], route_class=HandoffRoute)

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness", responses={503: {"description": "Not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        ready, checks = await readiness(request)
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
