"""Ingest's composition root: `create_app(settings)` wires everything; the lifespan connects and disconnects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request

from common.logging import configure_logging
from common.runtime import Runtime
from common.topics import LEADS_ERASED, LEADS_RECEIVED
from common.web import health_router, install_common
from ingest import api, webhooks
from ingest.settings import IngestSettings
from ingest.store import Base, outbox

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(
            settings=settings,
            metadata=Base.metadata,
            migrations=MIGRATIONS,
            outbox=outbox,
            produces=[LEADS_RECEIVED, LEADS_ERASED],
        )
        app.state.runtime = runtime
        await runtime.start()
        fetcher = webhooks.PlatformFetcher(settings, runtime)
        app.state.fetcher = fetcher
        await fetcher.start()
        try:
            yield
        finally:
            await fetcher.stop()
            await runtime.stop()

    app = FastAPI(
        title="Handoff ingest",
        version="1.0.0",
        summary="Accepts leads from web forms and ad platforms, verified, normalized and deduplicated.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_common(app, max_body_bytes=settings.max_body_bytes)

    async def readiness(request: Request) -> tuple[bool, dict[str, object]]:
        return await request.app.state.runtime.readiness()

    app.include_router(health_router(readiness))
    app.include_router(api.router)
    app.include_router(webhooks.router)
    return app
