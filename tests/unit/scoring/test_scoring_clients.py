"""The enrichment provider client against an httpx.MockTransport: statuses, retries, the breaker and the cache."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from structlog.testing import capture_logs

from scoring.clients import CircuitBreaker, EnrichmentClient, TTLCache

pytestmark = pytest.mark.unit

FACTS = {"company": {"name": "Acme", "employee_band": "201-500", "industry": "software", "country": "DE"}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Provider:
    """A scripted upstream that records every request it gets."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.answer(request)


def _client(
    provider: Provider,
    clock: FakeClock,
    *,
    attempts: int = 2,
    threshold: int = 3,
    open_s: float = 30.0,
    ttl_s: float = 3600.0,
    timeout_s: float = 0.2,
    token: str | None = None,
) -> EnrichmentClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    return EnrichmentClient(
        http,
        "http://provider.test/v1/company",
        token=token,
        timeout_s=timeout_s,
        attempts=attempts,
        breaker=CircuitBreaker(threshold, open_s, clock=clock),
        cache=TTLCache(ttl_s, clock=clock),
        retry_backoff_s=0.0,
    )


async def ok(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=FACTS)


async def not_found(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"error": "unknown domain"})


async def server_error(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, text="down for maintenance")


async def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no answer", request=request)


async def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def hangs(_request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(5)
    return httpx.Response(200, json=FACTS)


async def test_an_answer_is_returned_with_ok_and_the_domain_and_token_are_sent() -> None:
    provider = Provider(ok)
    client = _client(provider, FakeClock(), token="secret-token")
    assert await client.lookup("acme.com") == (FACTS, "ok")
    [request] = provider.requests
    assert request.url.params["domain"] == "acme.com"
    assert request.headers["authorization"] == "Bearer secret-token"


async def test_answers_are_cached_until_they_expire() -> None:
    provider, clock = Provider(ok), FakeClock()
    client = _client(provider, clock, ttl_s=60)
    await client.lookup("acme.com")
    clock.advance(59)
    assert await client.lookup("acme.com") == (FACTS, "ok")
    assert len(provider.requests) == 1
    clock.advance(2)
    assert await client.lookup("acme.com") == (FACTS, "ok")
    assert len(provider.requests) == 2


async def test_unknown_domain_is_not_found_cached_and_not_a_failure() -> None:
    provider = Provider(not_found)
    client = _client(provider, FakeClock(), threshold=1)
    assert await client.lookup("nobody.example") == (None, "not_found")
    assert await client.lookup("nobody.example") == (None, "not_found")
    assert len(provider.requests) == 1
    assert client.breaker.state == "closed"


@pytest.mark.parametrize(
    ("answer", "status"),
    [(server_error, "unavailable"), (refused, "unavailable"), (read_timeout, "timeout"), (hangs, "timeout")],
)
async def test_failures_are_retried_then_reported_with_their_status(answer: Handler, status: str) -> None:
    provider = Provider(answer)
    client = _client(provider, FakeClock(), attempts=3, timeout_s=0.05)
    started = asyncio.get_running_loop().time()
    assert await client.lookup("acme.com") == (None, status)
    assert len(provider.requests) == 3
    # A provider that never answers holds the lead for the timeouts only, not for its own 5 seconds.
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_an_answer_that_is_not_a_json_object_counts_as_unavailable() -> None:
    async def garbage(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>maintenance</html>")

    client = _client(Provider(garbage), FakeClock(), attempts=1)
    assert await client.lookup("acme.com") == (None, "unavailable")


async def test_failures_are_not_cached() -> None:
    answers = iter([server_error, ok])

    async def flaky(request: httpx.Request) -> httpx.Response:
        return await next(answers)(request)

    client = _client(Provider(flaky), FakeClock(), attempts=1)
    assert await client.lookup("acme.com") == (None, "unavailable")
    assert await client.lookup("acme.com") == (FACTS, "ok")


async def test_the_breaker_opens_after_n_failures_and_then_skips_the_provider() -> None:
    provider, clock = Provider(server_error), FakeClock()
    client = _client(provider, clock, attempts=1, threshold=3, open_s=30)
    for i in range(3):
        assert await client.lookup(f"company{i}.com") == (None, "unavailable")
    assert client.breaker.state == "open"
    asked = len(provider.requests)
    clock.advance(29)
    assert await client.lookup("company9.com") == (None, "circuit_open")
    assert len(provider.requests) == asked


async def test_the_breaker_half_opens_with_one_trial_that_closes_it_on_success() -> None:
    gate = asyncio.Event()
    answers: list[Handler] = [server_error, server_error]

    async def recovering(request: httpx.Request) -> httpx.Response:
        if answers:
            return await answers.pop(0)(request)
        await gate.wait()
        return httpx.Response(200, json=FACTS)

    provider, clock = Provider(recovering), FakeClock()
    client = _client(provider, clock, attempts=1, threshold=2, open_s=10)
    await client.lookup("a.com")
    await client.lookup("b.com")
    clock.advance(10)
    assert client.breaker.state == "half_open"

    trial = asyncio.create_task(client.lookup("c.com"))
    await asyncio.sleep(0.01)
    # While the trial is out, everyone else still skips the provider.
    assert await client.lookup("d.com") == (None, "circuit_open")
    gate.set()
    assert await trial == (FACTS, "ok")
    assert client.breaker.state == "closed"
    assert await client.lookup("d.com") == (FACTS, "ok")
    assert [r.url.params["domain"] for r in provider.requests] == ["a.com", "b.com", "c.com", "d.com"]


async def test_a_failed_trial_opens_the_breaker_for_another_window() -> None:
    provider, clock = Provider(refused), FakeClock()
    client = _client(provider, clock, attempts=1, threshold=2, open_s=10)
    await client.lookup("a.com")
    await client.lookup("b.com")
    clock.advance(10)
    assert await client.lookup("c.com") == (None, "unavailable")
    assert client.breaker.state == "open"
    clock.advance(9)
    assert await client.lookup("d.com") == (None, "circuit_open")
    assert len(provider.requests) == 3


def test_a_trial_that_never_reports_back_does_not_block_the_provider_forever() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.failure()
    clock.advance(10)
    assert breaker.allow()  # the trial; its caller is then cancelled and never reports
    assert not breaker.allow()
    clock.advance(10)
    assert breaker.allow()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(3, 10, clock=FakeClock())
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = TTLCache(60, max_entries=2, clock=FakeClock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)
    cache.put("c", 3)
    assert cache.get("b") == (False, None)
    assert cache.get("a") == (True, 1) and cache.get("c") == (True, 3)


async def test_the_failure_log_names_neither_the_domain_nor_anything_personal() -> None:
    client = _client(Provider(server_error), FakeClock(), attempts=1)
    with capture_logs() as logs:
        await client.lookup("jane-doe-consulting.com")
    assert logs, "a provider failure is logged"
    assert "jane-doe-consulting" not in repr(logs)
    assert logs[0]["status"] == "unavailable"
