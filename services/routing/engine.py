"""Routing's background half: the store, the outbox relay and consumer (common.runtime) and the SLA timers.

It imports no HTTP code (FastAPI, the routes and their models), so `routing.serve` starts it, with timers firing,
before the HTTP side is imported and built (~0.5 s of a restart's CPU); `routing.app` starts one itself when it is
given none (`uvicorn routing.app:create_app --factory`, the tests). Either way one process, the same settings, and
the app's lifespan stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from common.runtime import Runtime
from common.topics import LEADS_SCORED
from routing.access import mailer
from routing.consumer import CONSUMES, PRODUCES, batch_handlers, event_handlers
from routing.handlers import Router
from routing.settings import RoutingSettings
from routing.store import Base, outbox, processed
from routing.timers import TimerLoop, consumer_ownership
from routing.usecases import roster

MIGRATIONS = Path(__file__).parent / "migrations"
IN_SERVICE_WAIT_S = 30.0  # a store failing the first timer round: HTTP comes up anyway (and /readyz says why)
log = structlog.get_logger(__name__)


async def seed(runtime: Runtime, router: Router, settings: RoutingSettings) -> None:
    """Load the seed roster and rules once, when the store has none (a restart keeps what ops changed)."""
    roster_text = settings.seed_file.read_text(encoding="utf-8") if settings.seed_file else None
    rules_text = settings.rules_file.read_text(encoding="utf-8") if settings.rules_file else None
    async with runtime.db.transaction() as session:
        await roster.seed(router, session, roster_text, rules_text)
        await mailer.ensure_endpoint(session, settings, settings.secret_box(), router.clock())


class Engine:
    """The router, its runtime and its timer loop; nothing connects until `start`."""

    def __init__(self, settings: RoutingSettings) -> None:
        self.settings = settings
        self.router = Router(settings)
        self.runtime = Runtime(
            settings=settings,
            metadata=Base.metadata,
            migrations=MIGRATIONS,
            outbox=outbox,
            processed=processed,
            produces=PRODUCES,
            consumes=CONSUMES,
            handlers=event_handlers(self.router),
            batch_handlers=batch_handlers(self.router),
        )
        self.timers = TimerLoop(
            self.runtime.db,
            self.router,
            batch_size=settings.timer_batch_size,
            max_sleep_s=settings.timer_max_sleep_s,
            # The timers of the leads whose lead.scored partitions this process consumes (the sweep takes the rest).
            ownership=consumer_ownership(self.runtime, settings.topic(LEADS_SCORED)),
        )
        self.started = False
        self._stopped = False

    async def start(self) -> None:
        """Migrate, start the relay and consumer, seed an empty store, then start the timers and wait for their
        first round (the horizon read, what is due fired first): in service."""
        self.started = True
        await self.runtime.start()
        await seed(self.runtime, self.router, self.settings)
        await self.runtime.start_job(self.timers.run)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.timers.in_service.wait(), IN_SERVICE_WAIT_S)
        if self.timers.in_service.is_set():
            log.info("routing_timers_in_service")
        else:
            log.warning("routing_timers_not_in_service", waited_s=IN_SERVICE_WAIT_S)

    async def stop(self) -> None:
        """Stop firing, then drain the runtime (consumer, relay, jobs) and close the database; once."""
        if self._stopped:
            return
        self._stopped = True
        await self.timers.stop()
        if self.started:
            await self.runtime.stop()
