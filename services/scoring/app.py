"""Scoring's composition root."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from common.logging import configure_logging
from common.runtime import Runtime
from common.web import health_router, install_common
from scoring import api
from scoring.clients import CircuitBreaker, EnrichmentClient, TTLCache
from scoring.consumer import CONSUMES, PRODUCES, batch_handlers, event_handlers
from scoring.handlers import Scoring
from scoring.settings import ScoringSettings
from scoring.store import Base, outbox, processed

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ScoringSettings | None = None) -> FastAPI:
    settings = settings or ScoringSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(settings.enrichment_timeout_s)) as http:
            provider = None
            if settings.enrichment_url:
                provider = EnrichmentClient(
                    http,
                    settings.enrichment_url,
                    token=settings.enrichment_token,
                    timeout_s=settings.enrichment_timeout_s,
                    attempts=settings.enrichment_attempts,
                    breaker=CircuitBreaker(settings.enrichment_breaker_failures, settings.enrichment_breaker_open_s),
                    cache=TTLCache(settings.enrichment_cache_ttl_s),
                )
            scoring = Scoring(settings, provider)
            runtime = Runtime(
                settings=settings,
                metadata=Base.metadata,
                migrations=MIGRATIONS,
                outbox=outbox,
                processed=processed,
                produces=PRODUCES,
                consumes=CONSUMES,
                handlers=event_handlers(scoring),
                batch_handlers=batch_handlers(scoring),
                prepare=scoring.prepare,
            )
            app.state.scoring = scoring
            app.state.runtime = runtime
            await runtime.start()
            try:
                yield
            finally:
                await runtime.stop()

    app = FastAPI(
        title="Handoff scoring",
        version="1.0.0",
        summary="Enriches and scores leads with explainable rules, and learns from sales outcomes.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_common(app, max_body_bytes=settings.max_body_bytes)

    app.include_router(health_router())
    app.include_router(api.router)
    return app
