"""The optional HTTP enrichment provider: timeouts, retries, a circuit breaker and an expiring cache."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)


class CircuitBreaker:
    """Closed until `threshold` failures in a row, then open for `open_s`; one trial call when it half-opens."""

    def __init__(self, threshold: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_started_at: float | None = None

    @property
    def state(self) -> str:
        """closed, open or half_open."""
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.open_s else "open"

    def allow(self) -> bool:
        """Whether a call may go out now; in half_open only one trial is let through at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        now = self._clock()
        # A trial that never reported back (its caller was cancelled) must not block the provider forever.
        if self._trial_started_at is not None and now - self._trial_started_at < self.open_s:
            return False
        self._trial_started_at = now
        return True

    def success(self) -> None:
        """The provider answered: close."""
        self._failures = 0
        self._opened_at = None
        self._trial_started_at = None

    def failure(self) -> None:
        """The provider did not answer: count it, and open (again) at the threshold or after a failed trial."""
        self._failures += 1
        if self._failures >= self.threshold or self.state == "half_open":
            self._opened_at = self._clock()
            self._trial_started_at = None


class TTLCache:
    """A bounded LRU whose entries expire; a provider answer is reused for a day rather than asked per lead."""

    def __init__(self, ttl_s: float, max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Any]:
        item = self._items.get(key)
        if item is None:
            return False, None
        expires, value = item
        if expires < self._clock():
            del self._items[key]
            return False, None
        self._items.move_to_end(key)
        return True, value

    def put(self, key: str, value: Any) -> None:
        self._items[key] = (self._clock() + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


class EnrichmentClient:
    """GET {base_url}?domain=<company domain>; a JSON object of company facts, 404 when unknown."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        token: str | None,
        timeout_s: float,
        attempts: int,
        breaker: CircuitBreaker,
        cache: TTLCache,
        retry_backoff_s: float = 0.05,
    ) -> None:
        self._http = http
        self._base_url = base_url
        self._token = token
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._retry_backoff_s = retry_backoff_s
        self.breaker = breaker
        self._cache = cache

    async def lookup(self, domain: str) -> tuple[dict[str, Any] | None, str]:
        """(facts or None, status): status is ok, not_found, unavailable, timeout or circuit_open; never raises."""
        hit, cached = self._cache.get(domain)
        if hit:
            return cached, "ok" if cached is not None else "not_found"
        if not self.breaker.allow():
            return None, "circuit_open"
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        status = "unavailable"
        for attempt in range(self._attempts):
            try:
                # httpx's timeout bounds each phase; this bounds the whole call, so a provider that drips
                # its answer byte by byte cannot hold a lead longer than the configured timeout either.
                async with asyncio.timeout(self._timeout_s):
                    response = await self._http.get(self._base_url, params={"domain": domain}, headers=headers)
                if response.status_code == 404:
                    self.breaker.success()
                    self._cache.put(domain, None)
                    return None, "not_found"
                if response.status_code == 200:
                    facts = response.json()
                    if isinstance(facts, dict):
                        self.breaker.success()
                        self._cache.put(domain, facts)
                        return facts, "ok"
                status = "unavailable"
            except (TimeoutError, httpx.TimeoutException):
                status = "timeout"
            except (httpx.HTTPError, ValueError):
                status = "unavailable"
            if attempt + 1 < self._attempts:
                await asyncio.sleep(self._retry_backoff_s * 2**attempt)
        self.breaker.failure()
        # The domain stays out of the log: for a one-person company it names the person.
        log.warning("enrichment_provider_failed", status=status, breaker=self.breaker.state)
        return None, status
