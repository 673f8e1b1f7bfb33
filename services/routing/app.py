"""Routing's composition root."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI

from common.logging import configure_logging
from common.web import health_router, install_common
from routing import api, desk_api, ops, webhooks
from routing.access import acting
from routing.access import api as access_api
from routing.calendars import CalendarRefresher
from routing.connectors import api as crm_api
from routing.connectors import salesforce_routes
from routing.connectors.salesforce_poll import SalesforcePoller
from routing.engine import MIGRATIONS, Engine
from routing.settings import RoutingSettings
from routing.webhooks import api as webhooks_api

__all__ = ["MIGRATIONS", "create_app"]
log = structlog.get_logger(__name__)


def create_app(settings: RoutingSettings | None = None, engine: Engine | None = None) -> FastAPI:
    """The HTTP side; its lifespan starts the background half (routing.engine), or takes over `engine` already
    started (routing.serve), and stops it either way."""
    settings = engine.settings if engine is not None else (settings or RoutingSettings())
    configure_logging(settings.service_name, settings.log_level, settings.log_format)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        background = engine or Engine(settings)
        router, runtime, timers = background.router, background.runtime, background.timers
        app.state.router = router
        app.state.runtime = runtime
        app.state.timers = timers
        if not background.started:
            await background.start()
        app.state.webhook_sender = webhooks.WebhookSender(runtime.db, settings)
        await runtime.start_job(app.state.webhook_sender.run)
        app.state.calendars = CalendarRefresher(runtime.db, router, settings)  # reps' out-of-office feeds
        await runtime.start_job(app.state.calendars.run)
        app.state.salesforce_poller = SalesforcePoller(runtime.db, router, settings)
        await runtime.start_job(app.state.salesforce_poller.run)
        await runtime.start_housekeeping(
            "webhook_delivery_purge",
            lambda session: webhooks.purge_settled_deliveries(session, settings, router.clock()),
            every_s=settings.webhook_purge_interval_s,
            batch=settings.webhook_purge_batch,
        )
        await runtime.start_housekeeping(
            "spent_link_purge",
            lambda session: acting.purge_spent_links(session, router.clock(), settings.housekeeping_batch),
            every_s=settings.housekeeping_interval_s,
            batch=settings.housekeeping_batch,
        )
        try:
            yield
        finally:
            await timers.stop()
            await app.state.webhook_sender.stop()
            await app.state.calendars.stop()
            await app.state.salesforce_poller.stop()
            await salesforce_routes.close(app)
            await crm_api.close(app)
            await background.stop()

    app = FastAPI(
        title="Handoff routing",
        version="1.0.0",
        summary="Assigns scored leads to reps by rules, runs SLA clocks, escalates and explains every decision.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_common(app, max_body_bytes=settings.max_body_bytes)

    app.include_router(health_router())
    app.include_router(api.router)
    app.include_router(webhooks_api.router)
    app.include_router(webhooks_api.admin_router)
    app.include_router(ops.router)
    app.include_router(crm_api.router)
    app.include_router(desk_api.router)
    app.include_router(salesforce_routes.router)
    app.include_router(access_api.router)
    return app
