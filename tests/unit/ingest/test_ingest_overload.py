"""Ingest under abuse and overload, with fakes: the writer's bounded queue, the failed-auth limit, client addresses."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from common.web import client_address
from ingest import handlers
from ingest.api import AuthFailureLimiter
from ingest.domain import normalize_lead
from ingest.settings import IngestSettings
from ingest.writer import IngestWriter, WriterBusy

pytestmark = [pytest.mark.unit]


class StuckStore:
    """A database whose transactions never start, as when the disk or the server stops answering."""

    def __init__(self) -> None:
        self.entered = 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        self.entered += 1
        await asyncio.Event().wait()
        yield None  # pragma: no cover - never reached


def _settings(**overrides: Any) -> IngestSettings:
    return IngestSettings(env="test", admin_token=SecretStr("t" * 40), log_format="console", **overrides)


def _prepared(i: int) -> handlers.PreparedLead:
    now = datetime.now(UTC)
    lead = normalize_lead({"email": f"lead{i}@example.org"}, default_region=None, field_mapping=None, now=now)
    return handlers.PreparedLead(lead, None, now, None)


async def test_a_full_writer_queue_refuses_within_the_enqueue_wait_and_queues_no_more() -> None:
    store = StuckStore()
    settings = _settings(writer_max_batch=1, writer_max_pending=3, writer_enqueue_timeout_s=0.05)
    writer = IngestWriter(store, settings)  # type: ignore[arg-type]
    await writer.start()
    try:
        submits = [asyncio.create_task(writer.submit(_prepared(i))) for i in range(20)]
        # The guard only turns a hang into a failure; on the old code every submit waits here forever.
        done, pending = await asyncio.wait(submits, timeout=10)
        refused = [t for t in done if isinstance(t.exception(), WriterBusy)]
        # One lead is in the stuck transaction, three wait in the queue; the rest were refused, none queued.
        assert store.entered == 1
        assert len(pending) == 4 and len(refused) == 16
        assert writer._queue.qsize() == 3
        # A later request is refused the same way: the queue does not grow however long the overload lasts.
        with pytest.raises(WriterBusy):
            await asyncio.wait_for(writer.submit(_prepared(99)), 10)
    finally:
        await writer.stop(grace_s=0)
    # Stopping answers what was still queued (refused, never dropped silently).
    outcomes = await asyncio.gather(*submits, return_exceptions=True)
    assert all(isinstance(outcome, Exception) for outcome in outcomes)


async def test_with_room_in_the_queue_a_zero_enqueue_wait_still_queues() -> None:
    store = StuckStore()
    writer = IngestWriter(store, _settings(writer_max_pending=2, writer_enqueue_timeout_s=0))  # type: ignore[arg-type]
    await writer.start()
    try:
        first = asyncio.create_task(writer.submit(_prepared(1)))
        await asyncio.sleep(0)
        second = asyncio.create_task(writer.submit(_prepared(2)))
        await asyncio.sleep(0)
        assert not first.done() and not second.done()
    finally:
        await writer.stop(grace_s=0)
        await asyncio.gather(first, second, return_exceptions=True)


def test_failed_authentications_block_an_address_for_the_rest_of_its_window() -> None:
    limiter = AuthFailureLimiter(limit=3, window_s=60, max_addresses=100)
    for at in (0.0, 1.0, 2.0):
        assert limiter.retry_after("198.51.100.7", now=at) == 0
        limiter.failed("198.51.100.7", now=at)
    assert limiter.retry_after("198.51.100.7", now=3.0) == pytest.approx(57.0)
    assert limiter.retry_after("198.51.100.8", now=3.0) == 0  # another address is not affected
    assert limiter.retry_after("198.51.100.7", now=60.0) == 0  # the window ended
    limiter.failed("198.51.100.7", now=61.0)
    assert limiter.retry_after("198.51.100.7", now=61.0) == 0  # a new window counts afresh


def test_ipv6_failures_count_per_64_block() -> None:
    limiter = AuthFailureLimiter(limit=2, window_s=60, max_addresses=100)
    limiter.failed("2001:db8:1:2::1", now=0)
    limiter.failed("2001:db8:1:2:ffff::9", now=0)
    assert limiter.retry_after("2001:db8:1:2::77", now=1) > 0
    assert limiter.retry_after("2001:db8:1:3::1", now=1) == 0


def test_the_failure_limiter_remembers_a_bounded_number_of_addresses() -> None:
    limiter = AuthFailureLimiter(limit=1, window_s=60, max_addresses=100)
    for i in range(1000):
        limiter.failed(str(ipaddress.ip_address(0x0A000000 + i)), now=0)
    assert len(limiter._windows) == 100


def _request(peer: str, forwarded: list[str] | None = None) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded or []]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "client": (peer, 40000)})


PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.5", ["198.51.100.1"], (), "203.0.113.5"),  # no trusted proxies: the header is ignored
        ("203.0.113.5", ["198.51.100.1"], PROXIES, "203.0.113.5"),  # a forged header from an untrusted peer
        ("10.0.0.2", ["198.51.100.1"], PROXIES, "198.51.100.1"),
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1"], PROXIES, "198.51.100.1"),  # the client's own hops prove nothing
        ("10.0.0.2", ["198.51.100.1, 10.0.0.9"], PROXIES, "198.51.100.1"),  # a chain of our proxies
        ("10.0.0.2", ["198.51.100.1", "10.0.0.9"], PROXIES, "198.51.100.1"),  # the header repeated
        ("10.0.0.2", ["not-an-address, 10.0.0.9"], PROXIES, "10.0.0.9"),
        ("10.0.0.2", [], PROXIES, "10.0.0.2"),
        ("2001:db8::1", ["2001:db9::5"], PROXIES, "2001:db9::5"),
    ],
)
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    peer: str, forwarded: list[str], trusted: tuple[Any, ...], expected: str
) -> None:
    assert client_address(_request(peer, forwarded), trusted) == expected
