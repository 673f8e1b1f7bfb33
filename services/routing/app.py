"""Routing's composition root."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from fastapi import FastAPI

from common.logging import configure_logging
from common.runtime import Runtime
from common.topics import LEADS_SCORED
from common.web import health_router, install_common
from routing import api, desk_api, ops, webhooks
from routing.access import acting, mailer
from routing.access import api as access_api
from routing.calendars import CalendarRefresher
from routing.connectors import api as crm_api
from routing.connectors import salesforce_routes
from routing.connectors.salesforce_poll import SalesforcePoller
from routing.consumer import CONSUMES, PRODUCES, batch_handlers, event_handlers
from routing.handlers import Router
from routing.settings import RoutingSettings
from routing.store import Base, outbox, processed
from routing.timers import TimerLoop, consumer_ownership
from routing.usecases import roster
from routing.webhooks import api as webhooks_api

MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger(__name__)


async def _seed(runtime: Runtime, router: Router, settings: RoutingSettings) -> None:
    """Load the seed roster and rules once, when the store has none (a restart keeps what ops changed)."""
    roster_text = settings.seed_file.read_text(encoding="utf-8") if settings.seed_file else None
    rules_text = settings.rules_file.read_text(encoding="utf-8") if settings.rules_file else None
    async with runtime.db.transaction() as session:
        await roster.seed(router, session, roster_text, rules_text)
        await mailer.ensure_endpoint(session, settings, settings.secret_box(), router.clock())


def create_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        router = Router(settings)
        runtime = Runtime(
            settings=settings,
            metadata=Base.metadata,
            migrations=MIGRATIONS,
            outbox=outbox,
            processed=processed,
            produces=PRODUCES,
            consumes=CONSUMES,
            handlers=event_handlers(router),
            batch_handlers=batch_handlers(router),
        )
        timers = TimerLoop(
            runtime.db,
            router,
            batch_size=settings.timer_batch_size,
            max_sleep_s=settings.timer_max_sleep_s,
            # The timers of the leads whose lead.scored partitions this process consumes (the sweep takes the rest).
            ownership=consumer_ownership(runtime, settings.topic(LEADS_SCORED)),
        )
        app.state.router = router
        app.state.runtime = runtime
        app.state.timers = timers
        await runtime.start()
        await _seed(runtime, router, settings)
        await runtime.start_job(timers.run)
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
            await runtime.stop()

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
