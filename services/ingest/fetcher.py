"""The background lead fetcher: leads that platforms announced by id, fetched from their APIs until each is stored.

Notifications that carry only an id (Meta, LinkedIn, HubSpot events) become `PlatformFetch` rows in the webhook
answer's transaction; this loop claims due rows, fetches each lead and stores it, retrying with backoff until it
succeeds, so a 200 to the platform never loses a lead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.exc import SQLAlchemyError

from common.egress import guarded_transport
from common.runtime import Runtime, poll_until
from ingest.clients import FormCache, PlatformAPIError, fetch_platform_lead
from ingest.domain import LeadValidationError, normalize_lead
from ingest.domain.sources.registry import platform
from ingest.handlers import platform as platform_cases
from ingest.handlers.sources import config_text, source_secret
from ingest.settings import IngestSettings

log = structlog.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def retry_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, with jitter in [50%, 100%]."""
    exponential = base_s * 2.0 ** min(max(attempt - 1, 0), 60)
    # Jitter spreads retries of a batch that failed together (one Graph API outage) over time.
    return min(cap_s, exponential) * rng.uniform(0.5, 1.0)


class PlatformFetcher:
    """Fetches leads that platforms announced by id until each is stored; owns its transactions and client.

    A failed fetch is never dropped: it is retried with capped exponential backoff; past
    `platform_fetch_attempts` failures each further one is logged as an error, for alerting.
    """

    def __init__(self, settings: IngestSettings, runtime: Runtime, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self._rng = rng or random.Random()
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._forms = FormCache()
        self._secrets = settings.secret_box()

    async def start(self) -> None:
        """Create the shared HTTP client and start the loop (nothing connects before this)."""
        # Every connection is checked against the address policy, so a source's base URL (or a DNS answer
        # that changed since it was saved) cannot make the fetcher call an internal address with its tokens.
        self._http = httpx.AsyncClient(
            transport=guarded_transport(
                self.settings.platform_address_policy,
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            ),
            timeout=httpx.Timeout(self.settings.platform_fetch_timeout_s),
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json", "User-Agent": "handoff-ingest"},
        )
        self._stop.clear()
        self._task = asyncio.create_task(
            poll_until(
                self._stop,
                self._round,
                interval_s=self.settings.platform_fetch_poll_interval_s,
                name="platform_fetch",
                wake=self._wake,
            ),
            name="platform-fetcher",
        )

    def notify(self) -> None:
        """Wake the loop now: a notification was just queued."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish the fetches under way (bounded by the HTTP timeout), then close the client."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            _done, pending = await asyncio.wait({self._task}, timeout=self.settings.platform_fetch_timeout_s + 5)
            for task in pending:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _round(self) -> bool:
        # A failed round (the database briefly unavailable) is logged by the poller; claimed rows come back when
        # their lease ends. A full batch means more may be due: the next round starts at once.
        return await self.run_once() >= self.settings.platform_fetch_batch_size

    def _lease_s(self) -> float:
        # Long enough for the slowest fetch (LinkedIn makes two calls) and a store under load.
        return self.settings.platform_fetch_timeout_s * 3 + 30

    async def run_once(self) -> int:
        """Claim the due fetches and process them concurrently; returns how many were claimed."""
        now = _now()
        async with self.runtime.db.transaction() as session:
            claims = await platform_cases.claim_platform_fetches(
                session,
                now,
                limit=self.settings.platform_fetch_batch_size,
                lease_until=now + timedelta(seconds=self._lease_s()),
            )
        if claims:
            await asyncio.gather(*(self._process(claim) for claim in claims))
        return len(claims)

    async def _process(self, claim: platform_cases.ClaimedFetch) -> None:
        source = claim.source
        try:
            raw, is_test = await self._fetch(claim)
            normalized = normalize_lead(
                raw,
                default_region=source.default_region,
                field_mapping=source.field_mapping,
                now=_now(),
                strict=False,
                require_contact=False,
            )
        except PlatformAPIError as exc:
            error = str(exc)
        except LeadValidationError as exc:
            # Field names only: a reason is safe, but the last_error column should never hold lead data.
            error = "invalid lead: " + ", ".join(sorted({e.field for e in exc.errors}))
        except Exception as exc:
            log.exception("platform_fetch_unexpected_error", source_id=source.id, fetch_id=claim.id)
            error = f"unexpected error ({type(exc).__name__})"
        else:
            try:
                async with self.runtime.db.transaction() as session:
                    accepted = await platform_cases.store_fetched_lead(
                        session, self.settings, claim.id, normalized=normalized, is_test=is_test, now=_now()
                    )
            except (SQLAlchemyError, OSError) as exc:
                error = f"store failed ({type(exc).__name__})"
            else:
                log.info(
                    "platform_lead_fetched",
                    source_id=source.id,
                    kind=source.kind,
                    fetch_id=claim.id,
                    lead_id=accepted.lead_id if accepted else None,
                    status=accepted.status if accepted else "gone",
                    attempts=claim.attempts + 1,
                )
                return
        await self._record_failure(claim, error)

    async def _record_failure(self, claim: platform_cases.ClaimedFetch, error: str) -> None:
        delay = retry_delay(
            claim.attempts + 1,
            base_s=self.settings.platform_fetch_backoff_s,
            cap_s=self.settings.platform_fetch_max_backoff_s,
            rng=self._rng,
        )
        try:
            async with self.runtime.db.transaction() as session:
                attempts = await platform_cases.record_fetch_failure(
                    session, claim.id, error, _now() + timedelta(seconds=delay)
                )
        except (SQLAlchemyError, OSError):
            log.exception("platform_fetch_failure_not_recorded", fetch_id=claim.id)
            return  # the lease runs out and the row falls due again
        if attempts is None:
            return
        report = log.error if attempts >= self.settings.platform_fetch_attempts else log.warning
        report(
            "platform_fetch_failed",
            source_id=claim.source.id,
            kind=claim.source.kind,
            fetch_id=claim.id,
            attempts=attempts,
            error=error,
            retry_in_s=round(delay, 2),
        )

    async def _fetch(self, claim: platform_cases.ClaimedFetch) -> tuple[dict[str, Any], bool]:
        """The lead's raw fields and whether the platform marks it as a test lead."""
        if self._http is None:
            raise PlatformAPIError(claim.source.kind, "the fetcher is not started")
        source = claim.source
        needs = platform(source.kind).fetch
        if needs is None:
            raise PlatformAPIError(source.kind, "this kind of source has no lead to fetch")
        return await fetch_platform_lead(
            needs,
            self._http,
            self.settings,
            external_id=claim.external_id,
            notification=claim.notification,
            config=source.config or {},
            base_url=config_text(source, needs.base_url_key),
            secret=lambda key: source_secret(source, key, self._secrets),
            forms=self._forms,
        )
