"""Ingest's composition root: `create_app(settings)` wires everything; the lifespan connects and disconnects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from common.logging import configure_logging
from common.runtime import Runtime
from common.topics import LEADS_ERASED, LEADS_RECEIVED
from common.web import InflightGate, InflightLimitMiddleware, health_router, install_common
from ingest import api
from ingest.api import webhooks
from ingest.api.fast import IngestApp, LeadFastPath
from ingest.fetcher import PlatformFetcher
from ingest.handlers import leads as lead_cases
from ingest.handlers import quarantine as quarantine_cases
from ingest.handlers.source_keys import SourceKeys
from ingest.settings import IngestSettings
from ingest.store import Base, outbox
from ingest.writer import IngestWriter

MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: IngestSettings | None = None, *, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The ingest app; `clock` (UTC now) is a seam for tests of time windows, the system clock otherwise."""
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
        app.state.source_keys = SourceKeys(runtime.db, settings.source_cache_ttl_s)
        writer = IngestWriter(runtime.db, settings)
        app.state.writer = writer
        await writer.start()
        fetcher = PlatformFetcher(settings, runtime)
        app.state.fetcher = fetcher
        await fetcher.start()
        await runtime.start_housekeeping(
            "idempotency_key_purge",
            lambda session: lead_cases.purge_expired_keys(session, settings, app.state.clock()),
            every_s=settings.idempotency_purge_interval_s,
            batch=settings.idempotency_purge_batch,
        )
        await runtime.start_housekeeping(
            "lead_identity_purge",
            lambda session: lead_cases.purge_erased_identities(session, settings, app.state.clock()),
            every_s=settings.housekeeping_interval_s,
            batch=settings.idempotency_purge_batch,
        )
        await runtime.start_housekeeping(
            "quarantine_purge",
            lambda session: quarantine_cases.purge_quarantine(session, settings, app.state.clock()),
            every_s=settings.quarantine_purge_interval_s,
            batch=settings.idempotency_purge_batch,
        )
        try:
            yield
        finally:
            await fetcher.stop()
            await writer.stop()
            await runtime.stop()

    app = IngestApp(
        title="Handoff ingest",
        version="1.0.0",
        summary="Accepts leads from web forms and ad platforms, verified, normalized and deduplicated.",
        lifespan=lifespan,
        # No OpenTelemetry here (Prometheus metrics and JSON logs instead): FastAPI's native telemetry otherwise asks
        # for the global providers, environment included, on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    # Source secrets are stored encrypted; without HANDOFF_SECRET_KEY (refused in production) the dev key.
    app.state.secrets = settings.secret_box()
    app.state.clock = clock or _utc_now
    app.state.rate_limiter = api.RateLimiter(
        settings.public_rate_limit_per_minute, settings.public_rate_limit_max_addresses
    )
    app.state.auth_failures = api.AuthFailureLimiter(
        settings.auth_failure_limit, settings.auth_failure_window_s, settings.public_rate_limit_max_addresses
    )
    # One bound on lead posts in flight, for the fast path and the route alike.
    inflight = InflightGate(settings.max_inflight_leads)
    # Ahead of every middleware: a back end's valid JSON lead is stored without the framework; anything else (and
    # anything over a limit) goes through the whole app to the route.
    app.fast_path = LeadFastPath(app, gate=inflight, max_body_bytes=settings.max_body_bytes)
    # Added before the common middleware, so shed requests still carry a correlation id and are counted.
    app.add_middleware(InflightLimitMiddleware, gate=inflight, method="POST", path="/v1/leads")
    install_common(
        app,
        max_body_bytes=settings.max_body_bytes,
        route_body_limits={webhooks.WEBHOOK_PATH_PATTERN: webhooks.WEBHOOK_MAX_BODY_BYTES},
    )
    _install_store_errors(app)

    app.include_router(health_router())
    app.include_router(api.router)
    _document_security(app)
    return app


def _install_store_errors(app: FastAPI) -> None:
    """A store that cannot answer is a 503 the caller can retry, on every route, never a 500."""

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.error("ingest_store_unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {"error": "unavailable", "detail": "the store is unavailable; retry"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(SQLAlchemyError, unavailable)
    app.add_exception_handler(OSError, unavailable)  # connection refused/reset, timeouts


def _document_security(app: FastAPI) -> None:
    """Name the bearer token and the publishable key in the OpenAPI document, for clients and fuzzers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "HANDOFF_ADMIN_TOKEN; on POST /v1/leads also a web source's API key",
                },
                "publishableKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Handoff-Key",
                    "description": "A web source's publishable key, only from its allowed origins",
                },
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
